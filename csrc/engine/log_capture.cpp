// Log capture and the engine's error type (see log_capture.h, error.h).
#include "engine/log_capture.h"

#include "engine/error.h"
#include "ggml.h"
#include "llama.h"
#include "mtmd-helper.h"

#include <atomic>
#include <cstdio>

namespace funasr {

namespace {
std::atomic<bool> g_verbose{false};
thread_local int t_capturing = 0;      // open log_capture scopes on this thread
thread_local std::string t_errors;     // error lines logged since the outermost scope began
thread_local bool t_in_error = false;  // a CONT piece continues an error message

void log_callback(ggml_log_level level, const char * text, void *) {
    if (level != GGML_LOG_LEVEL_CONT) t_in_error = level == GGML_LOG_LEVEL_ERROR;
    if (t_capturing > 0 && t_in_error && t_errors.size() < 4096) t_errors += text;
    if (g_verbose.load()) fputs(text, stderr);
}

std::string with_log(const std::string & message) {
    const std::string logged = log_capture::text();
    return logged.empty() ? message : message + ": " + logged;
}
}  // namespace

log_capture::log_capture() {
    if (t_capturing++ == 0) {
        t_errors.clear();
        t_in_error = false;
    }
}

log_capture::~log_capture() { --t_capturing; }

std::string log_capture::text() {
    if (t_capturing == 0) return "";
    std::string s = t_errors;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

void install_log_callback() {
    llama_log_set(log_callback, nullptr);
    mtmd_helper_log_set(log_callback, nullptr);  // mtmd and clip log on their own
}

void set_verbose(bool verbose) { g_verbose = verbose; }

error::error(errc code, const std::string & message) : std::runtime_error(with_log(message)), code_(code) {}

}  // namespace funasr
