// The engine's errors: one exception type with a code saying what kind of failure it is. The
// Python binding (csrc/python/) maps each code to a Python exception; nothing here knows Python.
#pragma once

#include <stdexcept>
#include <string>

namespace funasr {

enum class errc {
    invalid_argument,   // a value or file that cannot be used (Python: ValueError)
    wrong_type,         // an argument of the wrong kind (TypeError)
    not_found,          // a missing file (FileNotFoundError)
    permission_denied,  // PermissionError
    is_a_directory,     // IsADirectoryError
    not_a_directory,    // NotADirectoryError
    io,                 // another operating-system failure (OSError)
    out_of_memory,      // MemoryError
    unsupported,        // the model cannot do what was asked (RuntimeError)
    closed,             // the model was closed (RuntimeError)
    cancelled,          // the job was cancelled (RuntimeError)
    runtime,            // llama.cpp / ggml / mtmd failed (RuntimeError)
};

// Inside a log_capture scope (engine/log_capture.h) the message ends with what llama.cpp, ggml,
// mtmd or clip logged as errors since the scope began: the reason behind a failed call.
class error : public std::runtime_error {
public:
    error(errc code, const std::string & message);
    errc code() const noexcept { return code_; }

private:
    errc code_;
};

}  // namespace funasr
