// funasr_cpp._core.AsrModel: Fun-ASR-Nano speech recognition through libllama + libmtmd, the
// native half of funasr_cpp.model.Model. Transcription jobs go to the batched engine
// (csrc/asr_engine.h): submit() queues one and returns an AsrJob, AsrJob.result() waits for it
// (driving the engine meanwhile), generate() is the two in one call. Jobs submitted from several
// threads, or several from one, are decoded together.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "engine/engine.h"
#include "gguf.h"
#include "llama.h"
#include "mtmd.h"
#include "python/native.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;
using funasr_py::native_error;

namespace {

// The mmproj's output width (clip.audio.projection_dim), or -1 when it cannot be read.
int64_t mmproj_projection_dim(const std::string & path) {
    gguf_init_params gp{};
    gp.no_alloc = true;
    gp.ctx = nullptr;
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) return -1;
    int64_t dim = -1;
    const int64_t key = gguf_find_key(g, "clip.audio.projection_dim");
    if (key >= 0 && gguf_get_kv_type(g, key) == GGUF_TYPE_UINT32) dim = gguf_get_val_u32(g, key);
    gguf_free(g);
    return dim;
}

using funasr_engine::Generation;

py::object logits_array(const Generation & g) {
    if (g.n_vocab == 0) return py::none();
    py::array_t<float> a({(py::ssize_t) (g.logits.size() / (size_t) g.n_vocab), (py::ssize_t) g.n_vocab});
    std::copy(g.logits.begin(), g.logits.end(), a.mutable_data());
    return a;
}

class AsrModel;

// A submitted transcription job; dropping it before it is done cancels it.
class AsrJob {
public:
    AsrJob(std::shared_ptr<funasr_engine::Job> job, funasr_engine::Engine * engine) : job_(std::move(job)), engine_(engine) {}
    ~AsrJob() { if (!done()) engine_->cancel(job_); }
    AsrJob(const AsrJob &) = delete;
    AsrJob & operator=(const AsrJob &) = delete;

    Generation result() {
        {
            py::gil_scoped_release nogil;
            engine_->wait(job_);
        }
        if (job_->error_type) throw native_error(job_->error_type, job_->error);
        return job_->gen;
    }
    bool done() const { return engine_->is_done(*job_); }
    void cancel() { engine_->cancel(job_); }

private:
    std::shared_ptr<funasr_engine::Job> job_;
    funasr_engine::Engine * engine_;
};

class AsrModel {
public:
    AsrModel(const py::object & llm, const py::object & mmproj, const funasr_py::context_options & opts, bool use_gpu,
             int n_parallel)
        : h_("AsrModel", funasr_py::fspath(llm), opts.n_gpu_layers), mmproj_path_(funasr_py::fspath(mmproj)) {
        funasr_py::check_gguf_file(mmproj_path_);
        if (opts.n_ctx < 0) {
            throw native_error(PyExc_ValueError, "n_ctx must be >= 0 (0 = sized to each input), got " + std::to_string(opts.n_ctx));
        }
        const int64_t llm_width = llama_model_n_embd_inp(h_.model());
        const int64_t mm_width = mmproj_projection_dim(mmproj_path_);
        if (mm_width > 0 && mm_width != llm_width) {
            throw native_error(PyExc_ValueError, "the mmproj's embedding width does not match the LLM's: mmproj " +
                               mmproj_path_ + " projects to " + std::to_string(mm_width) + " but the LLM " + h_.path() +
                               " has n_embd " + std::to_string(llm_width) + " (the two files are not a pair)");
        }
        if (n_parallel < 1 || n_parallel > 64) {
            throw native_error(PyExc_ValueError, "n_parallel must be in [1, 64], got " + std::to_string(n_parallel));
        }
        llama_context_params cparams = funasr_py::llama_handles::context_params(opts);
        mtmd_context_params mcp = mtmd_context_params_default();
        mcp.use_gpu = use_gpu;
        mcp.print_timings = false;
        mcp.n_threads = cparams.n_threads;
        mcp.flash_attn_type = cparams.flash_attn_type;
        h_.attach_mtmd(mmproj_path_, mcp);
        try {
            ctc_ = funasr_engine::CtcHead::load(mmproj_path_);
        } catch (const std::exception & e) {
            throw native_error(PyExc_ValueError, "cannot load the CTC head of mmproj " + mmproj_path_ + ": " + e.what());
        }
        const bool auto_ctx = opts.n_ctx == 0;
        cparams.n_ctx = auto_ctx ? AUTO_CTX_STEP : (uint32_t) opts.n_ctx;
        // llama.cpp reserves logits for a whole ubatch (n_ubatch x n_vocab floats: 311 MB at 512);
        // a decode step needs one row per sequence and draft token, prefill is compute-bound either way
        cparams.n_ubatch = std::min<uint32_t>(cparams.n_batch, 128);
        // one sequence per slot plus the shared prompt prefix's, in one unified KV cache (the slots
        // share the prefix's cells; llama.cpp masks each sequence to its own)
        cparams.n_seq_max = (uint32_t) n_parallel + 1;
        cparams.kv_unified = true;
        h_.create_context(cparams);
        engine_ = std::make_unique<funasr_engine::Engine>(h_, cparams, n_parallel, auto_ctx, ctc_.get());
        sample_rate_ = mtmd_get_audio_sample_rate(h_.mtmd());
    }

    std::unique_ptr<AsrJob> submit(const py::object & samples_obj, const std::string & prompt, int max_new_tokens,
                                   bool return_logits, bool ignore_eos, const py::object & draft, int draft_max,
                                   bool ctc, bool ctc_draft) {
        h_.check_open();
        if ((ctc || ctc_draft) && !ctc_) {
            throw native_error(PyExc_ValueError, "the mmproj " + mmproj_path_ + " has no CTC branch (funasr.ctc.status is "
                               "not 'complete'): CTC outputs and CTC drafts need a checkpoint with ctc_decoder + ctc.ctc_lo");
        }
        if (max_new_tokens < 0) {
            throw native_error(PyExc_ValueError, "max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
        }
        if (draft_max < 0) throw native_error(PyExc_ValueError, "draft_max must be >= 0, got " + std::to_string(draft_max));
        funasr_engine::Request r;
        r.samples = funasr_py::float_samples(samples_obj, "samples");
        check_marker(prompt);
        // mtmd rejects an empty bitmap and asserts on a one-sample one: below one frame (400
        // samples) no audio rows come out either way, so pad those to two zero samples
        if (r.samples.size() < 2) r.samples.resize(2, 0.0f);
        r.prompt = prompt;
        r.max_new_tokens = max_new_tokens;
        r.return_logits = return_logits;
        r.ignore_eos = ignore_eos;
        if (!draft.is_none()) r.draft = funasr_py::token_ids(draft, h_.n_vocab());
        r.draft_max = draft_max;
        r.ctc = ctc;
        r.ctc_draft = ctc_draft;
        return std::make_unique<AsrJob>(engine_->submit(std::move(r)), engine_.get());
    }

    Generation generate(const py::object & samples, const std::string & prompt, int max_new_tokens,
                        bool return_logits, bool ignore_eos, const py::object & draft, int draft_max, bool ctc,
                        bool ctc_draft) {
        return submit(samples, prompt, max_new_tokens, return_logits, ignore_eos, draft, draft_max, ctc, ctc_draft)
            ->result();
    }

    // log-probs [frames, len(ids)] of the CTC tokens ids in a job submitted with ctc=True
    py::array_t<float> ctc_log_probs(const Generation & g, const py::object & ids_obj) {
        if (!ctc_) throw native_error(PyExc_ValueError, "the mmproj " + mmproj_path_ + " has no CTC branch");
        const int64_t n_frames = (int64_t) g.ctc_best.size();
        if (!g.ctc || (int64_t) g.ctc_feats.size() != n_frames * ctc_->width()) {
            throw native_error(PyExc_ValueError, "this Generation has no CTC outputs: submit the job with ctc=True");
        }
        std::vector<int32_t> ids;
        for (const py::handle & v : ids_obj) ids.push_back(v.cast<int32_t>());
        py::array_t<float> out({(py::ssize_t) n_frames, (py::ssize_t) ids.size()});
        float * dst = out.mutable_data();
        try {
            py::gil_scoped_release nogil;
            ctc_->log_probs(g.ctc_feats.data(), n_frames, ids, dst);
        } catch (const std::out_of_range & e) {
            throw native_error(PyExc_ValueError, e.what());
        } catch (const std::runtime_error & e) {
            throw native_error(PyExc_RuntimeError, e.what());
        }
        return out;
    }

    bool has_ctc() const { return ctc_ != nullptr; }
    py::list ctc_ranks() const {  // the CTC tokenizer's tiktoken ranks as bytes ([] without them)
        py::list out;
        if (ctc_) for (const std::string & r : ctc_->ranks()) out.append(py::bytes(r));
        return out;
    }
    py::object ctc_vocab_size() const { return ctc_ ? py::object(py::int_(ctc_->n_vocab())) : py::none(); }
    py::object ctc_blank() const { return ctc_ ? py::object(py::int_(ctc_->blank())) : py::none(); }

    // The bytes of ids rendered like HF decode (funasr_py::token_bytes).
    py::bytes token_bytes(const py::object & ids_obj, bool skip_special) {
        h_.check_open();
        const std::vector<llama_token> ids = funasr_py::token_ids(ids_obj, h_.n_vocab());
        return py::bytes(h_.locked([&] { return funasr_py::token_bytes(h_.vocab(), h_.token_types(), ids, skip_special); }));
    }

    py::str detokenize(const py::object & ids, bool skip_special) {
        return funasr_py::utf8_text(token_bytes(ids, skip_special));
    }

    std::vector<llama_token> tokenize(const std::string & text) {
        h_.check_open();
        return h_.locked([&] { return funasr_py::tokenize(h_.vocab(), text, /*add_special*/ false, /*parse_special*/ true); });
    }

    bool is_eog(int64_t id) const {
        h_.check_open();
        return id >= 0 && id < h_.n_vocab() && llama_vocab_is_eog(h_.vocab(), (llama_token) id);
    }

    funasr_py::llama_handles & handles() { return h_; }
    const std::string & mmproj_path() const { return mmproj_path_; }
    int32_t n_vocab() const { h_.check_open(); return h_.n_vocab(); }
    int32_t n_embd() const { h_.check_open(); return llama_model_n_embd(h_.model()); }
    uint32_t n_ctx() const { h_.check_open(); return engine_->n_ctx(); }
    int n_parallel() const { return engine_->n_parallel(); }
    int sample_rate() const { h_.check_open(); return sample_rate_; }

    std::string repr() const {
        if (h_.closed()) return "<AsrModel " + h_.path() + " (closed)>";
        return "<AsrModel " + h_.path() + " + " + mmproj_path_ + " n_embd=" +
               std::to_string(llama_model_n_embd(h_.model())) + " n_ctx=" + std::to_string(engine_->n_ctx()) +
               " n_parallel=" + std::to_string(engine_->n_parallel()) + ">";
    }

private:
    static constexpr uint32_t AUTO_CTX_STEP = 1024;

    static void check_marker(const std::string & prompt) {
        const std::string marker = mtmd_default_marker();
        size_t n = 0;
        for (size_t p = prompt.find(marker); p != std::string::npos; p = prompt.find(marker, p + marker.size())) ++n;
        if (n != 1) {
            throw native_error(PyExc_ValueError, "the prompt must contain the media marker " + marker +
                                                 " exactly once, found " + std::to_string(n));
        }
    }

    funasr_py::llama_handles h_;  // declared first: destroyed after the engine that uses it
    std::string mmproj_path_;
    std::unique_ptr<funasr_engine::CtcHead> ctc_;  // before the engine, which uses it
    std::unique_ptr<funasr_engine::Engine> engine_;
    int sample_rate_ = 16000;
};

}  // namespace

void register_asr_bindings(py::module_ & m) {
    py::class_<Generation>(m, "Generation", "What one transcription job produced and what it cost.")
        .def_readonly("tokens", &Generation::tokens, "generated ids, without the end-of-generation token")
        .def_readonly("n_prompt_tokens", &Generation::n_prompt_tokens, "prompt length, audio rows included")
        .def_readonly("n_audio_tokens", &Generation::n_audio_tokens)
        .def_readonly("n_cached_tokens", &Generation::n_cached_tokens,
                      "leading prompt tokens (the text before the audio) whose KV cells were shared, not prefilled")
        .def_readonly("n_decoded_tokens", &Generation::n_decoded_tokens, "decode steps this job took part in")
        .def_readonly("n_draft_tokens", &Generation::n_draft_tokens, "draft tokens verified")
        .def_readonly("n_accepted_tokens", &Generation::n_accepted_tokens, "draft tokens equal to the greedy choice")
        .def_readonly("max_batch", &Generation::max_batch, "the most sequences decoded in one step with this one")
        .def_readonly("frontend_ms", &Generation::frontend_ms, "fbank + LFR (in mtmd_tokenize)")
        .def_readonly("encode_ms", &Generation::encode_ms)
        .def_readonly("prefill_ms", &Generation::prefill_ms)
        .def_readonly("decode_ms", &Generation::decode_ms,
                      "this job's share of the decode steps (each step's time / the sequences in it)")
        .def_readonly("ctc_best", &Generation::ctc_best,
                      "ctc / ctc_draft jobs: the greedy CTC token of each 60 ms frame (argmax of the CTC head); else []")
        .def_property_readonly("logits", &logits_array,
                               "return_logits: float32 [n_steps, n_vocab], the logits each choice was taken from\n"
                               "(incl. a final EOG step); else None");

    py::class_<AsrJob>(m, "AsrJob", "A queued or running transcription job (AsrModel.submit); dropping it cancels it.")
        .def("result", &AsrJob::result,
             "Wait for the job (decoding it and the others meanwhile) and return its Generation; raises the\n"
             "job's own error (e.g. ValueError for a prompt that does not fit the context).")
        .def("cancel", &AsrJob::cancel, "Drop the job from the queue or free its slot; result() then raises.")
        .def_property_readonly("done", &AsrJob::done);

    py::class_<AsrModel> cls(m, "AsrModel",
        "Fun-ASR-Nano: the GGUF LLM (libllama) + the funasr mmproj (libmtmd) for greedy transcription.\n"
        "Jobs submitted from one or several threads are decoded together, up to n_parallel at a time.");
    funasr_py::bind_lifetime(cls);
    cls.def(py::init([](const py::object & llm, const py::object & mmproj, int n_threads, int n_gpu_layers, bool use_gpu,
                         int n_ctx, int n_batch, const std::string & flash_attn, const std::string & kv_type,
                         int n_parallel) {
                 return new AsrModel(llm, mmproj, {n_threads, n_gpu_layers, n_ctx, n_batch, flash_attn, kv_type}, use_gpu,
                                     n_parallel);
             }),
             py::arg("llm_path"), py::arg("mmproj_path"), py::kw_only(), py::arg("n_threads") = 0,
             py::arg("n_gpu_layers") = -1, py::arg("use_gpu") = true, py::arg("n_ctx") = 0,
             py::arg("n_batch") = 512, py::arg("flash_attn") = "auto", py::arg("kv_type") = "f16",
             py::arg("n_parallel") = 8,
             "Load the LLM and mmproj GGUFs (str or os.PathLike). n_threads=0: all cores; n_gpu_layers=-1:\n"
             "all LLM layers on the GPU; use_gpu: the mmproj on the GPU; n_ctx=0: the KV cache is sized to the\n"
             "jobs (multiples of 1024 cells, grown when nothing runs); flash_attn 'auto'/'on'/'off';\n"
             "kv_type 'f16'/'f32'/'bf16'/'q8_0'; n_parallel: sequences decoded together (1-64). Raises FileNotFoundError / ValueError naming the path, and\n"
             "ValueError when the mmproj's embedding width does not match the LLM's.")
        .def("submit", &AsrModel::submit, py::arg("samples"), py::arg("prompt"), py::kw_only(),
             py::arg("max_new_tokens") = 512, py::arg("return_logits") = false, py::arg("ignore_eos") = false,
             py::arg("draft") = py::none(), py::arg("draft_max") = 8, py::arg("ctc") = false,
             py::arg("ctc_draft") = false, py::keep_alive<0, 1>(),
             "Queue the transcription of samples (1-D float, 16 kHz mono) with prompt, the full ChatML text\n"
             "containing the media marker '<__media__>' once (see funasr_cpp.prompt.build_prompt); returns an\n"
             "AsrJob. Greedy decoding until an end-of-generation token or max_new_tokens (ignore_eos, for\n"
             "benchmarks: never stop early; EOG tokens are skipped). draft: token ids the answer is expected\n"
             "to be (e.g. another recognizer's text); up to draft_max of them are verified per step and the\n"
             "result is the same as without. The text before the audio is prefilled once and shared by the\n"
             "jobs with the same instruction (Generation.n_cached_tokens). ctc: also run the mmproj's CTC branch\n"
             "in the same encoder pass and keep its outputs (Generation.ctc_best, ctc_log_probs); ctc_draft: with\n"
             "no draft given, the CTC branch's greedy transcript (re-tokenized for the LLM) is the draft.\n"
             "Both need an mmproj with the CTC branch (has_ctc), else ValueError.")
        .def("generate", &AsrModel::generate, py::arg("samples"), py::arg("prompt"), py::kw_only(),
             py::arg("max_new_tokens") = 512, py::arg("return_logits") = false, py::arg("ignore_eos") = false,
             py::arg("draft") = py::none(), py::arg("draft_max") = 8, py::arg("ctc") = false,
             py::arg("ctc_draft") = false, "submit(...).result(): transcribe and return the Generation.")
        .def("ctc_log_probs", &AsrModel::ctc_log_probs, py::arg("generation"), py::arg("ids"),
             "float32 [frames, len(ids)]: log_softmax of the CTC head at each frame of a ctc=True job, for the\n"
             "CTC token ids (upstream's ctc_logits[:, ids]).")
        .def_property_readonly("has_ctc", &AsrModel::has_ctc, "the mmproj has the CTC branch (timestamps, drafts)")
        .def_property_readonly("ctc_ranks", &AsrModel::ctc_ranks,
                               "the CTC tokenizer's tiktoken ranks (bytes per rank) from the mmproj; [] without them")
        .def_property_readonly("ctc_vocab_size", &AsrModel::ctc_vocab_size)
        .def_property_readonly("ctc_blank", &AsrModel::ctc_blank)
        .def("token_bytes", &AsrModel::token_bytes, py::arg("ids"), py::kw_only(), py::arg("skip_special") = true,
             "The concatenated bytes of ids (skip_special: HF's special tokens, typed CONTROL in the GGUF, such as\n"
             "<|im_end|>, give nothing).")
        .def("detokenize", &AsrModel::detokenize, py::arg("ids"), py::kw_only(), py::arg("skip_special") = true,
             "ids -> text like HF batch_decode(skip_special_tokens=True); invalid UTF-8 becomes U+FFFD.")
        .def("tokenize", &AsrModel::tokenize, py::arg("text"), "Text -> ids (no BOS, special tokens parsed).")
        .def("is_eog", &AsrModel::is_eog, py::arg("id"))
        .def("__repr__", &AsrModel::repr)
        .def_property_readonly("llm_path", [](AsrModel & self) { return self.handles().path(); })
        .def_property_readonly("mmproj_path", &AsrModel::mmproj_path)
        .def_property_readonly("n_vocab", &AsrModel::n_vocab)
        .def_property_readonly("n_embd", &AsrModel::n_embd)
        .def_property_readonly("n_ctx", &AsrModel::n_ctx)
        .def_property_readonly("n_parallel", &AsrModel::n_parallel)
        .def_property_readonly("sample_rate", &AsrModel::sample_rate)
        .def_property_readonly("media_marker", [](AsrModel &) { return std::string(mtmd_default_marker()); });
}
