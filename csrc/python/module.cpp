// funasr_cpp._core: the Python binding over the engine, libllama and libmtmd. This file holds the
// module, the system and model information and quantization; LlamaModel is in bind_llm.cpp,
// AsrModel in bind_asr.cpp, VadModel in bind_vad.cpp, the shared helpers in native.cpp (the test
// hooks are another module, funasr_cpp._testing: testing_module.cpp). Native work runs with the
// GIL released; llama.cpp's log is captured so that failures surface as Python exceptions
// carrying llama.cpp's own reason.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"
#include "mtmd.h"
#include "python/native.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>
#include <unistd.h>
#ifdef FUNASR_GGML_BACKEND_DL
#include <dlfcn.h>
#endif

namespace py = pybind11;
using funasr::errc;

extern "C" int funasr_mtmd_patch_level(void);  // csrc/model/funasr_clip.cpp, inside libmtmd

#ifndef FUNASR_CPP_VERSION
#define FUNASR_CPP_VERSION "0.0.0"
#endif

namespace {

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

std::string g_lib_dir;  // where init() loaded the ggml backend modules from

#ifdef FUNASR_GGML_BACKEND_DL
// The file a loaded backend came from: its registration object lives in the module's data.
std::string module_file(const void * addr) {
    Dl_info info;
    if (dladdr(addr, &info) == 0 || !info.dli_fname) return std::string();
    return std::filesystem::path(info.dli_fname).filename().string();
}
#endif

struct cpu_variant {
    std::string name, file;
    int score;    // -1: the module could not be opened or has no score function
    bool loaded;
};

// Every CPU variant module in the lib dir with the score ggml's loader gives it on this CPU (0 =
// the CPU lacks an instruction set the variant was compiled for); `loaded` marks the one in use.
// Empty for a build with the CPU backend linked in (GGML_BACKEND_DL off). Neither the CPU nor the
// loaded module changes after init(), so the modules are opened once, on the first call.
const std::vector<cpu_variant> & find_cpu_variants() {
    static const std::vector<cpu_variant> found = [] {
        std::vector<cpu_variant> out;
#ifdef FUNASR_GGML_BACKEND_DL
        std::string loaded;
        for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
            ggml_backend_reg_t reg = ggml_backend_reg_get(i);
            if (std::string(ggml_backend_reg_name(reg)) == "CPU") loaded = module_file(reg);
        }
        const std::string prefix = "libggml-cpu-", suffix = ".so";
        std::vector<std::filesystem::path> files;
        std::error_code ec;
        for (const auto & e : std::filesystem::directory_iterator(g_lib_dir, ec)) {
            const std::string f = e.path().filename().string();
            if (f.size() > prefix.size() + suffix.size() && f.compare(0, prefix.size(), prefix) == 0 &&
                f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0) {
                files.push_back(e.path());
            }
        }
        std::sort(files.begin(), files.end());
        for (const auto & path : files) {
            const std::string f = path.filename().string();
            int score = -1;
            if (void * h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
                using score_fn = int (*)(void);
                if (auto fn = reinterpret_cast<score_fn>(dlsym(h, "ggml_backend_score"))) score = fn();
                dlclose(h);
            }
            out.push_back({f.substr(prefix.size(), f.size() - prefix.size() - suffix.size()), f, score, f == loaded});
        }
#endif
        return out;
    }();
    return found;
}

py::list cpu_variants() {
    py::list out;
    for (const auto & v : find_cpu_variants()) {
        py::dict d;
        d["name"] = v.name;
        d["file"] = v.file;
        d["score"] = v.score;
        d["loaded"] = v.loaded;
        out.append(d);
    }
    return out;
}

// ----------------------------------------------------------------------------- API
void init(const std::string & lib_dir) {
    g_lib_dir = lib_dir;
    funasr::install_log_callback();  // first: the backend loader logs too (quiet unless verbose)
#ifdef FUNASR_GGML_BACKEND_DL
    ggml_backend_load_all_from_path(lib_dir.c_str());
#endif
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

// One device as system_info()["devices"] lists it; name: what Model(device=...) and --device take.
py::dict device_dict(ggml_backend_dev_t dev) {
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    const std::vector<ggml_backend_dev_t> selectable = funasr::selectable_devices();
    py::dict d;
    d["name"] = funasr::device_name(dev);
    d["ggml_name"] = ggml_backend_dev_name(dev);
    d["backend"] = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
    d["type"] = dev_type_name(ggml_backend_dev_type(dev));
    d["description"] = ggml_backend_dev_description(dev);
    d["memory_free"] = free;
    d["memory_total"] = total;
    d["selectable"] = std::find(selectable.begin(), selectable.end(), dev) != selectable.end();
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
    py::list devices;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) devices.append(device_dict(ggml_backend_dev_get(i)));
    py::dict out;
    out["backends"] = backends;
    out["devices"] = devices;
    out["auto_device"] = funasr::device_name(funasr::resolve_device("auto"));
    out["summary"] = std::string(llama_print_system_info());
    return out;
}

// Loads a GGUF LLM without its weight data and reports its metadata.
py::dict model_info(const std::string & path) {
    funasr::check_gguf_file(path);
    llama_model * model = nullptr;
    {
        py::gil_scoped_release nogil;
        funasr::log_capture cap;
        llama_model_params p = llama_model_default_params();
        p.no_alloc = true;  // hparams, vocabulary and tensor shapes are checked; no weight data is read
        p.load_mode = LLAMA_LOAD_MODE_NONE;  // no_alloc cannot be combined with mmap
        p.n_gpu_layers = 0;
        model = llama_model_load_from_file(path.c_str(), p);
        if (!model) throw funasr::error(errc::invalid_argument, "cannot load GGUF model " + path);
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

// ----------------------------------------------------------------------------- quantize
const std::vector<std::pair<std::string, llama_ftype>> & quant_types() {
    static const std::vector<std::pair<std::string, llama_ftype>> types = {
        {"f32", LLAMA_FTYPE_ALL_F32},           {"f16", LLAMA_FTYPE_MOSTLY_F16},
        {"bf16", LLAMA_FTYPE_MOSTLY_BF16},      {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
        {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},      {"q4_1", LLAMA_FTYPE_MOSTLY_Q4_1},
        {"q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},      {"q5_1", LLAMA_FTYPE_MOSTLY_Q5_1},
        {"q2_k", LLAMA_FTYPE_MOSTLY_Q2_K},      {"q3_k_s", LLAMA_FTYPE_MOSTLY_Q3_K_S},
        {"q3_k_m", LLAMA_FTYPE_MOSTLY_Q3_K_M},  {"q3_k_l", LLAMA_FTYPE_MOSTLY_Q3_K_L},
        {"q4_k_s", LLAMA_FTYPE_MOSTLY_Q4_K_S},  {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M},
        {"q4_k", LLAMA_FTYPE_MOSTLY_Q4_K_M},    {"q5_k_s", LLAMA_FTYPE_MOSTLY_Q5_K_S},
        {"q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M},  {"q5_k", LLAMA_FTYPE_MOSTLY_Q5_K_M},
        {"q6_k", LLAMA_FTYPE_MOSTLY_Q6_K},
    };
    return types;
}

std::vector<std::string> quant_type_names() {
    std::vector<std::string> names;
    for (const auto & t : quant_types()) names.push_back(t.first);
    return names;
}

// Quantizes into a temporary file beside dst and renames it over dst only on success,
// so dst is either the complete new model or untouched.
void quantize(const py::object & src_obj, const py::object & dst_obj, const std::string & type, int n_threads) {
    namespace fs = std::filesystem;
    const std::string src = funasr_py::fspath(src_obj), dst = funasr_py::fspath(dst_obj);
    std::string key = type;
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return (char) std::tolower(c); });
    const auto & types = quant_types();
    auto it = std::find_if(types.begin(), types.end(), [&](const auto & t) { return t.first == key; });
    if (it == types.end()) {
        std::string valid;
        for (const auto & name : quant_type_names()) valid += (valid.empty() ? "" : ", ") + name;
        throw funasr::error(errc::invalid_argument, "unknown quantization type '" + type + "' (valid: " + valid + ")");
    }
    const int32_t threads = funasr::thread_count(n_threads);
    funasr::check_gguf_file(src);

    std::error_code ec;
    if (fs::equivalent(src, dst, ec)) {  // false when dst does not exist yet
        throw funasr::error(errc::invalid_argument, "destination is the source file: " + dst);
    }
    if (fs::is_directory(dst, ec)) throw funasr::error(errc::is_a_directory, "destination is a directory: " + dst);
    fs::path dir = fs::path(dst).parent_path();
    if (dir.empty()) dir = ".";
    if (!fs::exists(dir, ec)) throw funasr::error(errc::not_found, "destination directory does not exist: " + dir.string());
    if (!fs::is_directory(dir, ec)) throw funasr::error(errc::not_a_directory, "destination directory is not a directory: " + dir.string());
    if (access(dir.c_str(), W_OK | X_OK) != 0) {
        throw funasr::error(errc::permission_denied, "cannot write to the destination directory " + dir.string() + " (for " + dst + ")");
    }

    const std::string tmp = dst + ".tmp-" + std::to_string(getpid());
    py::gil_scoped_release nogil;
    funasr::log_capture cap;
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = it->second;
    qp.nthread = threads;
    if (llama_model_quantize(src.c_str(), tmp.c_str(), &qp) != 0) {
        std::remove(tmp.c_str());
        throw funasr::error(errc::invalid_argument, "cannot quantize " + src + " to " + key);
    }
    if (std::rename(tmp.c_str(), dst.c_str()) != 0) {
        const int err = errno;
        std::remove(tmp.c_str());
        throw funasr::error(errc::io, "cannot move the quantized model to " + dst + ": " + std::strerror(err));
    }
}

}  // namespace

void register_llm_bindings(py::module_ & m);  // bind_llm.cpp
void register_asr_bindings(py::module_ & m);  // bind_asr.cpp
void register_vad(py::module_ & m);           // bind_vad.cpp

PYBIND11_MODULE(_core, m) {
    m.doc() = "funasr-cpp native core (llama.cpp + mtmd)";
    m.attr("LLAMA_CPP_BUILD") = LLAMA_CPP_BUILD_NUMBER;
    m.attr("LLAMA_CPP_COMMIT") = LLAMA_CPP_BUILD_COMMIT;
    m.def("init", &init, py::arg("lib_dir"),
          "Load dynamic ggml backends from lib_dir (when built with GGML_BACKEND_DL) and init llama.cpp.");
    m.def("set_verbose", &funasr::set_verbose, py::arg("verbose"),
          "Print llama.cpp/ggml log messages to stderr.");
    m.def("version_info", &version_info);
    m.def("system_info", &system_info,
          "backends: each ggml backend with its features and devices; devices: every device (name = what\n"
          "device= takes, ggml_name, backend, type, description, memory_free/memory_total bytes, selectable);\n"
          "auto_device: the device 'auto' picks; summary: llama.cpp's feature line.");
    m.def("resolve_device", [](const std::string & name) { return funasr::device_name(funasr::resolve_device(name)); },
          py::arg("name"),
          "The device a name picks ('auto': the first GPU, else the CPU), by its lowercased ggml name;\n"
          "ValueError listing the devices there are for a name that is none of them.");
    m.def("cpu_variants", &cpu_variants,
          "Portable builds: each ggml CPU variant module, its score on this CPU and whether it is loaded.");
    m.def("model_info", &model_info, py::arg("path"));

    funasr_py::register_error_translator();

    register_llm_bindings(m);
    m.attr("QUANT_TYPES") = py::tuple(py::cast(quant_type_names()));
    m.def("quantize", &quantize, py::arg("src"), py::arg("dst"), py::arg("type"), py::kw_only(),
          py::arg("n_threads"),
          "Quantize the GGUF LLM src into dst (type: one of QUANT_TYPES). dst is written via a temporary\n"
          "file in its directory and replaced only on success.");
    register_asr_bindings(m);
    register_vad(m);
}
