// The helpers layer of the _core binding: see py_native.h.
#include "python/native.h"

#include "gguf.h"

#include <pybind11/numpy.h>

#include "common.h"
#include "mtmd-helper.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <fstream>
#include <optional>
#include <thread>
#include <sys/stat.h>

namespace funasr_py {

// ----------------------------------------------------------------------------- log capture
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

native_error::native_error(PyObject * t, const std::string & m) : type(t), msg(m) {
    const std::string logged = log_capture::text();
    if (!logged.empty()) msg += ": " + logged;
}

// ----------------------------------------------------------------------------- arguments
std::string fspath(const py::handle & obj) {
    py::object p = py::reinterpret_steal<py::object>(PyOS_FSPath(obj.ptr()));
    if (!p) throw py::error_already_set();
    if (PyBytes_Check(p.ptr())) return p.cast<py::bytes>();  // bytes paths are taken as they are
    return p.cast<std::string>();
}

void check_gguf_file(const std::string & path) {
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) {
        if (errno == EACCES) throw native_error(PyExc_PermissionError, "cannot access GGUF file: " + path);
        throw native_error(PyExc_FileNotFoundError, "GGUF file not found: " + path);
    }
    if (S_ISDIR(st.st_mode)) throw native_error(PyExc_IsADirectoryError, "expected a GGUF file, got a directory: " + path);
    std::ifstream f(path, std::ios::binary);
    if (!f) throw native_error(PyExc_PermissionError, "cannot open GGUF file: " + path);
    char magic[4] = {0, 0, 0, 0};
    f.read(magic, 4);
    if (f.gcount() != 4 || std::string(magic, 4) != "GGUF") {
        throw native_error(PyExc_ValueError, "not a GGUF file (no GGUF magic): " + path);
    }
}

int32_t thread_count(int n_threads) {
    if (n_threads < 0) {
        throw native_error(PyExc_ValueError, "n_threads must be >= 0 (0 = all cores), got " + std::to_string(n_threads));
    }
    return n_threads > 0 ? n_threads : (int32_t) std::max(1u, std::thread::hardware_concurrency());
}

llama_flash_attn_type parse_flash_attn(const std::string & value) {
    if (value == "auto") return LLAMA_FLASH_ATTN_TYPE_AUTO;
    if (value == "on") return LLAMA_FLASH_ATTN_TYPE_ENABLED;
    if (value == "off") return LLAMA_FLASH_ATTN_TYPE_DISABLED;
    throw native_error(PyExc_ValueError, "flash_attn must be 'auto', 'on' or 'off', got '" + value + "'");
}

ggml_type parse_kv_type(const std::string & value) {
    if (value == "f16") return GGML_TYPE_F16;
    if (value == "f32") return GGML_TYPE_F32;
    if (value == "bf16") return GGML_TYPE_BF16;
    if (value == "q8_0") return GGML_TYPE_Q8_0;
    throw native_error(PyExc_ValueError, "kv_type must be 'f16', 'f32', 'bf16' or 'q8_0', got '" + value + "'");
}

std::vector<llama_token> token_ids(const py::handle & obj, int32_t n_vocab) {
    py::array arr = py::array::ensure(obj);
    if (!arr) throw native_error(PyExc_TypeError, "token ids must be a sequence or array of integers");
    if (arr.ndim() != 1) throw native_error(PyExc_ValueError, "token ids must be 1-D, got " + std::to_string(arr.ndim()) + " dimensions");
    if (arr.size() == 0) return {};
    const char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u') {
        throw native_error(PyExc_TypeError, "token ids must be integers, got dtype " + py::str(arr.dtype()).cast<std::string>());
    }
    auto ids = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    if (!ids) throw py::error_already_set();
    std::vector<llama_token> out(ids.size());
    const int64_t * p = ids.data();
    for (size_t i = 0; i < out.size(); ++i) {
        if (p[i] < 0 || p[i] >= n_vocab) {
            throw native_error(PyExc_ValueError, "token id " + std::to_string(p[i]) + " at index " + std::to_string(i) +
                                                 " is out of range [0, " + std::to_string(n_vocab) + ")");
        }
        out[i] = (llama_token) p[i];
    }
    return out;
}

std::vector<float> float_samples(const py::handle & obj, const char * what) {
    const py::array a = py::array::ensure(obj);
    const std::string name(what);
    if (!a) throw native_error(PyExc_TypeError, name + " must be a 1-D float array");
    if (a.ndim() != 1) {
        throw native_error(PyExc_ValueError, name + " must be a 1-D array (16 kHz mono), got " + std::to_string(a.ndim()) + " dimensions");
    }
    // integer PCM would need another scale than [-1, 1] floats: refused rather than guessed
    if (a.dtype().kind() != 'f') {
        throw native_error(PyExc_TypeError, name + " must be floating point (16 kHz mono in [-1, 1]), got dtype " +
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

// ----------------------------------------------------------------------------- tokens
std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool add_special, bool parse_special) {
    // llama_tokenize counts in int32: refuse what it cannot report instead of letting common abort
    if (text.size() > (size_t) INT32_MAX / 2) throw native_error(PyExc_ValueError, "text too long to tokenize");
    return common_tokenize(vocab, text, add_special, parse_special);
}

std::string token_bytes(const llama_vocab * vocab, const std::vector<int32_t> & file_types,
                        const std::vector<llama_token> & ids, bool skip_special) {
    std::string out;
    for (llama_token t : ids) {
        if (skip_special && t >= 0 && (size_t) t < file_types.size()) {
            if (file_types[t] != LLAMA_TOKEN_TYPE_CONTROL) out += common_token_to_piece(vocab, t, /*special*/ true);
        } else {
            out += common_token_to_piece(vocab, t, !skip_special);
        }
    }
    return out;
}

namespace {

// tokenizer.ggml.token_type of a GGUF file ({} when it has none)
std::vector<int32_t> file_token_types(const std::string & path) {
    gguf_init_params gp{};
    gp.no_alloc = true;
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) return {};
    std::vector<int32_t> types;
    const int64_t key = gguf_find_key(g, "tokenizer.ggml.token_type");
    if (key >= 0 && gguf_get_kv_type(g, key) == GGUF_TYPE_ARRAY && gguf_get_arr_type(g, key) == GGUF_TYPE_INT32) {
        const int32_t * data = (const int32_t *) gguf_get_arr_data(g, key);
        types.assign(data, data + gguf_get_arr_n(g, key));
    }
    gguf_free(g);
    return types;
}

}  // namespace

// ----------------------------------------------------------------------------- the owner
llama_handles::llama_handles(std::string kind, std::string path, int n_gpu_layers)
    : kind_(std::move(kind)), path_(std::move(path)) {
    check_gguf_file(path_);
    py::gil_scoped_release nogil;
    log_capture cap;
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = n_gpu_layers;
    model_ = llama_model_load_from_file(path_.c_str(), mp);
    if (!model_) throw native_error(PyExc_ValueError, "cannot load GGUF model " + path_);
    vocab_ = llama_model_get_vocab(model_);
    n_vocab_ = llama_vocab_n_tokens(vocab_);
    token_types_ = file_token_types(path_);
    if ((int64_t) token_types_.size() != n_vocab_) token_types_.clear();
}

llama_context_params llama_handles::context_params(const context_options & o) {
    if (o.n_batch < 1) throw native_error(PyExc_ValueError, "n_batch must be >= 1, got " + std::to_string(o.n_batch));
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) o.n_ctx;
    cp.n_batch = (uint32_t) o.n_batch;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = thread_count(o.n_threads);
    cp.flash_attn_type = parse_flash_attn(o.flash_attn);
    // KV cache element type: f16 (llama.cpp's default) halves its memory; f32 is exact
    cp.type_k = cp.type_v = parse_kv_type(o.kv_type);
    return cp;
}

void llama_handles::create_context(const llama_context_params & params) {
    // called with the GIL (constructors) or inside locked(), without it (AsrModel's n_ctx=0 growth)
    std::optional<py::gil_scoped_release> nogil;
    if (PyGILState_Check()) nogil.emplace();
    log_capture cap;
    if (ctx_) llama_free(ctx_);
    ctx_ = llama_init_from_model(model_, params);
    if (!ctx_) {
        const std::string what = "cannot create a llama.cpp context of " + std::to_string(params.n_ctx) +
                                 " tokens for " + path_;
        free_all();  // the model cannot be used without a context
        throw native_error(PyExc_RuntimeError, what);
    }
}

void llama_handles::attach_mtmd(const std::string & mmproj_path, const mtmd_context_params & params) {
    py::gil_scoped_release nogil;
    log_capture cap;
    mtmd_ = mtmd_init_from_file(mmproj_path.c_str(), model_, params);
    if (!mtmd_) {
        free_all();
        throw native_error(PyExc_ValueError, "cannot load mmproj " + mmproj_path + " for " + path_);
    }
    if (!mtmd_support_audio(mtmd_)) {
        free_all();
        throw native_error(PyExc_ValueError, "mmproj " + mmproj_path + " has no audio encoder");
    }
}

void llama_handles::close() {
    py::gil_scoped_release nogil;
    closed_ = true;  // a thread looping on locked() stops taking the mutex (std::mutex is not fair)
    std::lock_guard<std::mutex> lock(mu_);
    free_all();
}

void llama_handles::free_all() {
    closed_ = true;
    if (mtmd_) mtmd_free(mtmd_);
    if (ctx_) llama_free(ctx_);
    if (model_) llama_model_free(model_);
    mtmd_ = nullptr;
    ctx_ = nullptr;
    model_ = nullptr;
    vocab_ = nullptr;
}

}  // namespace funasr_py
