// The owner of llama.cpp's handles (model, context, mtmd context) shared by the engine and the
// binding's model classes, how a context is made from the loading options, and the checks of
// those options. No Python here: callers that hold an interpreter lock release it themselves
// before a call that may block (locked(), close(), loading).
#pragma once

#include "engine/error.h"
#include "ggml-backend.h"
#include "llama.h"
#include "mtmd.h"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace funasr {

void check_gguf_file(const std::string & path);  // not_found / permission_denied / is_a_directory / invalid_argument
int32_t thread_count(int n_threads);             // n, or 0 = all cores (invalid_argument below 0)
llama_flash_attn_type parse_flash_attn(const std::string & value);  // auto | on | off
ggml_type parse_kv_type(const std::string & value);                 // f16 | f32 | bf16 | q8_0

// ----------------------------------------------------------------------------- devices
// The devices a model can run on, named as ggml names them, lowercased: "cpu", "vulkan0", "cuda0",
// "mtl0" (Metal; "metal0" is accepted for it too). Whatever backends this build compiled in or
// loaded (ggml's device registry); accelerators that only extend the CPU backend (BLAS, AMX) are
// not among them.
std::string device_name(ggml_backend_dev_t dev);           // ggml's name, lowercased
bool is_cpu_device(ggml_backend_dev_t dev);
std::vector<ggml_backend_dev_t> selectable_devices();      // the registry's order
// The device of a name (case-insensitive), or for "auto" the first GPU, else the first integrated
// GPU, else the CPU. invalid_argument naming the devices there are.
ggml_backend_dev_t resolve_device(const std::string & name);

// How a context is made. No defaults: the values come from the caller (funasr_cpp.options in Python).
struct context_options {
    int n_threads;        // 0: all cores
    int n_gpu_layers;     // LLM layers on a non-CPU device, -1: all (none on the CPU)
    int n_ctx;
    int n_batch;
    std::string flash_attn;
    std::string kv_type;
    std::string device;   // resolve_device's names: the LLM's layers and KV cache go there
};

// Owns llama_model + llama_context (+ an mtmd_context) and frees them in reverse order. Every call
// into them goes through locked(), which serializes the callers.
class llama_handles {
public:
    // loads the model on device (resolve_device: all n_gpu_layers there, or the CPU alone);
    // invalid_argument naming the path and llama.cpp's reason, or the devices there are
    llama_handles(std::string kind, std::string path, const std::string & device, int n_gpu_layers);
    ~llama_handles() { free_all(); }  // the last reference is gone: no other thread can be inside
    llama_handles(const llama_handles &) = delete;
    llama_handles & operator=(const llama_handles &) = delete;

    // the context params for opts (threads, batch, flash attention, KV type); checks the values
    static llama_context_params context_params(const context_options & opts);
    void create_context(const llama_context_params & params);  // (re)creates the context
    void attach_mtmd(const std::string & mmproj_path, const mtmd_context_params & params);

    template <typename F>
    auto locked(F && f) -> decltype(f()) {
        check_open();  // close() is waiting: do not take the mutex again (std::mutex is not fair)
        std::lock_guard<std::mutex> lock(mu_);
        if (!ctx_) throw closed_error();
        return f();
    }
    void check_open() const { if (closed_.load()) throw closed_error(); }
    void close();
    bool closed() const { return closed_.load(); }

    llama_model * model() const { return model_; }
    llama_context * ctx() const { return ctx_; }
    mtmd_context * mtmd() const { return mtmd_; }
    const llama_vocab * vocab() const { return vocab_; }
    const std::vector<int32_t> & token_types() const { return token_types_; }  // as in the file
    int32_t n_vocab() const { return n_vocab_; }
    const std::string & path() const { return path_; }
    const std::string & kind() const { return kind_; }
    ggml_backend_dev_t device() const { return device_; }  // where the LLM is (resolve_device)

private:
    error closed_error() const { return error(errc::closed, kind_ + " is closed: " + path_); }
    void free_all();

    std::string kind_, path_;
    ggml_backend_dev_t device_ = nullptr;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    mtmd_context * mtmd_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    std::vector<int32_t> token_types_;
    int32_t n_vocab_ = 0;
    std::mutex mu_;
    std::atomic<bool> closed_{false};
};

}  // namespace funasr
