// The batched decoding engine (see engine.h). Each job follows upstream's inference
// (funasr/models/fun_asr_nano/model.py, FunASRNano.inference): the ChatML prompt with the audio
// rows in place of the media marker, prefilled, then greedy decoding until an end of turn.
#include "engine/engine.h"

#include "engine/log_capture.h"
#include "engine/tokens.h"

#include "model/funasr.h"  // funasr_mtmd_encode_audio
#include "ggml.h"

#include <algorithm>
#include <chrono>

namespace funasr {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

struct batch_owner {
    llama_batch b;
    batch_owner(int32_t n, int32_t embd) : b(llama_batch_init(n, embd, 1)) {}
    ~batch_owner() { llama_batch_free(b); }
    void add(llama_pos pos, llama_seq_id seq, bool logits) {
        const int32_t i = b.n_tokens++;
        b.pos[i] = pos;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = seq;
        b.logits[i] = logits;
    }
};

}  // namespace

Engine::Engine(llama_handles & h, const llama_context_params & params, int n_parallel, bool auto_ctx,
               const CtcHead * ctc)
    : h_(h), ctc_(ctc), cparams_(params), n_parallel_(n_parallel), auto_ctx_(auto_ctx), prefix_seq_(n_parallel),
      slots_(n_parallel) {
    context_created();
    n_embd_ = llama_model_n_embd_inp(h_.model());
    // the LLM's token embeddings: the text after the audio is prefilled as embedding rows in the
    // same llama_decode as the audio (llama.cpp takes a batch of tokens or of rows)
    try {
        embd_ = std::make_unique<GgufRows>(h_.path(), "token_embd.weight");
    } catch (const std::exception & e) {
        throw error(errc::invalid_argument, "the LLM's token embeddings cannot be read: " + std::string(e.what()));
    }
    if (embd_->width() != n_embd_) {
        throw error(errc::invalid_argument, "the LLM " + h_.path() + ": token_embd.weight is not n_embd wide");
    }
}

void Engine::context_created() {
    n_ctx_ = llama_n_ctx(h_.ctx());
    n_batch_ = llama_n_batch(h_.ctx());
    kv_prefix_.clear();
}

// ----------------------------------------------------------------------------- jobs and drivers
std::shared_ptr<Job> Engine::submit(std::vector<float> samples, Request req) {
    auto job = std::make_shared<Job>();
    job->samples = std::move(samples);
    job->req = std::move(req);
    job->draft_k = job->req.draft_max;
    job->gen.ctc = job->req.ctc;
    // the CTC head runs for a draft only where the draft will be used
    if (!job->req.draft.empty() || job->req.draft_max <= 0 || job->req.ctc_only) job->req.ctc_draft = false;
    std::lock_guard<std::mutex> lock(mu_);
    enqueue(job);
    return job;
}

// Priority 0 (finals) goes before every queued priority-1 job (partials); FIFO within a priority.
void Engine::enqueue(std::shared_ptr<Job> job) {
    const int p = job->req.priority;
    auto at = std::find_if(queue_.begin(), queue_.end(), [p](const auto & q) { return q->req.priority > p; });
    queue_.insert(at, std::move(job));
}

void Engine::wait(const std::shared_ptr<Job> & job) {
    std::unique_lock<std::mutex> lk(mu_);
    while (!job->done) {
        if (driving_) {
            cv_.wait(lk);
            continue;
        }
        driving_ = true;
        lk.unlock();
        drive(job);
        lk.lock();
        driving_ = false;
        cv_.notify_all();  // another waiter takes over the jobs still running
    }
}

void Engine::cancel(const std::shared_ptr<Job> & job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (job->done) return;
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it != queue_.end()) {
        queue_.erase(it);
        job->done = true;
        job->failed = true;
        job->error_code = errc::cancelled;
        job->error = "the transcription job was cancelled";
        cv_.notify_all();
    } else {
        job->cancelled = true;  // running: the driver frees its slot at the next step
    }
}

void Engine::drive(const std::shared_ptr<Job> & until) {
    for (;;) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (until->done) return;
        }
        try {
            h_.locked([&] {
                log_capture cap;  // a step's error message ends with llama.cpp's reason
                step();
            });
        } catch (const error & e) {
            fail_all(e.code(), e.what());  // the model was closed, or a batched step failed
        } catch (const std::exception & e) {
            fail_all(errc::runtime, e.what());
        }
    }
}

void Engine::step() {
    llama_memory_t mem = llama_get_memory(h_.ctx());
    for (auto & job : slots_) {
        if (!job) continue;
        bool cancelled;
        {
            std::lock_guard<std::mutex> lock(mu_);
            cancelled = job->cancelled;
        }
        if (cancelled) fail(*job, errc::cancelled, "the transcription job was cancelled");
    }
    if (dirty_) {  // after a failed step: nothing in the cache is trusted
        llama_memory_clear(mem, true);
        kv_prefix_.clear();
        dirty_ = false;
    }
    admit();
    if (std::any_of(slots_.begin(), slots_.end(), [](const auto & j) { return j != nullptr; })) decode_step();
}

// ----------------------------------------------------------------------------- admission
// The job's chunks and counts; on failure the job is left as it was (its error comes back when
// its turn comes, as grow_context tokenizes queued jobs ahead of it).
void Engine::tokenize_input(Job & job) {
    Request & r = job.req;
    Generation & g = job.gen;
    struct bitmap_deleter { void operator()(mtmd_bitmap * b) const { mtmd_bitmap_free(b); } };
    std::unique_ptr<mtmd_bitmap, bitmap_deleter> bitmap(mtmd_bitmap_init_from_audio(job.samples.size(), job.samples.data()));
    decltype(job.chunks) chunks(mtmd_input_chunks_init(), mtmd_input_chunks_free);
    if (!bitmap || !chunks) throw error(errc::out_of_memory, "cannot allocate the mtmd input");
    // an encoder-only job needs the audio chunk alone: its prompt is not used
    const std::string prompt = r.ctc_only ? std::string(mtmd_default_marker()) : r.prompt;
    mtmd_input_text text{prompt.c_str(), prompt.size(), /*add_special*/ false, /*parse_special*/ true};
    const mtmd_bitmap * bitmaps[1] = {bitmap.get()};
    const auto t0 = std::chrono::steady_clock::now();
    const int32_t rc = mtmd_tokenize(h_.mtmd(), chunks.get(), &text, bitmaps, 1);
    const double frontend_ms = ms_since(t0);
    if (rc != 0) {
        throw error(rc == 1 ? errc::invalid_argument : errc::runtime,
                           "cannot tokenize the prompt and audio (mtmd_tokenize code " + std::to_string(rc) + ")");
    }
    // the layout: counts, and the text after the audio gives the first answer token's logits
    const size_t n = mtmd_input_chunks_size(chunks.get());
    size_t last = n;
    int64_t n_prompt = 0, n_audio = 0;
    for (size_t i = 0; i < n; ++i) {
        const mtmd_input_chunk * c = mtmd_input_chunks_get(chunks.get(), i);
        const int64_t k = (int64_t) mtmd_input_chunk_get_n_tokens(c);
        n_prompt += k;
        if (mtmd_input_chunk_get_type(c) != MTMD_INPUT_CHUNK_TYPE_TEXT) n_audio += k;
        if (k > 0) last = i;
    }
    g.frontend_ms = frontend_ms;
    if (r.ctc_only) {  // no LLM: the layout below does not apply
        g.n_audio_tokens = n_audio;
        job.chunks = std::move(chunks);
        std::vector<float>().swap(job.samples);
        return;
    }
    if (n_prompt == 0) throw error(errc::invalid_argument, "the prompt is empty");
    if (mtmd_input_chunk_get_type(mtmd_input_chunks_get(chunks.get(), last)) != MTMD_INPUT_CHUNK_TYPE_TEXT) {
        throw error(errc::invalid_argument, "the prompt must have text after the media marker " +
                           std::string(mtmd_default_marker()) + " (e.g. <|im_end|>\\n<|im_start|>assistant\\n)");
    }
    const mtmd_input_chunk * first = mtmd_input_chunks_get(chunks.get(), 0);
    if (last > 0 && mtmd_input_chunk_get_type(first) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
        size_t k = 0;
        const llama_token * t = mtmd_input_chunk_get_tokens_text(first, &k);
        job.prefix.assign(t, t + k);
    }
    g.n_prompt_tokens = n_prompt;
    g.n_audio_tokens = n_audio;
    job.chunks = std::move(chunks);
    std::vector<float>().swap(job.samples);  // the features are in the chunks now
}

// KV cells the job holds while it runs: its positions up to pos_limit, less the shared prefix
int64_t Engine::need_cells(const Job & job, bool shared) const {
    const int64_t want = std::min<int64_t>(job.gen.n_prompt_tokens + job.req.max_new_tokens, n_ctx_);
    return want - (shared ? (int64_t) job.prefix.size() : 0);
}

// n_ctx=0, with no job running: a context that holds the queued jobs that can run together
// (multiples of 1024 cells, at most the training context); never shrunk
void Engine::grow_context() {
    constexpr int64_t STEP = 1024;
    std::vector<std::shared_ptr<Job>> next;
    {
        std::lock_guard<std::mutex> lock(mu_);
        for (size_t i = 0; i < queue_.size() && (int) next.size() < n_parallel_; ++i) {
            if (!queue_[i]->req.ctc_only) next.push_back(queue_[i]);  // encoder-only jobs hold no cells
        }
    }
    int64_t n = 0;
    for (auto & j : next) {
        if (!j->chunks) {
            try {
                log_capture cap;
                tokenize_input(*j);
            } catch (const error &) {
                continue;  // reported when the job's turn comes
            }
        }
        n += j->gen.n_prompt_tokens + j->req.max_new_tokens;
    }
    const int64_t cap = std::max<int64_t>(llama_model_n_ctx_train(h_.model()), STEP);
    const int64_t want = std::min(cap, (n + STEP - 1) / STEP * STEP);
    if (want <= (int64_t) n_ctx_) return;
    cparams_.n_ctx = (uint32_t) want;
    h_.create_context(cparams_);  // on failure the model is closed: it cannot run without one
    context_created();
}

void Engine::admit() {
    bool ran_ctc_only = false;  // one encoder-only job per step: they interleave with the decode steps
    for (;;) {
        std::shared_ptr<Job> job;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (queue_.empty()) return;
            job = queue_.front();
        }
        // background work (partial hypotheses) waits while a normal job runs: it must never slow a
        // final down (the queue already puts every normal job before it)
        if (job->req.priority > 0 && std::any_of(slots_.begin(), slots_.end(), [](const auto & j) {
                return j != nullptr && j->req.priority == 0;
            })) {
            return;
        }
        if (job->req.ctc_only) {
            if (ran_ctc_only) return;
            ran_ctc_only = true;
            run_ctc_only(job);
            continue;
        }
        const auto free_slot = std::find(slots_.begin(), slots_.end(), nullptr);
        if (free_slot == slots_.end()) return;
        const bool idle = std::all_of(slots_.begin(), slots_.end(), [](const auto & j) { return j == nullptr; });
        bool started = false;
        try {
            log_capture cap;
            if (!job->chunks) tokenize_input(*job);
            if (idle && auto_ctx_) grow_context();
            if (job->gen.n_prompt_tokens > (int64_t) n_ctx_) {
                throw error(errc::invalid_argument, "the prompt (" + std::to_string(job->gen.n_prompt_tokens) +
                                   " tokens, " + std::to_string(job->gen.n_audio_tokens) +
                                   " of them audio) does not fit the context (n_ctx=" + std::to_string(n_ctx_) + ")");
            }
            // the prefix is shared when the cache holds it, or when nothing runs and it may replace it
            const bool shared = !job->prefix.empty() && (job->prefix == kv_prefix_ || idle);
            int64_t used = shared && job->prefix != kv_prefix_ ? (int64_t) job->prefix.size() : (int64_t) kv_prefix_.size();
            for (auto & j : slots_) used += j ? j->reserved : 0;
            const int64_t need = need_cells(*job, shared);
            if (!idle && used + need > (int64_t) n_ctx_) return;  // waits for cells to free up
            {
                std::lock_guard<std::mutex> lock(mu_);
                if (queue_.empty() || queue_.front() != job) continue;  // cancelled meanwhile
                queue_.pop_front();
            }
            job->gen.admitted = n_admitted_++;
            job->reserved = need;
            job->slot = (int) (free_slot - slots_.begin());
            *free_slot = job;
            started = true;
            if (!start(*job, shared)) finish(*job);
        } catch (const error & e) {
            if (!started) {
                std::lock_guard<std::mutex> lock(mu_);
                auto it = std::find(queue_.begin(), queue_.end(), job);
                if (it != queue_.end()) queue_.erase(it);
            }
            if (h_.closed()) throw;  // the whole engine is gone, not this job
            fail(*job, e.code(), e.what());
        }
    }
}

// An encoder-only job, taken from the queue's front: the frontend, then each audio chunk through
// the encoder with its CTC head; it needs no slot and ends here.
void Engine::run_ctc_only(const std::shared_ptr<Job> & job) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (queue_.empty() || queue_.front() != job) return;  // cancelled meanwhile
        queue_.pop_front();
    }
    job->gen.admitted = n_admitted_++;
    try {
        log_capture cap;
        if (!job->chunks) tokenize_input(*job);
        const size_t n = mtmd_input_chunks_size(job->chunks.get());
        for (size_t i = 0; i < n; ++i) {
            const mtmd_input_chunk * c = mtmd_input_chunks_get(job->chunks.get(), i);
            const bool audio = mtmd_input_chunk_get_type(c) != MTMD_INPUT_CHUNK_TYPE_TEXT;
            if (audio && mtmd_input_chunk_get_n_tokens(c) > 0) encode_chunk(*job, c);
        }
        if (!job->gen.ctc_best.empty()) job->gen.ctc_text = ctc_->greedy_bytes(job->gen.ctc_best);
        finish(*job);
    } catch (const error & e) {
        if (h_.closed()) throw;  // the whole engine is gone, not this job
        fail(*job, e.code(), e.what());
    }
}

// Prefills the job's prompt into its sequence and takes the first answer token; false: done.
bool Engine::start(Job & job, bool shared) {
    llama_memory_t mem = llama_get_memory(h_.ctx());
    Generation & g = job.gen;
    if (job.req.return_logits) g.n_vocab = h_.n_vocab();
    llama_memory_seq_rm(mem, job.slot, -1, -1);
    job.pos_limit = (llama_pos) std::min<int64_t>(g.n_prompt_tokens + job.req.max_new_tokens, n_ctx_);
    size_t first_chunk = 0;
    job.n_past = 0;
    if (shared) {
        if (job.prefix == kv_prefix_) {
            g.n_cached_tokens = (int64_t) job.prefix.size();
        } else {
            prefill_prefix(job.prefix, g);
        }
        llama_memory_seq_cp(mem, prefix_seq_, job.slot, 0, (llama_pos) job.prefix.size());
        job.n_past = (llama_pos) job.prefix.size();
        first_chunk = 1;
    }
    job.n_past = prefill_rows(job, first_chunk);
    job.chunks.reset();
    const float * logits = llama_get_logits_ith(h_.ctx(), -1);
    if (!logits) throw error(errc::runtime, "no logits after the prefill");
    job.last = choose(job, logits);
    const bool more = take(job, job.last, logits, job.n_past);
    advance_draft(job, 0);
    return more;
}

// The text before the audio into the prefix sequence, replacing what it held.
void Engine::prefill_prefix(const std::vector<llama_token> & prefix, Generation & g) {
    llama_memory_t mem = llama_get_memory(h_.ctx());
    const auto t0 = std::chrono::steady_clock::now();
    llama_memory_seq_rm(mem, prefix_seq_, -1, -1);
    kv_prefix_.clear();
    for (size_t at = 0; at < prefix.size(); at += n_batch_) {
        const size_t n = std::min<size_t>(n_batch_, prefix.size() - at);
        batch_owner b((int32_t) n, 0);
        for (size_t i = 0; i < n; ++i) {
            b.b.token[i] = prefix[at + i];
            b.add((llama_pos) (at + i), prefix_seq_, false);
        }
        const int32_t rc = llama_decode(h_.ctx(), b.b);
        if (rc != 0) throw error(errc::runtime, "prefill of the prompt failed (llama_decode code " + std::to_string(rc) + ")");
    }
    kv_prefix_ = prefix;
    g.prefill_ms += ms_since(t0);
}

const std::vector<float> & Engine::token_row(llama_token t) {
    auto it = rows_.find(t);
    if (it != rows_.end()) return it->second;
    std::vector<float> row(n_embd_);
    try {
        embd_->read(t, row.data());
    } catch (const std::exception & e) {
        throw error(errc::runtime, e.what());
    }
    return rows_.emplace(t, std::move(row)).first->second;
}

// Chunks [first, end) as embedding rows (audio: encoded; text: the token embeddings), decoded in
// as few llama_decode calls as n_batch allows, logits on the last row. Returns the next position.
llama_pos Engine::prefill_rows(Job & job, size_t first) {
    Generation & g = job.gen;
    mtmd_context * mctx = h_.mtmd();
    std::vector<float> rows;
    const size_t n_chunks = mtmd_input_chunks_size(job.chunks.get());
    for (size_t i = first; i < n_chunks; ++i) {
        const mtmd_input_chunk * c = mtmd_input_chunks_get(job.chunks.get(), i);
        const size_t n = mtmd_input_chunk_get_n_tokens(c);
        if (n == 0) continue;  // audio below one frame
        if (mtmd_input_chunk_get_type(c) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t k = 0;
            const llama_token * t = mtmd_input_chunk_get_tokens_text(c, &k);
            for (size_t j = 0; j < k; ++j) {
                const std::vector<float> & r = token_row(t[j]);
                rows.insert(rows.end(), r.begin(), r.end());
            }
        } else {
            encode_chunk(job, c);
            const float * e = mtmd_get_output_embd(mctx);
            rows.insert(rows.end(), e, e + n * (size_t) n_embd_);
        }
    }
    if (!g.ctc_best.empty()) g.ctc_text = ctc_->greedy_bytes(g.ctc_best);  // once: the result's and the draft's
    if (job.req.ctc_draft) draft_from_ctc(job);
    const auto t0 = std::chrono::steady_clock::now();
    const size_t n_rows = rows.size() / (size_t) n_embd_;
    llama_pos pos = job.n_past;
    for (size_t at = 0; at < n_rows; at += n_batch_) {
        const size_t n = std::min<size_t>(n_batch_, n_rows - at);
        batch_owner b((int32_t) n, n_embd_);
        std::copy(rows.begin() + at * n_embd_, rows.begin() + (at + n) * n_embd_, b.b.embd);
        for (size_t i = 0; i < n; ++i) b.add(pos + (llama_pos) i, job.slot, at + i + 1 == n_rows);
        const int32_t rc = llama_decode(h_.ctx(), b.b);
        if (rc != 0) {
            throw error(errc::runtime, "prefill failed (llama_decode code " + std::to_string(rc) +
                               ") at position " + std::to_string(pos));
        }
        pos += (llama_pos) n;
    }
    g.prefill_ms += ms_since(t0);
    return pos;
}

// One audio chunk through the encoder (its rows in mtmd_get_output_embd), with the CTC branch in
// the same pass where the job asks for its outputs.
void Engine::encode_chunk(Job & job, const mtmd_input_chunk * c) {
    Generation & g = job.gen;
    const auto t0 = std::chrono::steady_clock::now();
    int32_t rc;
    if (job.req.ctc || job.req.ctc_draft || job.req.ctc_only) {
        std::vector<float> feats;
        std::vector<int32_t> best;
        rc = funasr_mtmd_encode_audio(h_.mtmd(), c, job.req.ctc ? &feats : nullptr, &best);
        if (rc == 0 && (best.empty() || (job.req.ctc && feats.size() != best.size() * (size_t) ctc_->width()))) {
            throw error(errc::runtime, "the encoder gave no CTC outputs for this mmproj");
        }
        g.ctc_best.insert(g.ctc_best.end(), best.begin(), best.end());
        if (job.req.ctc) g.ctc_feats.insert(g.ctc_feats.end(), feats.begin(), feats.end());
    } else {
        rc = mtmd_encode_chunk(h_.mtmd(), c);
    }
    g.encode_ms += ms_since(t0);
    if (rc != 0) throw error(errc::runtime, "the audio encoder failed (code " + std::to_string(rc) + ")");
}

// The CTC branch's greedy transcript, re-tokenized for the LLM, as the job's draft (none given).
void Engine::draft_from_ctc(Job & job) {
    const std::string & text = job.gen.ctc_text;
    if (!text.empty()) job.req.draft = tokenize(h_.vocab(), text, /*add_special*/ false, /*parse_special*/ false);
}

// ----------------------------------------------------------------------------- decoding
// Greedy: the first maximum (like torch.argmax); ignore_eos: the best token that is not an EOG.
llama_token Engine::choose(const Job & job, const float * logits) const {
    const int32_t n_vocab = h_.n_vocab();
    llama_token tok = (llama_token) (std::max_element(logits, logits + n_vocab) - logits);
    if (!job.req.ignore_eos || !llama_vocab_is_eog(h_.vocab(), tok)) return tok;
    llama_token best = -1;
    for (int32_t i = 0; i < n_vocab; ++i) {
        if (!llama_vocab_is_eog(h_.vocab(), i) && (best < 0 || logits[i] > logits[best])) best = i;
    }
    return best < 0 ? tok : best;
}

// The job's choice for position pos. False when the job ends here: an end-of-generation token,
// the token budget or the end of its context.
bool Engine::take(Job & job, llama_token tok, const float * logits, llama_pos pos) {
    Generation & g = job.gen;
    if (pos >= job.pos_limit || (int64_t) g.tokens.size() >= job.req.max_new_tokens) return false;
    if (job.req.return_logits) g.logits.insert(g.logits.end(), logits, logits + h_.n_vocab());
    if (llama_vocab_is_eog(h_.vocab(), tok)) return false;
    g.tokens.push_back(tok);
    return (int64_t) g.tokens.size() < job.req.max_new_tokens && pos + 1 < job.pos_limit;
}

// Draft tokens for the job's next step (at most room), from where the draft is expected to go on.
std::vector<llama_token> Engine::next_draft(const Job & job, int room) const {
    const std::vector<llama_token> & d = job.req.draft;
    if (room <= 0 || job.draft_at >= d.size()) return {};
    const size_t n = std::min<size_t>((size_t) room, d.size() - job.draft_at);
    return {d.begin() + (std::ptrdiff_t) job.draft_at, d.begin() + (std::ptrdiff_t) (job.draft_at + n)};
}

// After tokens [from, end) were produced: the draft index that should follow them. While the
// output follows the draft it is the next index; after a difference, the place in the draft whose
// preceding tokens match the output's last 3, 2 or 1 (closest to where a substitution would
// leave it), else that substitution.
void Engine::advance_draft(Job & job, size_t from) {
    const std::vector<llama_token> & d = job.req.draft;
    const std::vector<llama_token> & out = job.gen.tokens;
    if (d.empty() || out.size() == from) return;
    const size_t at = job.draft_at;
    const size_t expect = at + (out.size() - from);
    bool aligned = expect <= d.size();
    for (size_t i = from; aligned && i < out.size(); ++i) aligned = d[at + (i - from)] == out[i];
    job.draft_at = expect;
    if (aligned) return;
    for (size_t m = std::min<size_t>(3, out.size()); m >= 1; --m) {
        size_t best = SIZE_MAX;
        for (size_t q = m; q <= d.size(); ++q) {
            if (!std::equal(out.end() - (std::ptrdiff_t) m, out.end(), d.begin() + (std::ptrdiff_t) (q - m))) continue;
            const size_t dist = q > expect ? q - expect : expect - q;
            if (best == SIZE_MAX || dist < (best > expect ? best - expect : expect - best)) best = q;
        }
        if (best != SIZE_MAX) {
            job.draft_at = best;
            return;
        }
    }
}

// One job's rows in a decode step: its last choice at batch row `at`, then the draft tokens.
struct Engine::step_entry {
    Job * job;
    int32_t at;
    std::vector<llama_token> draft;
};

// One llama_decode for every running job: its last choice, plus draft tokens to verify.
void Engine::decode_step() {
    llama_context * ctx = h_.ctx();
    int32_t n_rows = 0;
    std::vector<step_entry> entries = plan_step(n_rows);
    const int32_t n_active = (int32_t) entries.size();
    batch_owner b(n_rows, 0);
    for (auto & e : entries) {
        e.at = b.b.n_tokens;
        b.b.token[b.b.n_tokens] = e.job->last;
        b.add(e.job->n_past, e.job->slot, true);
        for (size_t i = 0; i < e.draft.size(); ++i) {
            b.b.token[b.b.n_tokens] = e.draft[i];
            b.add(e.job->n_past + 1 + (llama_pos) i, e.job->slot, true);
        }
    }
    const auto t0 = std::chrono::steady_clock::now();
    const int32_t rc = llama_decode(ctx, b.b);
    if (rc != 0) {
        dirty_ = true;
        throw error(errc::runtime, "llama_decode failed (code " + std::to_string(rc) + ") in a step of " +
                    std::to_string(n_active) + " sequences");
    }
    const double share = ms_since(t0) / n_active;
    for (auto & e : entries) {
        e.job->gen.decode_ms += share;
        take_step(e, n_active);
    }
}

// Each running job's entry, with as many draft tokens as its state and the batch allow; n_rows:
// the batch rows they need.
std::vector<Engine::step_entry> Engine::plan_step(int32_t & n_rows) {
    std::vector<step_entry> entries;
    n_rows = 0;
    for (auto & j : slots_) if (j) ++n_rows;
    int32_t spare = (int32_t) n_batch_ - n_rows;  // batch rows left for drafts
    for (auto & j : slots_) {
        if (!j) continue;
        Job & job = *j;
        const int room = job.draft_skip > 0 ? (job.draft_skip--, 0) : std::min<int64_t>({(int64_t) job.draft_k, (int64_t) spare,
                                            job.req.max_new_tokens - (int64_t) job.gen.tokens.size() - 1,
                                            (int64_t) job.pos_limit - 1 - job.n_past});
        entries.push_back({&job, 0, next_draft(job, room)});
        spare -= (int32_t) entries.back().draft.size();
        n_rows += (int32_t) entries.back().draft.size();
    }
    return entries;
}

// A job's choices after a decode step: the greedy token after its last choice, and after each
// draft token as long as the draft matched; rejected drafts leave the KV cache.
void Engine::take_step(step_entry & e, int32_t n_active) {
    llama_context * ctx = h_.ctx();
    Job & job = *e.job;
    Generation & g = job.gen;
    ++g.n_decoded_tokens;
    g.max_batch = std::max<int64_t>(g.max_batch, n_active);
    g.n_draft_tokens += (int64_t) e.draft.size();
    const size_t before = g.tokens.size();
    const int64_t accepted_before = g.n_accepted_tokens;
    bool more = true;
    size_t kept = 0;  // batch rows whose KV stays: the last choice and the accepted drafts
    llama_token tok = -1;
    for (size_t i = 0; i <= e.draft.size(); ++i) {
        const float * logits = llama_get_logits_ith(ctx, e.at + (int32_t) i);
        if (!logits) throw error(errc::runtime, "no logits after decoding");
        tok = choose(job, logits);
        kept = i + 1;
        more = take(job, tok, logits, job.n_past + (llama_pos) i + 1);
        if (!more) break;
        if (i < e.draft.size() && tok == e.draft[i]) {
            ++g.n_accepted_tokens;
            continue;  // the draft token in the KV is what greedy decoding chose
        }
        break;
    }
    if (!more) {
        finish(job);
        return;
    }
    job.n_past += (llama_pos) kept;
    if (kept < e.draft.size() + 1) llama_memory_seq_rm(llama_get_memory(ctx), job.slot, job.n_past, -1);  // the rejected drafts
    if (!e.draft.empty()) adapt_draft(job, e.draft.size(), g.n_accepted_tokens - accepted_before);
    job.last = tok;
    advance_draft(job, before);
}

// Every verified row costs compute: after a rejection verify only one more than was taken, after
// a full acceptance twice as many (up to draft_max); a single draft token rejected pauses drafting
// for 1, 2, 4 ... 16 steps. A useless draft so costs a few percent, a good one runs at draft_max.
void Engine::adapt_draft(Job & job, size_t n_draft, int64_t m) {
    job.draft_k = m == (int64_t) n_draft ? std::min(job.req.draft_max, 2 * job.draft_k) : (int) m + 1;
    if (m == 0 && n_draft == 1) {
        job.draft_skip = job.draft_backoff;
        job.draft_backoff = std::min(16, 2 * job.draft_backoff);
    } else if (m > 0) {
        job.draft_backoff = 1;
    }
}

// The job's end, good or bad; a good one gets its text (the driver holds the handles' lock).
void Engine::finish(Job & job) {
    if (!job.failed) job.gen.text = token_bytes(h_.vocab(), h_.token_types(), job.gen.tokens, /*skip_special*/ true);
    if (job.slot >= 0) {
        if (!h_.closed() && h_.ctx()) llama_memory_seq_rm(llama_get_memory(h_.ctx()), job.slot, -1, -1);
        slots_[job.slot] = nullptr;
        job.slot = -1;
    }
    job.chunks.reset();
    std::lock_guard<std::mutex> lock(mu_);
    job.done = true;
    cv_.notify_all();
}

void Engine::fail(Job & job, errc code, const std::string & msg) {
    job.failed = true;
    job.error_code = code;
    job.error = msg;
    finish(job);
}

void Engine::fail_all(errc code, const std::string & msg) {
    std::vector<std::shared_ptr<Job>> all;
    for (auto & j : slots_) {
        if (j) all.push_back(j);
        j = nullptr;
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        all.insert(all.end(), queue_.begin(), queue_.end());
        queue_.clear();
    }
    dirty_ = true;
    for (auto & j : all) {
        j->slot = -1;  // the slots were dropped above; the cache is cleared at the next step
        fail(*j, code, msg);
    }
}

}  // namespace funasr
