// The helpers layer of the _core binding (defined in csrc/py_native.cpp): one error path, the
// capture of llama.cpp's log, argument checks, and the owner of llama.cpp's handles that
// LlamaModel (py_llm.cpp) and AsrModel (py_asr.cpp) share.
#pragma once

#include <pybind11/pybind11.h>

#include "ggml.h"
#include "llama.h"
#include "mtmd.h"

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace funasr_py {

namespace py = pybind11;

// ----------------------------------------------------------------------------- errors
// Every failure of the binding is a native_error: thrown with or without the GIL, turned into
// `type(msg)` by _core's exception translator. Inside a log_capture scope the message ends with
// what llama.cpp, ggml, mtmd or clip logged as errors since the scope began.
struct native_error : std::exception {
    PyObject * type;
    std::string msg;
    native_error(PyObject * type, const std::string & msg);
    const char * what() const noexcept override { return msg.c_str(); }
};

// Collects the error lines llama.cpp logs on this thread while it lives (nestable).
struct log_capture {
    log_capture();
    ~log_capture();
    log_capture(const log_capture &) = delete;
    log_capture & operator=(const log_capture &) = delete;
    static std::string text();  // what was captured so far, "" outside a scope
};

void install_log_callback();  // routes llama.cpp's, mtmd's and clip's log through the capture
void set_verbose(bool verbose);  // also print the log to stderr

// ----------------------------------------------------------------------------- arguments
std::string fspath(const py::handle & obj);          // str or os.PathLike -> str
void check_gguf_file(const std::string & path);      // FileNotFound / IsADirectory / Permission / ValueError
int32_t thread_count(int n_threads);                 // n, or 0 = all cores (ValueError below 0)
llama_flash_attn_type parse_flash_attn(const std::string & value);  // auto | on | off
ggml_type parse_kv_type(const std::string & value);                 // f16 | f32 | bf16 | q8_0
// a 1-D sequence or array of integer token ids in [0, n_vocab) (with the GIL held)
std::vector<llama_token> token_ids(const py::handle & obj, int32_t n_vocab);
// 1-D floating-point samples as float32 (with the GIL held); `what` names the argument
std::vector<float> float_samples(const py::handle & obj, const char * what);
py::str utf8_text(const std::string & bytes);        // invalid UTF-8 (a cut character) -> U+FFFD

// ----------------------------------------------------------------------------- tokens
std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool add_special,
                                  bool parse_special);
// The bytes of ids concatenated, like Hugging Face's decode: skip_special drops the tokens the
// GGUF file types CONTROL (HF's special tokens) and renders every other one, user-defined tokens
// included. llama.cpp's own attributes cannot say this: it re-types some non-special tokens as
// CONTROL when it loads a vocabulary (Qwen's <|fim_prefix|> and friends), which HF renders.
// file_types: tokenizer.ggml.token_type of the file (empty: llama.cpp's attributes are used).
std::string token_bytes(const llama_vocab * vocab, const std::vector<int32_t> & file_types,
                        const std::vector<llama_token> & ids, bool skip_special);

// ----------------------------------------------------------------------------- the owner
// How a context is made, as the Python constructors take it.
struct context_options {
    int n_threads = 0;        // 0: all cores
    int n_gpu_layers = -1;    // -1: all
    int n_ctx = 0;
    int n_batch = 512;
    std::string flash_attn = "auto";
    std::string kv_type = "f16";
};

// Owns llama_model + llama_context (+ an mtmd_context) and frees them in reverse order. Every call
// into them goes through locked(): the GIL is released first, then the mutex is taken, so a thread
// waiting for the mutex never holds the GIL the owner needs back.
class llama_handles {
public:
    // loads the model (GIL released); RuntimeError/ValueError naming the path and llama.cpp's reason
    llama_handles(std::string kind, std::string path, int n_gpu_layers);
    ~llama_handles() { free_all(); }  // the last reference is gone: no other thread can be inside
    llama_handles(const llama_handles &) = delete;
    llama_handles & operator=(const llama_handles &) = delete;

    // the context params for opts (threads, batch, flash attention, KV type); checks the values
    static llama_context_params context_params(const context_options & opts);
    void create_context(const llama_context_params & params);           // (re)creates the context
    void attach_mtmd(const std::string & mmproj_path, const mtmd_context_params & params);

    template <typename F>
    auto locked(F && f) -> decltype(f()) {
        py::gil_scoped_release nogil;
        if (closed_.load()) throw closed_error();
        std::lock_guard<std::mutex> lock(mu_);
        if (!ctx_) throw closed_error();
        return f();
    }
    // the same for a caller that has released the GIL already (never release it twice)
    template <typename F>
    auto locked_nogil(F && f) -> decltype(f()) {
        if (closed_.load()) throw closed_error();  // close() is waiting: do not take the mutex again
        std::lock_guard<std::mutex> lock(mu_);
        if (!ctx_) throw closed_error();
        return f();
    }
    void check_open() const { if (closed_.load()) throw closed_error(); }
    void close();
    bool closed() const { return closed_.load(); }

    llama_model * model() const { return model_; }
    llama_context * ctx() const { return ctx_; }
    mtmd_context * mtmd() const { return mtmd_; }
    const llama_vocab * vocab() const { return vocab_; }
    const std::vector<int32_t> & token_types() const { return token_types_; }  // as in the file
    int32_t n_vocab() const { return n_vocab_; }
    const std::string & path() const { return path_; }
    const std::string & kind() const { return kind_; }

private:
    native_error closed_error() const { return native_error(PyExc_RuntimeError, kind_ + " is closed: " + path_); }
    void free_all();

    std::string kind_, path_;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    mtmd_context * mtmd_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    std::vector<int32_t> token_types_;
    int32_t n_vocab_ = 0;
    std::mutex mu_;
    std::atomic<bool> closed_{false};
};

// close(), the context manager and `closed` of a model class that owns llama_handles (handles())
template <typename T>
void bind_lifetime(py::class_<T> & cls) {
    cls.def("close", [](T & self) { self.handles().close(); },
            "Free the native model and contexts (idempotent); later calls raise RuntimeError.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](T & self, const py::args &) { self.handles().close(); })
        .def_property_readonly("closed", [](T & self) { return self.handles().closed(); });
}

}  // namespace funasr_py
