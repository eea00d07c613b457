// Fun-ASR-Nano speech recognition as a plain C++ API (no Python): the LLM GGUF (libllama) + the
// funasr mmproj (libmtmd) behind the batched engine (engine.h).
//
//   funasr::Transcriber asr(params);                  // loads; funasr::error on a bad file or value
//   auto job = asr.submit(samples, request);          // queues; thread-safe, never blocks on decoding
//   funasr::Generation out = asr.wait(job);           // decodes (every job) until this one is done
//   out.text, out.tokens, timings, out.ctc_best / ctc_text / ctc_feats (Request::ctc)
//
// Jobs submitted from several threads, or several from one, are decoded together, up to
// n_parallel at a time; Request::priority 1 (background) waits behind every queued priority-0 job,
// and Request::ctc_only runs the encoder's CTC head alone (engine.h). Every failure is a
// funasr::error (engine/error.h).
#pragma once

#include "engine/ctc_head.h"
#include "engine/engine.h"
#include "engine/error.h"
#include "engine/handles.h"

#include <memory>
#include <string>
#include <vector>

namespace funasr {

// How a Transcriber is loaded. No defaults: the values come from the caller.
struct transcriber_params {
    std::string llm_path, mmproj_path;
    context_options context;  // n_ctx = 0: the KV cache is sized to the jobs (multiples of 1024 cells);
                              // context.device: where the LLM (and with use_gpu the encoder) runs
    bool use_gpu;             // the mmproj's encoder + adaptor + CTC graph on that device too (false: the CPU)
    int n_parallel;           // sequences decoded together, 1-64
};

class Transcriber {
public:
    explicit Transcriber(const transcriber_params & params);
    Transcriber(const Transcriber &) = delete;
    Transcriber & operator=(const Transcriber &) = delete;

    // samples: 16 kHz mono in [-1, 1]; request.prompt: ChatML with the media marker once.
    std::shared_ptr<Job> submit(std::vector<float> samples, Request request);
    Generation wait(const std::shared_ptr<Job> & job);  // the job's result, or its error thrown
    bool done(const std::shared_ptr<Job> & job) { return engine_->is_done(*job); }
    void cancel(const std::shared_ptr<Job> & job) { engine_->cancel(job); }  // wait() then throws `cancelled`

    // The text of ids as HF's decode renders it (Generation::text has it for a whole job; this is
    // for a cut list of tokens, e.g. after a repetition guard).
    std::string detokenize(const std::vector<llama_token> & ids, bool skip_special);
    std::vector<llama_token> tokenize(const std::string & text);  // no BOS, special tokens parsed
    bool is_eog(int64_t id) const;

    // The mmproj's CTC head, null without one. Its log_probs takes its own lock, not the engine's.
    CtcHead * ctc() const { return ctc_.get(); }
    ggml_backend_dev_t device() const { return h_.device(); }           // the LLM's
    ggml_backend_dev_t encoder_device() const { return encoder_device_; }  // the mmproj's graphs'
    llama_handles & handles() { return h_; }
    const llama_handles & handles() const { return h_; }
    const std::string & mmproj_path() const { return mmproj_path_; }
    uint32_t n_ctx() const { return engine_->n_ctx(); }
    int n_parallel() const { return engine_->n_parallel(); }
    int sample_rate() const { return sample_rate_; }
    void close() { h_.close(); }

private:
    void check_pair() const;
    void check_request(const Request & r) const;

    llama_handles h_;  // declared first: destroyed after the engine that uses it
    std::string mmproj_path_;
    ggml_backend_dev_t encoder_device_ = nullptr;
    std::unique_ptr<CtcHead> ctc_;  // before the engine, which uses it
    std::unique_ptr<Engine> engine_;
    int sample_rate_ = 16000;
};

}  // namespace funasr
