// funasr_cpp._core: the Python binding over libllama + libmtmd.
// Native work runs with the GIL released; llama.cpp's log is captured so that
// failures surface as Python exceptions carrying llama.cpp's own reason.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "py_common.h"
#include "mtmd.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <sys/stat.h>
#include <unistd.h>

namespace py = pybind11;

extern "C" int funasr_mtmd_patch_level(void);  // csrc/funasr_clip.cpp, inside libmtmd

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
    std::string text() const { return text_now(); }
    static std::string text_now() {
        std::string s = t_errors;
        while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
        return s;
    }
};

[[noreturn]] void raise(PyObject * type, const std::string & msg) {
    PyErr_SetString(type, msg.c_str());
    throw py::error_already_set();
}

// A Python exception raised where the GIL is released: thrown as C++, set as the
// Python error by the translator registered in the module (after the GIL is back).
using funasr_py::native_error;

// ----------------------------------------------------------------------------- helpers
void check_gguf_file(const std::string & path) {
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) {
        if (errno == EACCES) raise(PyExc_PermissionError, "cannot access GGUF file: " + path);
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

llama_flash_attn_type parse_flash_attn(const std::string & value) {
    if (value == "auto") return LLAMA_FLASH_ATTN_TYPE_AUTO;
    if (value == "on") return LLAMA_FLASH_ATTN_TYPE_ENABLED;
    if (value == "off") return LLAMA_FLASH_ATTN_TYPE_DISABLED;
    raise(PyExc_ValueError, "flash_attn must be 'auto', 'on' or 'off', got '" + value + "'");
}

ggml_type parse_kv_type(const std::string & value) {
    if (value == "f16") return GGML_TYPE_F16;
    if (value == "f32") return GGML_TYPE_F32;
    if (value == "bf16") return GGML_TYPE_BF16;
    if (value == "q8_0") return GGML_TYPE_Q8_0;
    raise(PyExc_ValueError, "kv_type must be 'f16', 'f32', 'bf16' or 'q8_0', got '" + value + "'");
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
    mtmd_helper_log_set(log_callback, nullptr);  // mtmd and clip log on their own
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

// str or os.PathLike -> path string (bytes paths are taken as they are).
std::string fspath(const py::handle & obj) {
    py::object p = py::reinterpret_steal<py::object>(PyOS_FSPath(obj.ptr()));
    if (!p) throw py::error_already_set();
    if (PyBytes_Check(p.ptr())) return p.cast<py::bytes>();
    return p.cast<std::string>();
}

// A 1-D sequence or array of integer token ids -> std::vector (with the GIL held).
std::vector<llama_token> token_ids(const py::handle & obj, int32_t n_vocab) {
    py::array arr = py::array::ensure(obj);
    if (!arr) raise(PyExc_TypeError, "token ids must be a sequence or array of integers");
    if (arr.ndim() != 1) raise(PyExc_ValueError, "token ids must be 1-D, got " + std::to_string(arr.ndim()) + " dimensions");
    if (arr.size() == 0) return {};
    const char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u') {
        raise(PyExc_TypeError, "token ids must be integers, got dtype " + py::str(arr.dtype()).cast<std::string>());
    }
    auto ids = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    if (!ids) throw py::error_already_set();
    std::vector<llama_token> out(ids.size());
    const int64_t * p = ids.data();
    for (size_t i = 0; i < out.size(); ++i) {
        if (p[i] < 0 || p[i] >= n_vocab) {
            raise(PyExc_ValueError, "token id " + std::to_string(p[i]) + " at index " + std::to_string(i) +
                                    " is out of range [0, " + std::to_string(n_vocab) + ")");
        }
        out[i] = (llama_token) p[i];
    }
    return out;
}

int32_t thread_count(int n_threads) {
    if (n_threads < 0) raise(PyExc_ValueError, "n_threads must be >= 0 (0 = all cores), got " + std::to_string(n_threads));
    return n_threads > 0 ? n_threads : (int32_t) std::max(1u, std::thread::hardware_concurrency());
}

// ----------------------------------------------------------------------------- LlamaModel
// A libllama model + context: tokenizer and full-sequence logits, one sequence at a time.
// Every native call runs with the GIL released and the object's mutex held, taken in that
// order, so a thread waiting for the mutex never holds the GIL the owner needs back.
class LlamaModel {
public:
    LlamaModel(const py::object & path_obj, int n_ctx, int n_threads, int n_gpu_layers, int n_batch,
               const std::string & flash_attn, const std::string & kv_type)
        : path_(fspath(path_obj)) {
        check_gguf_file(path_);
        if (n_ctx < 0) raise(PyExc_ValueError, "n_ctx must be >= 0 (0 = the model's training context), got " + std::to_string(n_ctx));
        if (n_batch < 1) raise(PyExc_ValueError, "n_batch must be >= 1, got " + std::to_string(n_batch));
        const int32_t threads = thread_count(n_threads);
        const llama_flash_attn_type fa = parse_flash_attn(flash_attn);
        // KV cache element type: f16 (llama.cpp's default) halves its memory; f32 is exact
        const ggml_type kv = parse_kv_type(kv_type);

        std::string errors;
        bool ctx_failed = false;
        {
            py::gil_scoped_release nogil;
            error_capture cap;
            llama_model_params mp = llama_model_default_params();
            mp.n_gpu_layers = n_gpu_layers;
            model_ = llama_model_load_from_file(path_.c_str(), mp);
            if (model_) {
                llama_context_params cp = llama_context_default_params();
                cp.n_ctx = (uint32_t) n_ctx;
                cp.n_batch = (uint32_t) n_batch;  // n_ubatch stays min(n_batch, 512)
                // n_outputs_max = 0 means n_batch: every token of a batch may output logits
                cp.n_outputs_max = 0;
                cp.n_seq_max = 1;
                cp.n_threads = cp.n_threads_batch = threads;
                cp.flash_attn_type = fa;
                cp.type_k = cp.type_v = kv;
                ctx_ = llama_init_from_model(model_, cp);
                if (!ctx_) {
                    ctx_failed = true;
                    llama_model_free(model_);
                    model_ = nullptr;
                }
            }
            errors = cap.text();
        }
        const std::string why = errors.empty() ? "" : ": " + errors;
        if (ctx_failed) raise(PyExc_RuntimeError, "cannot create a llama.cpp context for " + path_ + why);
        if (!model_) raise(PyExc_ValueError, "cannot load GGUF model " + path_ + why);

        vocab_ = llama_model_get_vocab(model_);
        n_vocab_ = llama_vocab_n_tokens(vocab_);
        n_embd_ = llama_model_n_embd(model_);
        n_ctx_ = llama_n_ctx(ctx_);      // padded by llama.cpp (multiple of 256)
        n_batch_ = llama_n_batch(ctx_);  // capped at n_ctx
        bos_ = llama_vocab_bos(vocab_);
        eos_ = llama_vocab_eos(vocab_);
        for (llama_token t = 0; t < n_vocab_; ++t) {
            if (llama_vocab_is_eog(vocab_, t)) eog_.push_back(t);
        }
    }

    ~LlamaModel() { free_all(); }  // the last reference is gone: no other thread can be inside

    LlamaModel(const LlamaModel &) = delete;
    LlamaModel & operator=(const LlamaModel &) = delete;

    void close() {
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> lock(mu_);
        free_all();
    }

    bool closed() const { return closed_.load(); }

    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) {
        check_open();
        return locked([&] { return funasr_py::tokenize(vocab_, text, add_special, parse_special); });
    }

    py::str detokenize(const py::object & tokens, bool remove_special, bool unparse_special) {
        check_open();
        const std::vector<llama_token> ids = token_ids(tokens, n_vocab_);
        const std::string bytes = locked([&] {
            std::string buf(ids.size() * 8 + 16, '\0');
            int32_t n = llama_detokenize(vocab_, ids.data(), (int32_t) ids.size(), buf.data(), (int32_t) buf.size(),
                                         remove_special, unparse_special);
            if (n < 0) {
                buf.resize((size_t) -n);
                n = llama_detokenize(vocab_, ids.data(), (int32_t) ids.size(), buf.data(), (int32_t) buf.size(),
                                     remove_special, unparse_special);
            }
            if (n < 0) throw native_error(PyExc_ValueError, "cannot detokenize " + std::to_string(ids.size()) + " tokens");
            buf.resize((size_t) n);
            return buf;
        });
        // tokens may end inside a UTF-8 sequence (byte-level BPE): never fail on that
        PyObject * s = PyUnicode_DecodeUTF8(bytes.data(), (Py_ssize_t) bytes.size(), "replace");
        if (!s) throw py::error_already_set();
        return py::reinterpret_steal<py::str>(s);
    }

    py::bytes token_to_piece(int64_t id, bool special) {
        check_id(id);
        const std::string piece = locked([&] {
            std::string buf(64, '\0');
            int32_t n = llama_token_to_piece(vocab_, (llama_token) id, buf.data(), (int32_t) buf.size(), 0, special);
            if (n < 0) {
                buf.resize((size_t) -n);
                n = llama_token_to_piece(vocab_, (llama_token) id, buf.data(), (int32_t) buf.size(), 0, special);
            }
            if (n < 0) throw native_error(PyExc_ValueError, "cannot render token " + std::to_string(id));
            buf.resize((size_t) n);
            return buf;
        });
        return py::bytes(piece);
    }

    // Logits of every position of `tokens` decoded as one sequence from position 0.
    py::array_t<float> eval_logits(const py::object & tokens) {
        check_open();
        const std::vector<llama_token> ids = token_ids(tokens, n_vocab_);
        if (ids.empty()) raise(PyExc_ValueError, "eval_logits needs at least one token");
        if (ids.size() > n_ctx_) {
            raise(PyExc_ValueError, std::to_string(ids.size()) + " tokens do not fit the context (n_ctx=" +
                                    std::to_string(n_ctx_) + ") of " + path_);
        }
        const size_t n = ids.size();
        py::array_t<float> out({(py::ssize_t) n, (py::ssize_t) n_vocab_});
        float * dst = out.mutable_data();  // filled below without the GIL; nothing else sees it yet
        locked([&] {
            error_capture cap;
            llama_memory_t mem = llama_get_memory(ctx_);
            if (mem) llama_memory_clear(mem, true);  // every call starts from an empty KV cache
            const uint32_t step = n_batch_;
            llama_batch batch = llama_batch_init((int32_t) step, 0, 1);
            struct batch_guard { llama_batch & b; ~batch_guard() { llama_batch_free(b); } } guard{batch};
            for (size_t start = 0; start < n; start += step) {
                const int32_t m = (int32_t) std::min<size_t>(step, n - start);
                batch.n_tokens = m;
                for (int32_t i = 0; i < m; ++i) {
                    batch.token[i] = ids[start + i];
                    batch.pos[i] = (llama_pos) (start + i);
                    batch.n_seq_id[i] = 1;
                    batch.seq_id[i][0] = 0;
                    batch.logits[i] = 1;  // logits for every position, not only the last
                }
                const int32_t rc = llama_decode(ctx_, batch);
                const float * logits = rc == 0 ? llama_get_logits(ctx_) : nullptr;
                if (!logits) {
                    const std::string errors = cap.text();
                    throw native_error(PyExc_RuntimeError,
                        "llama_decode failed (code " + std::to_string(rc) + ") at token " + std::to_string(start) +
                        " of " + std::to_string(n) + " for " + path_ + (errors.empty() ? "" : ": " + errors));
                }
                std::memcpy(dst + start * (size_t) n_vocab_, logits, sizeof(float) * (size_t) m * (size_t) n_vocab_);
            }
        });
        return out;
    }

    bool is_eog(int64_t id) const {
        check_open();
        return id >= 0 && id < n_vocab_ && std::binary_search(eog_.begin(), eog_.end(), (llama_token) id);
    }

    // Cached at load; reading them still requires an open model, like every other call.
    const std::string & path() const { return path_; }
    int32_t n_vocab() const { check_open(); return n_vocab_; }
    int32_t n_embd() const { check_open(); return n_embd_; }
    uint32_t n_ctx() const { check_open(); return n_ctx_; }
    uint32_t n_batch() const { check_open(); return n_batch_; }
    std::vector<llama_token> eog_ids() const { check_open(); return eog_; }
    py::object bos() const { check_open(); return token_or_none(bos_); }
    py::object eos() const { check_open(); return token_or_none(eos_); }

    std::string repr() const {
        if (closed()) return "<LlamaModel " + path_ + " (closed)>";
        return "<LlamaModel " + path_ + " n_vocab=" + std::to_string(n_vocab_) + " n_embd=" +
               std::to_string(n_embd_) + " n_ctx=" + std::to_string(n_ctx_) + ">";
    }

private:
    template <typename F>
    auto locked(F && f) -> decltype(f()) {
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> lock(mu_);
        if (!ctx_) throw native_error(PyExc_RuntimeError, "LlamaModel is closed: " + path_);
        return f();
    }

    void check_open() const {
        if (closed_.load()) raise(PyExc_RuntimeError, "LlamaModel is closed: " + path_);
    }

    void check_id(int64_t id) const {
        check_open();
        if (id < 0 || id >= n_vocab_) {
            raise(PyExc_ValueError, "token id " + std::to_string(id) + " is out of range [0, " + std::to_string(n_vocab_) + ")");
        }
    }

    static py::object token_or_none(llama_token t) {
        return t == LLAMA_TOKEN_NULL ? py::object(py::none()) : py::object(py::int_(t));
    }

    void free_all() {
        closed_ = true;
        if (ctx_) llama_free(ctx_);
        if (model_) llama_model_free(model_);
        ctx_ = nullptr;
        model_ = nullptr;
        vocab_ = nullptr;
    }

    std::string path_;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    int32_t n_vocab_ = 0, n_embd_ = 0;
    uint32_t n_ctx_ = 0, n_batch_ = 0;
    llama_token bos_ = LLAMA_TOKEN_NULL, eos_ = LLAMA_TOKEN_NULL;
    std::vector<llama_token> eog_;  // sorted
    std::mutex mu_;
    std::atomic<bool> closed_{false};
};

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
    const std::string src = fspath(src_obj), dst = fspath(dst_obj);
    std::string key = type;
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return (char) std::tolower(c); });
    const auto & types = quant_types();
    auto it = std::find_if(types.begin(), types.end(), [&](const auto & t) { return t.first == key; });
    if (it == types.end()) {
        std::string valid;
        for (const auto & name : quant_type_names()) valid += (valid.empty() ? "" : ", ") + name;
        raise(PyExc_ValueError, "unknown quantization type '" + type + "' (valid: " + valid + ")");
    }
    const int32_t threads = thread_count(n_threads);
    check_gguf_file(src);

    std::error_code ec;
    if (fs::equivalent(src, dst, ec)) {  // false when dst does not exist yet
        raise(PyExc_ValueError, "destination is the source file: " + dst);
    }
    if (fs::is_directory(dst, ec)) raise(PyExc_IsADirectoryError, "destination is a directory: " + dst);
    fs::path dir = fs::path(dst).parent_path();
    if (dir.empty()) dir = ".";
    if (!fs::exists(dir, ec)) raise(PyExc_FileNotFoundError, "destination directory does not exist: " + dir.string());
    if (!fs::is_directory(dir, ec)) raise(PyExc_NotADirectoryError, "destination directory is not a directory: " + dir.string());
    if (access(dir.c_str(), W_OK | X_OK) != 0) {
        raise(PyExc_PermissionError, "cannot write to the destination directory " + dir.string() + " (for " + dst + ")");
    }

    const std::string tmp = dst + ".tmp-" + std::to_string(getpid());
    uint32_t rc;
    std::string errors;
    int rename_errno = 0;
    {
        py::gil_scoped_release nogil;
        error_capture cap;
        llama_model_quantize_params qp = llama_model_quantize_default_params();
        qp.ftype = it->second;
        qp.nthread = threads;
        rc = llama_model_quantize(src.c_str(), tmp.c_str(), &qp);
        errors = cap.text();
        if (rc == 0 && std::rename(tmp.c_str(), dst.c_str()) != 0) rename_errno = errno;
        if (rc != 0 || rename_errno != 0) std::remove(tmp.c_str());
    }
    if (rc != 0) {
        raise(PyExc_ValueError, "cannot quantize " + src + " to " + key + (errors.empty() ? "" : ": " + errors));
    }
    if (rename_errno != 0) {
        raise(PyExc_OSError, "cannot move the quantized model to " + dst + ": " + std::strerror(rename_errno));
    }
}

}  // namespace

// Shared with the other binding files (csrc/py_asr.cpp).
namespace funasr_py {
llama_flash_attn_type parse_flash_attn(const std::string & value) { return ::parse_flash_attn(value); }
ggml_type parse_kv_type(const std::string & value) { return ::parse_kv_type(value); }
void check_gguf_file(const std::string & path) { ::check_gguf_file(path); }
std::string fspath(const py::handle & obj) { return ::fspath(obj); }
int32_t thread_count(int n_threads) { return ::thread_count(n_threads); }
void errors_begin() { error_capture cap; }                 // clears this thread's captured errors
std::string errors_text() { return error_capture::text_now(); }

std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool add_special, bool parse_special) {
    if (text.size() > (size_t) INT32_MAX / 2) throw native_error(PyExc_ValueError, "text too long to tokenize");
    std::vector<llama_token> out(text.size() + 8);
    int32_t n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(),
                               add_special, parse_special);
    if (n < 0 && n != INT32_MIN) {  // buffer too small: -n is the size needed
        out.resize((size_t) -n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(),
                           add_special, parse_special);
    }
    if (n < 0) throw native_error(PyExc_ValueError, "cannot tokenize the text (" + std::to_string(text.size()) + " bytes)");
    out.resize((size_t) n);
    return out;
}
}  // namespace funasr_py

void register_audio_bindings(py::module_ & m);    // csrc/py_audio.cpp
void register_encoder_bindings(py::module_ & m);  // csrc/py_encoder.cpp
void register_asr_bindings(py::module_ & m);      // csrc/py_asr.cpp

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

    py::register_local_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const native_error & e) {
            PyErr_SetString(e.type, e.msg.c_str());
        }
    });

    py::class_<LlamaModel>(m, "LlamaModel",
        "A GGUF LLM loaded with libllama (model + context): tokenizer and full-sequence logits.\n"
        "Calls from several threads on one object are serialized.")
        .def(py::init<const py::object &, int, int, int, int, const std::string &, const std::string &>(),
             py::arg("path"), py::kw_only(), py::arg("n_ctx") = 2048, py::arg("n_threads") = 0,
             py::arg("n_gpu_layers") = -1, py::arg("n_batch") = 512, py::arg("flash_attn") = "auto",
             py::arg("kv_type") = "f16",
             "Load the model at path (str or os.PathLike). n_threads=0: all cores; n_gpu_layers=-1: all;\n"
             "flash_attn: 'auto', 'on' or 'off'; kv_type: KV cache type 'f16', 'f32', 'bf16' or 'q8_0'.\n"
             "Raises FileNotFoundError / ValueError naming the path.")
        .def("tokenize", &LlamaModel::tokenize, py::arg("text"), py::kw_only(),
             py::arg("add_special") = false, py::arg("parse_special") = true,
             "Text -> token ids. parse_special: '<|im_start|>' etc. become their single special ids.")
        .def("detokenize", &LlamaModel::detokenize, py::arg("tokens"), py::kw_only(),
             py::arg("remove_special") = false, py::arg("unparse_special") = true,
             "Token ids -> text (invalid UTF-8, e.g. a cut multi-byte character, becomes U+FFFD).")
        .def("token_to_piece", &LlamaModel::token_to_piece, py::arg("id"), py::kw_only(), py::arg("special") = true,
             "The bytes of one token (a byte-level token may be part of a UTF-8 character).")
        .def("eval_logits", &LlamaModel::eval_logits, py::arg("tokens"),
             "Decode tokens as one sequence from position 0 (the KV cache is cleared first) and return\n"
             "the logits of every position: float32 array [n_tokens, n_vocab].")
        .def("is_eog", &LlamaModel::is_eog, py::arg("id"), "Whether id ends generation (eos, eot, <|im_end|>, ...).")
        .def("close", &LlamaModel::close, "Free the model and context (idempotent); later calls raise RuntimeError.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](LlamaModel & self, const py::args &) { self.close(); })
        .def("__repr__", &LlamaModel::repr)
        .def_property_readonly("closed", &LlamaModel::closed)
        .def_property_readonly("path", &LlamaModel::path)
        .def_property_readonly("n_vocab", &LlamaModel::n_vocab)
        .def_property_readonly("n_embd", &LlamaModel::n_embd)
        .def_property_readonly("n_ctx", &LlamaModel::n_ctx, "Context size in tokens (llama.cpp pads it to a multiple of 256).")
        .def_property_readonly("n_batch", &LlamaModel::n_batch, "Tokens per llama_decode call (at most n_ctx).")
        .def_property_readonly("bos", &LlamaModel::bos, "Beginning-of-sequence id, or None.")
        .def_property_readonly("eos", &LlamaModel::eos, "End-of-sequence id, or None.")
        .def_property_readonly("eog_ids", &LlamaModel::eog_ids, "All end-of-generation ids, sorted.")
        .def_property_readonly("eos_ids", &LlamaModel::eog_ids, "Alias of eog_ids.");

    m.attr("QUANT_TYPES") = py::tuple(py::cast(quant_type_names()));
    m.def("quantize", &quantize, py::arg("src"), py::arg("dst"), py::arg("type"), py::kw_only(),
          py::arg("n_threads") = 0,
          "Quantize the GGUF LLM src into dst (type: one of QUANT_TYPES). dst is written via a temporary\n"
          "file in its directory and replaced only on success.");
    register_audio_bindings(m);
    register_encoder_bindings(m);
    register_asr_bindings(m);
}
