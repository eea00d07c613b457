// Helpers shared by the _core binding files (defined in csrc/py_core.cpp).
#pragma once

#include <pybind11/pybind11.h>

#include "ggml.h"
#include "llama.h"

#include <cstdint>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace funasr_py {
// A Python exception raised where the GIL is released; _core's exception translator turns it
// into `type(msg)` once the GIL is back.
struct native_error : std::exception {
    PyObject * type;
    std::string msg;
    native_error(PyObject * t, std::string m) : type(t), msg(std::move(m)) {}
    const char * what() const noexcept override { return msg.c_str(); }
};

// FileNotFoundError / IsADirectoryError / PermissionError / ValueError naming the path
void check_gguf_file(const std::string & path);
std::string fspath(const pybind11::handle & obj);   // str or os.PathLike -> str
int32_t thread_count(int n_threads);                // <= 0: all cores
void errors_begin();                                // start capturing llama.cpp errors (this thread)
std::string errors_text();                          // what was captured since
// option strings of the Python API; ValueError on anything else
llama_flash_attn_type parse_flash_attn(const std::string & value);  // auto | on | off
ggml_type parse_kv_type(const std::string & value);                 // f16 | f32 | bf16 | q8_0
// llama_tokenize into a vector of the right size; native_error(ValueError) when it fails
std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool add_special, bool parse_special);
}  // namespace funasr_py
