// funasr_cpp._testing: hooks into single steps of the pipeline for the parity tests and the
// benchmarks (csrc/python/testing_hooks.cpp), a module of their own that the product never imports.
#include <pybind11/pybind11.h>

#include "python/native.h"

namespace py = pybind11;

void register_testing_bindings(py::module_ & m);  // csrc/python/testing_hooks.cpp
void register_testing_ops(py::module_ & m);       // csrc/python/testing_ops.cpp
void register_testing_matmul(py::module_ & m);    // csrc/python/testing_matmul.cpp

PYBIND11_MODULE(_testing, m) {
    m.doc() = "funasr-cpp test hooks: single steps of the pipeline, for tests and benchmarks";
    funasr_py::register_error_translator();
    register_testing_bindings(m);
    register_testing_ops(m);
    register_testing_matmul(m);
}
