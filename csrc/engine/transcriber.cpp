// The plain C++ API over the batched engine (see transcriber.h): loading and the checks of what
// a caller gives.
#include "engine/transcriber.h"

#include "engine/log_capture.h"
#include "engine/tokens.h"
#include "gguf.h"
#include "model/funasr_keys.h"

#include <algorithm>

namespace funasr {

namespace {

constexpr uint32_t AUTO_CTX_STEP = 1024;

// The mmproj's output width (clip.audio.projection_dim), or -1 when it cannot be read.
int64_t mmproj_projection_dim(const std::string & path) {
    gguf_init_params gp{};
    gp.no_alloc = true;
    gp.ctx = nullptr;
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) return -1;
    int64_t dim = -1;
    const int64_t key = gguf_find_key(g, KEY_CLIP_A_PROJ_DIM);
    if (key >= 0 && gguf_get_kv_type(g, key) == GGUF_TYPE_UINT32) dim = gguf_get_val_u32(g, key);
    gguf_free(g);
    return dim;
}

}  // namespace

Transcriber::Transcriber(const transcriber_params & p)
    : h_("AsrModel", p.llm_path, p.context.device, p.context.n_gpu_layers), mmproj_path_(p.mmproj_path) {
    check_gguf_file(mmproj_path_);
    if (p.context.n_ctx < 0) {
        throw error(errc::invalid_argument, "n_ctx must be >= 0 (0 = sized to each input), got " + std::to_string(p.context.n_ctx));
    }
    check_pair();
    if (p.n_parallel < 1 || p.n_parallel > 64) {
        throw error(errc::invalid_argument, "n_parallel must be in [1, 64], got " + std::to_string(p.n_parallel));
    }
    llama_context_params cparams = llama_handles::context_params(p.context);
    mtmd_context_params mcp = mtmd_context_params_default();
    // the encoder on the LLM's device, or on the CPU: never on another GPU clip would pick itself
    const bool on_device = p.use_gpu && !is_cpu_device(h_.device());
    mcp.use_gpu = on_device;
    mcp.device = on_device ? h_.device() : nullptr;
    encoder_device_ = on_device ? h_.device() : ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    mcp.print_timings = false;
    mcp.n_threads = cparams.n_threads;
    mcp.flash_attn_type = cparams.flash_attn_type;
    h_.attach_mtmd(mmproj_path_, mcp);
    try {
        ctc_ = CtcHead::load(mmproj_path_);
    } catch (const std::exception & e) {
        throw error(errc::invalid_argument, "cannot load the CTC head of mmproj " + mmproj_path_ + ": " + e.what());
    }
    const bool auto_ctx = p.context.n_ctx == 0;
    cparams.n_ctx = auto_ctx ? AUTO_CTX_STEP : (uint32_t) p.context.n_ctx;
    // llama.cpp reserves logits for a whole ubatch (n_ubatch x n_vocab floats: 311 MB at 512);
    // a decode step needs one row per sequence and draft token, prefill is compute-bound either way
    cparams.n_ubatch = std::min<uint32_t>(cparams.n_batch, 128);
    // one sequence per slot plus the shared prompt prefix's, in one unified KV cache (the slots
    // share the prefix's cells; llama.cpp masks each sequence to its own)
    cparams.n_seq_max = (uint32_t) p.n_parallel + 1;
    cparams.kv_unified = true;
    h_.create_context(cparams);
    engine_ = std::make_unique<Engine>(h_, cparams, p.n_parallel, auto_ctx, ctc_.get());
    sample_rate_ = mtmd_get_audio_sample_rate(h_.mtmd());
}

void Transcriber::check_pair() const {
    const int64_t llm_width = llama_model_n_embd_inp(h_.model());
    const int64_t mm_width = mmproj_projection_dim(mmproj_path_);
    if (mm_width > 0 && mm_width != llm_width) {
        throw error(errc::invalid_argument, "the mmproj's embedding width does not match the LLM's: mmproj " +
                    mmproj_path_ + " projects to " + std::to_string(mm_width) + " but the LLM " + h_.path() +
                    " has n_embd " + std::to_string(llm_width) + " (the two files are not a pair)");
    }
}

void Transcriber::check_request(const Request & r) const {
    if ((r.ctc || r.ctc_draft || r.ctc_only) && !ctc_) {
        throw error(errc::invalid_argument, "the mmproj " + mmproj_path_ + " has no CTC branch (funasr.ctc.status is "
                    "not 'complete'): CTC outputs, CTC drafts and encoder-only CTC jobs need a checkpoint with "
                    "ctc_decoder + ctc.ctc_lo");
    }
    if (r.priority != 0 && r.priority != 1) {
        throw error(errc::invalid_argument,
                    "priority must be 0 (normal) or 1 (background), got " + std::to_string(r.priority));
    }
    if (r.max_new_tokens < 0) {
        throw error(errc::invalid_argument, "max_new_tokens must be >= 0, got " + std::to_string(r.max_new_tokens));
    }
    if (r.draft_max < 0) throw error(errc::invalid_argument, "draft_max must be >= 0, got " + std::to_string(r.draft_max));
    if (r.ctc_only) return;  // the encoder alone: the prompt, budget and draft are not used
    const std::string marker = mtmd_default_marker();
    size_t n = 0;
    for (size_t at = r.prompt.find(marker); at != std::string::npos; at = r.prompt.find(marker, at + marker.size())) ++n;
    if (n != 1) {
        throw error(errc::invalid_argument, "the prompt must contain the media marker " + marker +
                    " exactly once, found " + std::to_string(n));
    }
    for (size_t i = 0; i < r.draft.size(); ++i) {
        if (r.draft[i] < 0 || r.draft[i] >= h_.n_vocab()) {
            throw error(errc::invalid_argument, "token id " + std::to_string(r.draft[i]) + " at index " + std::to_string(i) +
                        " is out of range [0, " + std::to_string(h_.n_vocab()) + ")");
        }
    }
}

std::shared_ptr<Job> Transcriber::submit(std::vector<float> samples, Request request) {
    h_.check_open();
    check_request(request);
    // mtmd rejects an empty bitmap and asserts on a one-sample one: below one frame (400
    // samples) no audio rows come out either way, so pad those to two zero samples
    if (samples.size() < 2) samples.resize(2, 0.0f);
    return engine_->submit(std::move(samples), std::move(request));
}

Generation Transcriber::wait(const std::shared_ptr<Job> & job) {
    engine_->wait(job);
    if (job->failed) throw error(job->error_code, job->error);
    return job->gen;
}

std::string Transcriber::detokenize(const std::vector<llama_token> & ids, bool skip_special) {
    return h_.locked([&] { return token_bytes(h_.vocab(), h_.token_types(), ids, skip_special); });
}

std::vector<llama_token> Transcriber::tokenize(const std::string & text) {
    return h_.locked([&] { return funasr::tokenize(h_.vocab(), text, /*add_special*/ false, /*parse_special*/ true); });
}

bool Transcriber::is_eog(int64_t id) const {
    h_.check_open();
    return id >= 0 && id < h_.n_vocab() && llama_vocab_is_eog(h_.vocab(), (llama_token) id);
}

}  // namespace funasr
