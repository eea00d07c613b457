// The helpers of the Python bindings (_core and _testing; defined in native.cpp): the engine's
// errors as Python exceptions, argument conversion, and the lifetime methods of a model class.
// The only layer that knows Python: the engine (csrc/engine/) throws funasr::error, and the
// binding releases the GIL around every call that may block.
#pragma once

#include <pybind11/pybind11.h>

#include "engine/error.h"
#include "engine/handles.h"
#include "engine/log_capture.h"
#include "llama.h"

#include <cstdint>
#include <string>
#include <vector>

namespace funasr_py {

namespace py = pybind11;

// The engine's helpers, under the names the binding files use.
using funasr::check_gguf_file;
using funasr::log_capture;
using funasr::parse_flash_attn;
using funasr::thread_count;

// ----------------------------------------------------------------------------- errors
// funasr::error -> the Python exception of its code (ValueError, FileNotFoundError, RuntimeError, ...)
void register_error_translator();
PyObject * python_type(funasr::errc code);

// ----------------------------------------------------------------------------- arguments
std::string fspath(const py::handle & obj);          // str or os.PathLike -> str
// a 1-D sequence or array of integer token ids in [0, n_vocab) (with the GIL held)
std::vector<llama_token> token_ids(const py::handle & obj, int32_t n_vocab);
// 1-D floating-point samples as float32 (with the GIL held); `what` names the argument
std::vector<float> float_samples(const py::handle & obj, const char * what);
py::str utf8_text(const std::string & bytes);        // invalid UTF-8 (a cut character) -> U+FFFD

// f() on the handles' lock, with the GIL released first: a thread waiting for the lock never
// holds the GIL the lock's owner needs back.
template <typename F>
auto locked(funasr::llama_handles & h, F && f) -> decltype(f()) {
    py::gil_scoped_release nogil;
    return h.locked(std::forward<F>(f));
}

// close(), the context manager and `closed` of a model class that owns llama_handles (handles())
template <typename T>
void bind_lifetime(py::class_<T> & cls) {
    auto close = [](T & self) {
        py::gil_scoped_release nogil;  // close() waits for a decode step to end
        self.handles().close();
    };
    cls.def("close", close, "Free the native model and contexts (idempotent); later calls raise RuntimeError.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [close](T & self, const py::args &) { close(self); })
        .def_property_readonly("closed", [](T & self) { return self.handles().closed(); });
}

}  // namespace funasr_py
