// Capture of llama.cpp's, ggml's, mtmd's and clip's log: the error lines logged on a thread while
// a log_capture lives are appended to the message of a funasr::error thrown in that scope.
#pragma once

#include <string>

namespace funasr {

// Collects the error lines logged on this thread while it lives (nestable).
class log_capture {
public:
    log_capture();
    ~log_capture();
    log_capture(const log_capture &) = delete;
    log_capture & operator=(const log_capture &) = delete;
    static std::string text();  // what was captured so far, "" outside a scope
};

void install_log_callback();     // routes llama.cpp's, mtmd's and clip's log through the capture
void set_verbose(bool verbose);  // also print the log to stderr

}  // namespace funasr
