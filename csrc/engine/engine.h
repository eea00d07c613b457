// The batched decoding engine behind funasr::Transcriber (engine/transcriber.h; defined in engine.cpp).
// Up to n_parallel transcription jobs share one llama_context: each has its own KV sequence id,
// every decode step advances all of them in one llama_decode, a finished job frees its slot for
// the next queued one (continuous batching), and the prompt text before the audio (system turn +
// instruction) is prefilled once and shared by copying its KV cells (llama_memory_seq_cp).
// A job may carry draft tokens: they are verified several at a time (speculative decoding) and the
// output is exactly what plain greedy decoding gives.
//
// Priority (Request::priority): 0 = normal (finals, offline transcription), 1 = background
// (live partial hypotheses). The queue holds every priority-0 job before any priority-1 job, FIFO
// within a priority, and admission takes it in that order; a priority-1 job is admitted only while
// no priority-0 job runs (a partial never slows a final down); a running job is never preempted.
// Encoder-only jobs (Request::ctc_only) run the frontend and the encoder with its CTC head when
// their turn in the queue comes, and finish there: no slot, no KV cells, no LLM. At most one runs
// per step, so that they interleave with the decode steps of the running jobs.
//
// No thread of its own: whoever waits for a job drives the engine until that job is done, then
// another waiting thread takes over (leader/follower). A caller that holds an interpreter lock
// releases it before wait().
#pragma once

#include "llama.h"
#include "mtmd.h"
#include "engine/ctc_head.h"
#include "engine/error.h"
#include "engine/gguf_rows.h"
#include "engine/handles.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace funasr {

// What one job produced and what it cost (funasr_cpp.options.Timings adds these up).
struct Generation {
    std::vector<llama_token> tokens;  // generated ids, without the end-of-generation token
    std::string text;                 // tokens detokenized as HF's decode(skip_special_tokens=True) (bytes)
    int64_t n_prompt_tokens = 0;      // prompt length, audio rows included
    int64_t n_audio_tokens = 0;
    int64_t n_cached_tokens = 0;      // leading prompt tokens whose KV was shared, not prefilled
    int64_t n_decoded_tokens = 0;     // decode steps this job took part in (in decode_ms)
    int64_t n_draft_tokens = 0;       // draft tokens verified
    int64_t n_accepted_tokens = 0;    // ... of them equal to the greedy choice
    int64_t max_batch = 0;            // the most sequences decoded together while this one ran
    // decode_ms is this job's share of the batched steps (step time / sequences in the step), so
    // that the sums over the jobs of one batch add up to the engine's wall time
    double frontend_ms = 0, encode_ms = 0, prefill_ms = 0, decode_ms = 0;
    std::vector<float> logits;        // return_logits: [steps, n_vocab], what each choice was taken from
    int32_t n_vocab = 0;
    // the CTC branch (Request::ctc / ctc_draft), frames of all the job's audio chunks in order
    std::vector<int32_t> ctc_best;    // greedy CTC token per frame
    std::string ctc_text;             // their greedy transcript (CtcHead::greedy_bytes), bytes
    std::vector<float> ctc_feats;     // Request::ctc: [frames, CtcHead::width()] for CtcHead::log_probs
    bool ctc = false;                 // Request::ctc was set (ctc_feats is complete)
    int64_t admitted = -1;            // admission order: 0 for the first job the engine started, 1 ...
};

// How to transcribe one piece of audio. max_new_tokens and draft_max have no defaults: the values
// come from the caller (funasr_cpp.options.TranscribeOptions in Python).
struct Request {
    std::string prompt;               // ChatML with the media marker once
    int max_new_tokens;
    int draft_max;                    // draft tokens verified per step (0: no speculative decoding)
    bool ignore_eos = false;          // benchmarks: never stop early, EOG tokens skipped
    bool return_logits = false;
    std::vector<llama_token> draft;   // speculative decoding: the expected output (any quality)
    bool ctc = false;                 // keep the CTC branch's outputs (Generation::ctc_*)
    bool ctc_draft = false;           // no draft given (and draft_max > 0): the CTC branch's greedy text is the draft
    int priority = 0;                 // 0: normal, 1: background (admitted after every queued priority-0 job)
    bool ctc_only = false;            // encoder + CTC head only: ctc_best / ctc_text, no tokens (prompt unused)
};

struct Job {
    std::vector<float> samples;       // 16 kHz mono, until the frontend has run
    Request req;
    Generation gen;
    // outcome (under the engine's mutex)
    bool done = false, cancelled = false, failed = false;
    errc error_code = errc::runtime;  // when failed
    std::string error;
    // engine-private state
    std::unique_ptr<mtmd_input_chunks, void (*)(mtmd_input_chunks *)> chunks{nullptr, mtmd_input_chunks_free};
    std::vector<llama_token> prefix;  // the text before the audio
    int slot = -1;
    llama_pos n_past = 0, pos_limit = 0;  // next position; generation stops before pos_limit
    int64_t reserved = 0;             // KV cells held for this job
    llama_token last = -1;            // the last chosen token, not yet in the KV cache
    size_t draft_at = 0;              // draft index expected next
    int draft_k = 0;                  // draft tokens to verify next step (adapts to the acceptance)
    int draft_skip = 0, draft_backoff = 1;  // steps without a draft after single misses
};

class Engine {
public:
    // h owns the model, context and mtmd context; params are the context's (n_ctx: initial size)
    // ctc: the mmproj's CTC head, null without one (then Request::ctc / ctc_draft are refused)
    Engine(llama_handles & h, const llama_context_params & params, int n_parallel, bool auto_ctx,
           const CtcHead * ctc);

    std::shared_ptr<Job> submit(std::vector<float> samples, Request req);  // thread-safe; never blocks on decoding
    void wait(const std::shared_ptr<Job> & job);   // drives the engine until the job is done
    void cancel(const std::shared_ptr<Job> & job); // frees its slot at the next step

    bool is_done(const Job & job) { std::lock_guard<std::mutex> lock(mu_); return job.done; }
    int n_parallel() const { return n_parallel_; }
    uint32_t n_ctx() const { return n_ctx_; }
    void context_created();                        // the handles' context is new: nothing cached

private:
    void drive(const std::shared_ptr<Job> & until);
    void step();                                   // one admission round and one decode step
    void admit();
    void enqueue(std::shared_ptr<Job> job);        // under mu_: behind every queued job of its priority or a lower one
    void run_ctc_only(const std::shared_ptr<Job> & job);  // the frontend and the encoder's CTC branch, then done
    void encode_chunk(Job & job, const mtmd_input_chunk * c);  // one audio chunk (CTC outputs as asked)
    bool start(Job & job, bool shared);            // prefill + first choice; false: done already
    void tokenize_input(Job & job);
    int64_t need_cells(const Job & job, bool shared) const;
    void grow_context();
    void prefill_prefix(const std::vector<llama_token> & prefix, Generation & g);
    llama_pos prefill_rows(Job & job, size_t first_chunk);
    struct step_entry;                             // one job's rows in a decode step
    void decode_step();
    std::vector<step_entry> plan_step(int32_t & n_rows);
    void take_step(step_entry & e, int32_t n_active);
    void adapt_draft(Job & job, size_t n_draft, int64_t n_accepted);
    llama_token choose(const Job & job, const float * logits) const;
    // takes the choice tok made after the token at position pos; false when the job ends with it
    bool take(Job & job, llama_token tok, const float * logits, llama_pos pos);
    std::vector<llama_token> next_draft(const Job & job, int room) const;
    void advance_draft(Job & job, size_t from);
    void finish(Job & job);
    void fail(Job & job, errc code, const std::string & msg);
    void fail_all(errc code, const std::string & msg);
    const std::vector<float> & token_row(llama_token t);

    void draft_from_ctc(Job & job);

    llama_handles & h_;
    const CtcHead * ctc_;
    llama_context_params cparams_;
    int n_parallel_;
    bool auto_ctx_;
    uint32_t n_ctx_ = 0, n_batch_ = 0;
    llama_seq_id prefix_seq_;                      // the shared prefix's own sequence id
    std::vector<llama_token> kv_prefix_;           // what prefix_seq_ holds at positions [0, size)

    std::mutex mu_;                                // queue, slots and outcomes
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Job>> queue_;
    std::vector<std::shared_ptr<Job>> slots_;      // n_parallel entries, null = free
    bool driving_ = false;
    bool dirty_ = false;                           // a step failed: clear the cache first
    int64_t n_admitted_ = 0;                       // Generation::admitted of the next job started

    // token embeddings (the LLM's token_embd rows, for the text after the audio)
    std::unique_ptr<GgufRows> embd_;
    std::unordered_map<llama_token, std::vector<float>> rows_;
    int32_t n_embd_ = 0;
};

}  // namespace funasr
