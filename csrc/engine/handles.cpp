// The owner of llama.cpp's handles and the loading options' checks (see handles.h).
#include "engine/handles.h"

#include "engine/log_capture.h"
#include "engine/tokens.h"
#include "model/funasr_weights.h"

#include <algorithm>
#include <cctype>
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

namespace {

std::string lowercase(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return (char) std::tolower(c); });
    return s;
}

}  // namespace

std::string device_name(ggml_backend_dev_t dev) { return lowercase(ggml_backend_dev_name(dev)); }

bool is_cpu_device(ggml_backend_dev_t dev) { return ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU; }

std::vector<ggml_backend_dev_t> selectable_devices() {
    std::vector<ggml_backend_dev_t> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        switch (ggml_backend_dev_type(dev)) {
            case GGML_BACKEND_DEVICE_TYPE_CPU:
            case GGML_BACKEND_DEVICE_TYPE_GPU:
            case GGML_BACKEND_DEVICE_TYPE_IGPU: out.push_back(dev); break;
            default: break;  // ACCEL (BLAS, AMX) works beside the CPU backend; META wraps other devices
        }
    }
    return out;
}

ggml_backend_dev_t resolve_device(const std::string & name) {
    const std::vector<ggml_backend_dev_t> devs = selectable_devices();
    std::string want = lowercase(name);
    if (want == "auto") {
        for (auto type : {GGML_BACKEND_DEVICE_TYPE_GPU, GGML_BACKEND_DEVICE_TYPE_IGPU, GGML_BACKEND_DEVICE_TYPE_CPU}) {
            for (ggml_backend_dev_t dev : devs) {
                if (ggml_backend_dev_type(dev) == type) return dev;
            }
        }
    } else {
        // ggml names Metal's devices MTL0, MTL1 ...; "metal0" is what a user types
        if (want.size() > 5 && want.compare(0, 5, "metal") == 0 &&
            std::all_of(want.begin() + 5, want.end(), [](unsigned char c) { return std::isdigit(c); })) {
            want = "mtl" + want.substr(5);
        }
        for (ggml_backend_dev_t dev : devs) {
            if (device_name(dev) == want) return dev;
        }
    }
    std::string known = "auto";
    for (ggml_backend_dev_t dev : devs) known += ", " + device_name(dev) + " (" + ggml_backend_dev_description(dev) + ")";
    if (devs.empty()) throw error(errc::runtime, "no ggml device: no backend is loaded (ggml_backend_load_all)");
    throw error(errc::invalid_argument, "unknown device '" + name + "': the devices here are " + known +
                ". A device is there when this build has its ggml backend and the machine a driver for it "
                "(`funasr-cpp info` lists them)");
}

llama_handles::llama_handles(std::string kind, std::string path, const std::string & device, int n_gpu_layers)
    : kind_(std::move(kind)), path_(std::move(path)) {
    device_ = resolve_device(device);
    check_gguf_file(path_);
    log_capture cap;
    llama_model_params mp = llama_model_default_params();
    // the one device llama.cpp may offload to (none: the CPU alone), not every GPU it finds
    ggml_backend_dev_t devices[2] = {is_cpu_device(device_) ? nullptr : device_, nullptr};
    mp.devices = devices;
    mp.n_gpu_layers = devices[0] ? n_gpu_layers : 0;
    mp.use_extra_bufts = funasr_use_extra_bufts();  // AMX / repacked weights unless switched off
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
