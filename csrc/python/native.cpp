// The helpers of the Python bindings: see native.h.
#include "python/native.h"

#include <pybind11/numpy.h>

#include <exception>

namespace funasr_py {

// ----------------------------------------------------------------------------- errors
PyObject * python_type(funasr::errc code) {
    using funasr::errc;
    switch (code) {
        case errc::invalid_argument:  return PyExc_ValueError;
        case errc::wrong_type:        return PyExc_TypeError;
        case errc::not_found:         return PyExc_FileNotFoundError;
        case errc::permission_denied: return PyExc_PermissionError;
        case errc::is_a_directory:    return PyExc_IsADirectoryError;
        case errc::not_a_directory:   return PyExc_NotADirectoryError;
        case errc::io:                return PyExc_OSError;
        case errc::out_of_memory:     return PyExc_MemoryError;
        case errc::unsupported:
        case errc::closed:
        case errc::cancelled:
        case errc::runtime:           return PyExc_RuntimeError;
    }
    return PyExc_RuntimeError;
}

void register_error_translator() {
    py::register_local_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const funasr::error & e) {
            PyErr_SetString(python_type(e.code()), e.what());
        }
    });
}

// ----------------------------------------------------------------------------- arguments
std::string fspath(const py::handle & obj) {
    py::object p = py::reinterpret_steal<py::object>(PyOS_FSPath(obj.ptr()));
    if (!p) throw py::error_already_set();
    if (PyBytes_Check(p.ptr())) return p.cast<py::bytes>();  // bytes paths are taken as they are
    return p.cast<std::string>();
}

std::vector<llama_token> token_ids(const py::handle & obj, int32_t n_vocab) {
    using funasr::errc;
    py::array arr = py::array::ensure(obj);
    if (!arr) throw funasr::error(errc::wrong_type, "token ids must be a sequence or array of integers");
    if (arr.ndim() != 1) throw funasr::error(errc::invalid_argument, "token ids must be 1-D, got " + std::to_string(arr.ndim()) + " dimensions");
    if (arr.size() == 0) return {};
    const char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u') {
        throw funasr::error(errc::wrong_type, "token ids must be integers, got dtype " + py::str(arr.dtype()).cast<std::string>());
    }
    auto ids = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    if (!ids) throw py::error_already_set();
    std::vector<llama_token> out(ids.size());
    const int64_t * p = ids.data();
    for (size_t i = 0; i < out.size(); ++i) {
        if (p[i] < 0 || p[i] >= n_vocab) {
            throw funasr::error(errc::invalid_argument, "token id " + std::to_string(p[i]) + " at index " + std::to_string(i) +
                                " is out of range [0, " + std::to_string(n_vocab) + ")");
        }
        out[i] = (llama_token) p[i];
    }
    return out;
}

std::vector<float> float_samples(const py::handle & obj, const char * what) {
    using funasr::errc;
    const py::array a = py::array::ensure(obj);
    const std::string name(what);
    if (!a) throw funasr::error(errc::wrong_type, name + " must be a 1-D float array");
    if (a.ndim() != 1) {
        throw funasr::error(errc::invalid_argument, name + " must be a 1-D array (16 kHz mono), got " + std::to_string(a.ndim()) + " dimensions");
    }
    // integer PCM would need another scale than [-1, 1] floats: refused rather than guessed
    if (a.dtype().kind() != 'f') {
        throw funasr::error(errc::wrong_type, name + " must be floating point (16 kHz mono in [-1, 1]), got dtype " +
                            py::str(a.dtype()).cast<std::string>());
    }
    auto f = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!f) throw py::error_already_set();
    return std::vector<float>(f.data(), f.data() + f.size());
}

py::str utf8_text(const std::string & bytes) {
    PyObject * s = PyUnicode_DecodeUTF8(bytes.data(), (Py_ssize_t) bytes.size(), "replace");
    if (!s) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(s);
}

}  // namespace funasr_py
