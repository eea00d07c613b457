// funasr_cpp._core: the Python binding over libllama + libmtmd.
// Native work runs with the GIL released; llama.cpp's log is captured so that
// failures surface as Python exceptions carrying llama.cpp's own reason.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"
#include "mtmd.h"

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <sys/stat.h>

namespace py = pybind11;

extern "C" int funasr_mtmd_patch_level(void);  // csrc/mtmd_patch_check.cpp, inside libmtmd

#ifndef FUNASR_CPP_VERSION
#define FUNASR_CPP_VERSION "0.0.0"
#endif

namespace {

// ----------------------------------------------------------------------------- logging
std::atomic<bool> g_verbose{false};
thread_local std::string t_errors;     // error lines logged by the current native call
thread_local bool t_in_error = false;  // a CONT piece belongs to an error message

void log_callback(ggml_log_level level, const char * text, void *) {
    if (level != GGML_LOG_LEVEL_CONT) {
        t_in_error = level == GGML_LOG_LEVEL_ERROR;
    }
    if (t_in_error && t_errors.size() < 4096) {
        t_errors += text;
    }
    if (g_verbose.load()) {
        fputs(text, stderr);
    }
}

// Collects llama.cpp error messages for the duration of one native call.
struct error_capture {
    error_capture() { t_errors.clear(); t_in_error = false; }
    std::string text() const {
        std::string s = t_errors;
        while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
        return s;
    }
};

[[noreturn]] void raise(PyObject * type, const std::string & msg) {
    PyErr_SetString(type, msg.c_str());
    throw py::error_already_set();
}

// ----------------------------------------------------------------------------- helpers
void check_gguf_file(const std::string & path) {
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) {
        raise(PyExc_FileNotFoundError, "GGUF file not found: " + path);
    }
    if (S_ISDIR(st.st_mode)) {
        raise(PyExc_IsADirectoryError, "expected a GGUF file, got a directory: " + path);
    }
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        raise(PyExc_PermissionError, "cannot open GGUF file: " + path);
    }
    char magic[4] = {0, 0, 0, 0};
    f.read(magic, 4);
    if (f.gcount() != 4 || std::string(magic, 4) != "GGUF") {
        raise(PyExc_ValueError, "not a GGUF file (no GGUF magic): " + path);
    }
}

std::string meta_str(const llama_model * model, const char * key) {
    char buf[256];
    int32_t n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
    return n < 0 ? std::string() : std::string(buf);
}

const char * dev_type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU:   return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU:   return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU:  return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default:                             return "other";
    }
}

// ----------------------------------------------------------------------------- API
void init(const std::string & lib_dir) {
#ifdef FUNASR_GGML_BACKEND_DL
    ggml_backend_load_all_from_path(lib_dir.c_str());
#else
    (void) lib_dir;
#endif
    llama_log_set(log_callback, nullptr);
    llama_backend_init();
}

py::dict version_info() {
    py::dict d;
    d["funasr_cpp"] = FUNASR_CPP_VERSION;
    d["ggml_version"] = ggml_version();
    d["ggml_commit"] = ggml_commit();
    d["mtmd_patch_level"] = funasr_mtmd_patch_level();
    d["mtmd_media_marker"] = mtmd_default_marker();
    return d;
}

py::dict system_info() {
    py::list backends;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        ggml_backend_reg_t reg = ggml_backend_reg_get(i);
        py::dict b;
        b["name"] = ggml_backend_reg_name(reg);
        py::dict features;
        auto get_features = (ggml_backend_get_features_t)
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features");
        if (get_features) {
            for (ggml_backend_feature * f = get_features(reg); f && f->name; ++f) {
                features[py::str(f->name)] = py::str(f->value);
            }
        }
        b["features"] = features;
        py::list devices;
        for (size_t j = 0; j < ggml_backend_reg_dev_count(reg); ++j) {
            ggml_backend_dev_t dev = ggml_backend_reg_dev_get(reg, j);
            size_t free = 0, total = 0;
            ggml_backend_dev_memory(dev, &free, &total);
            py::dict d;
            d["name"] = ggml_backend_dev_name(dev);
            d["description"] = ggml_backend_dev_description(dev);
            d["type"] = dev_type_name(ggml_backend_dev_type(dev));
            d["memory_total"] = total;
            d["memory_free"] = free;
            devices.append(d);
        }
        b["devices"] = devices;
        backends.append(b);
    }
    py::dict out;
    out["backends"] = backends;
    out["summary"] = std::string(llama_print_system_info());
    return out;
}

// Loads a GGUF LLM without its weight data and reports its metadata.
py::dict model_info(const std::string & path) {
    check_gguf_file(path);
    llama_model * model = nullptr;
    std::string errors;
    {
        py::gil_scoped_release nogil;
        error_capture cap;
        llama_model_params p = llama_model_default_params();
        p.no_alloc = true;  // hparams, vocabulary and tensor shapes are checked; no weight data is read
        p.load_mode = LLAMA_LOAD_MODE_NONE;  // no_alloc cannot be combined with mmap
        p.n_gpu_layers = 0;
        model = llama_model_load_from_file(path.c_str(), p);
        errors = cap.text();
    }
    if (!model) {
        raise(PyExc_ValueError, "cannot load GGUF model " + path + (errors.empty() ? "" : ": " + errors));
    }
    py::dict d;
    char desc[256];
    llama_model_desc(model, desc, sizeof(desc));
    d["path"] = path;
    d["architecture"] = meta_str(model, "general.architecture");
    d["name"] = meta_str(model, "general.name");
    d["description"] = std::string(desc);
    d["n_embd"] = llama_model_n_embd(model);
    d["n_layer"] = llama_model_n_layer(model);
    d["n_head"] = llama_model_n_head(model);
    d["n_head_kv"] = llama_model_n_head_kv(model);
    d["n_ctx_train"] = llama_model_n_ctx_train(model);
    d["n_vocab"] = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_model_free(model);
    return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "funasr-cpp native core (llama.cpp + mtmd)";
    m.attr("LLAMA_CPP_BUILD") = LLAMA_CPP_BUILD_NUMBER;
    m.attr("LLAMA_CPP_COMMIT") = LLAMA_CPP_BUILD_COMMIT;
    m.def("init", &init, py::arg("lib_dir"),
          "Load dynamic ggml backends from lib_dir (when built with GGML_BACKEND_DL) and init llama.cpp.");
    m.def("set_verbose", [](bool v) { g_verbose = v; }, py::arg("verbose"),
          "Print llama.cpp/ggml log messages to stderr.");
    m.def("version_info", &version_info);
    m.def("system_info", &system_info);
    m.def("model_info", &model_info, py::arg("path"));
}
