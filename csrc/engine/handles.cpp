// The owner of llama.cpp's handles and the loading options' checks (see handles.h).
#include "engine/handles.h"

#include "engine/log_capture.h"
#include "engine/tokens.h"

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <thread>
#include <sys/stat.h>

namespace funasr {

void check_gguf_file(const std::string & path) {
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) {
        if (errno == EACCES) throw error(errc::permission_denied, "cannot access GGUF file: " + path);
        throw error(errc::not_found, "GGUF file not found: " + path);
    }
    if (S_ISDIR(st.st_mode)) throw error(errc::is_a_directory, "expected a GGUF file, got a directory: " + path);
    std::ifstream f(path, std::ios::binary);
    if (!f) throw error(errc::permission_denied, "cannot open GGUF file: " + path);
    char magic[4] = {0, 0, 0, 0};
    f.read(magic, 4);
    if (f.gcount() != 4 || std::string(magic, 4) != "GGUF") {
        throw error(errc::invalid_argument, "not a GGUF file (no GGUF magic): " + path);
    }
}

int32_t thread_count(int n_threads) {
    if (n_threads < 0) {
        throw error(errc::invalid_argument, "n_threads must be >= 0 (0 = all cores), got " + std::to_string(n_threads));
    }
    return n_threads > 0 ? n_threads : (int32_t) std::max(1u, std::thread::hardware_concurrency());
}

llama_flash_attn_type parse_flash_attn(const std::string & value) {
    if (value == "auto") return LLAMA_FLASH_ATTN_TYPE_AUTO;
    if (value == "on") return LLAMA_FLASH_ATTN_TYPE_ENABLED;
    if (value == "off") return LLAMA_FLASH_ATTN_TYPE_DISABLED;
    throw error(errc::invalid_argument, "flash_attn must be 'auto', 'on' or 'off', got '" + value + "'");
}

ggml_type parse_kv_type(const std::string & value) {
    if (value == "f16") return GGML_TYPE_F16;
    if (value == "f32") return GGML_TYPE_F32;
    if (value == "bf16") return GGML_TYPE_BF16;
    if (value == "q8_0") return GGML_TYPE_Q8_0;
    throw error(errc::invalid_argument, "kv_type must be 'f16', 'f32', 'bf16' or 'q8_0', got '" + value + "'");
}

llama_handles::llama_handles(std::string kind, std::string path, int n_gpu_layers)
    : kind_(std::move(kind)), path_(std::move(path)) {
    check_gguf_file(path_);
    log_capture cap;
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = n_gpu_layers;
    model_ = llama_model_load_from_file(path_.c_str(), mp);
    if (!model_) throw error(errc::invalid_argument, "cannot load GGUF model " + path_);
    vocab_ = llama_model_get_vocab(model_);
    n_vocab_ = llama_vocab_n_tokens(vocab_);
    token_types_ = file_token_types(path_);
    if ((int64_t) token_types_.size() != n_vocab_) token_types_.clear();
}

llama_context_params llama_handles::context_params(const context_options & o) {
    if (o.n_batch < 1) throw error(errc::invalid_argument, "n_batch must be >= 1, got " + std::to_string(o.n_batch));
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
    log_capture cap;
    if (ctx_) llama_free(ctx_);
    ctx_ = llama_init_from_model(model_, params);
    if (!ctx_) {
        const std::string what = "cannot create a llama.cpp context of " + std::to_string(params.n_ctx) +
                                 " tokens for " + path_;
        free_all();  // the model cannot be used without a context
        throw error(errc::runtime, what);
    }
}

void llama_handles::attach_mtmd(const std::string & mmproj_path, const mtmd_context_params & params) {
    log_capture cap;
    mtmd_ = mtmd_init_from_file(mmproj_path.c_str(), model_, params);
    if (!mtmd_) {
        free_all();
        throw error(errc::invalid_argument, "cannot load mmproj " + mmproj_path + " for " + path_);
    }
    if (!mtmd_support_audio(mtmd_)) {
        free_all();
        throw error(errc::invalid_argument, "mmproj " + mmproj_path + " has no audio encoder");
    }
}

void llama_handles::close() {
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

}  // namespace funasr
