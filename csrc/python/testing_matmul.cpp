// funasr_cpp._testing.cpu_mul_mat / cpu_extra_buffer_types: one ggml matrix product on the CPU
// backend with the weight in a buffer type of the caller's choice, so that the kernels behind the
// CPU's extra buffer types (AMX, repacked layouts), which the LLM's and the projector's weights use
// (csrc/model/funasr_weights.cpp), are tested on their own against the plain kernels and numpy
// (tests/test_cpu_kernels.py).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

ggml_backend_dev_t cpu_device() {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) throw std::runtime_error("no CPU backend");
    return dev;
}

std::vector<ggml_backend_buffer_type_t> extra_bufts() {
    std::vector<ggml_backend_buffer_type_t> out;
    ggml_backend_dev_t dev = cpu_device();
    auto get = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts");
    for (auto * p = get ? get(dev) : nullptr; p && *p; ++p) out.push_back(*p);
    return out;
}

std::vector<std::string> cpu_extra_buffer_types() {
    std::vector<std::string> names;
    for (auto * b : extra_bufts()) names.emplace_back(ggml_backend_buft_name(b));
    return names;
}

// y = x w^T with w [n, k] stored as `type` in a buffer of type `buffer` ("plain" or an extra
// buffer type's name), x [m, k] f32 -> y [m, n] f32
py::array_t<float> cpu_mul_mat(py::array_t<float, py::array::c_style | py::array::forcecast> w,
                               py::array_t<float, py::array::c_style | py::array::forcecast> x,
                               const std::string & type_name, const std::string & buffer, int n_threads) {
    if (w.ndim() != 2 || x.ndim() != 2 || w.shape(1) != x.shape(1)) {
        throw std::invalid_argument("w must be [n, k] and x [m, k]");
    }
    const int64_t n = w.shape(0), k = w.shape(1), m = x.shape(0);
    ggml_type type = GGML_TYPE_COUNT;
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        const char * name = ggml_type_name((ggml_type) t);
        if (name && type_name == name) type = (ggml_type) t;
    }
    if (type == GGML_TYPE_COUNT) throw std::invalid_argument("unknown ggml type " + type_name);
    if (k % ggml_blck_size(type)) throw std::invalid_argument("k is not a multiple of the type's block");

    // registry calls only: in portable builds the CPU backend is a module loaded at run time
    ggml_backend_dev_t dev = cpu_device();
    ggml_backend_buffer_type_t wbuft = ggml_backend_dev_buffer_type(dev);
    if (buffer != "plain") {
        wbuft = nullptr;
        for (auto * b : extra_bufts()) {
            if (buffer == ggml_backend_buft_name(b)) wbuft = b;
        }
        if (!wbuft) throw std::invalid_argument("this CPU backend has no buffer type " + buffer);
    }
    ggml_backend_t be = ggml_backend_dev_init(dev, nullptr);
    auto set_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(dev), "ggml_backend_set_n_threads");
    if (set_threads) set_threads(be, n_threads);
    ggml_init_params ip = {8 * ggml_tensor_overhead() + ggml_graph_overhead(), nullptr, true};
    ggml_context * cw = ggml_init(ip);
    ggml_context * cx = ggml_init(ip);
    ggml_tensor * W = ggml_new_tensor_2d(cw, type, k, n);
    ggml_tensor * X = ggml_new_tensor_2d(cx, GGML_TYPE_F32, k, m);
    ggml_tensor * Y = ggml_mul_mat(cx, W, X);
    ggml_cgraph * gf = ggml_new_graph(cx);
    ggml_build_forward_expand(gf, Y);
    ggml_backend_buffer_t bw = ggml_backend_alloc_ctx_tensors_from_buft(cw, wbuft);
    ggml_backend_buffer_t bx = ggml_backend_alloc_ctx_tensors(cx, be);
    auto cleanup = [&] {
        ggml_backend_buffer_free(bx);
        ggml_backend_buffer_free(bw);
        ggml_free(cx);
        ggml_free(cw);
        ggml_backend_free(be);
    };
    std::vector<uint8_t> q(ggml_row_size(type, k) * n);
    ggml_quantize_chunk(type, w.data(), q.data(), 0, n, k, nullptr);
    ggml_backend_tensor_set(W, q.data(), 0, q.size());
    ggml_backend_tensor_set(X, x.data(), 0, (size_t) m * k * sizeof(float));
    if (!ggml_backend_supports_op(be, Y)) {
        cleanup();
        throw std::invalid_argument("the CPU backend does not run this product with the weight in " + buffer);
    }
    const ggml_status st = ggml_backend_graph_compute(be, gf);
    py::array_t<float> y({(py::ssize_t) m, (py::ssize_t) n});
    ggml_backend_tensor_get(Y, y.mutable_data(), 0, (size_t) m * n * sizeof(float));
    cleanup();
    if (st != GGML_STATUS_SUCCESS) throw std::runtime_error("graph compute failed");
    return y;
}

}  // namespace

void register_testing_matmul(py::module_ & m) {
    m.def("cpu_extra_buffer_types", &cpu_extra_buffer_types,
          "Names of the CPU backend's extra buffer types on this machine (e.g. 'AMX', 'CPU_REPACK').");
    m.def("cpu_mul_mat", &cpu_mul_mat, py::arg("w"), py::arg("x"), py::kw_only(), py::arg("type") = "q8_0",
          py::arg("buffer") = "plain", py::arg("n_threads") = 2,
          "x @ w.T on the CPU backend: w [n, k] quantized to `type` (a ggml type name) and stored in a buffer of\n"
          "type `buffer` ('plain' or one of cpu_extra_buffer_types(), whose kernel then runs the product).");
}
