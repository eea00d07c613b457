// funasr_cpp._core.AsrModel: Fun-ASR-Nano speech recognition, the native half of
// funasr_cpp.model.Model, over the engine's funasr::Transcriber (engine/transcriber.h): submit()
// queues a job and returns an AsrJob, AsrJob.result() waits for it (driving the engine meanwhile,
// without the GIL), generate() is the two in one call. Jobs submitted from several threads, or
// several from one, are decoded together. Every parameter is required: the defaults live in
// funasr_cpp.options.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "engine/transcriber.h"
#include "mtmd.h"
#include "python/native.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;
using funasr::errc;
using funasr::Generation;

namespace {

py::object logits_array(const Generation & g) {
    if (g.n_vocab == 0) return py::none();
    py::array_t<float> a({(py::ssize_t) (g.logits.size() / (size_t) g.n_vocab), (py::ssize_t) g.n_vocab});
    std::copy(g.logits.begin(), g.logits.end(), a.mutable_data());
    return a;
}

// A submitted transcription job; dropping it before it is done cancels it.
class AsrJob {
public:
    AsrJob(std::shared_ptr<funasr::Job> job, funasr::Transcriber * asr) : job_(std::move(job)), asr_(asr) {}
    ~AsrJob() { if (!done()) asr_->cancel(job_); }
    AsrJob(const AsrJob &) = delete;
    AsrJob & operator=(const AsrJob &) = delete;

    Generation result() {
        py::gil_scoped_release nogil;
        return asr_->wait(job_);
    }
    bool done() const { return asr_->done(job_); }
    void cancel() { asr_->cancel(job_); }

private:
    std::shared_ptr<funasr::Job> job_;
    funasr::Transcriber * asr_;
};

class AsrModel {
public:
    explicit AsrModel(const funasr::transcriber_params & p) : asr_(p) {}

    std::unique_ptr<AsrJob> submit(const py::object & samples, const std::string & prompt, int max_new_tokens,
                                   int draft_max, bool return_logits, bool ignore_eos, const py::object & draft,
                                   bool ctc, bool ctc_draft, int priority, bool ctc_only) {
        asr_.handles().check_open();
        funasr::Request r;
        r.prompt = prompt;
        r.max_new_tokens = max_new_tokens;
        r.draft_max = draft_max;
        r.return_logits = return_logits;
        r.ignore_eos = ignore_eos;
        if (!draft.is_none()) r.draft = funasr_py::token_ids(draft, asr_.handles().n_vocab());
        r.ctc = ctc;
        r.ctc_draft = ctc_draft;
        r.priority = priority;
        r.ctc_only = ctc_only;
        std::vector<float> x = funasr_py::float_samples(samples, "samples");
        return std::make_unique<AsrJob>(asr_.submit(std::move(x), std::move(r)), &asr_);
    }

    // log-probs [frames, len(ids)] of the CTC tokens ids in a job submitted with ctc=True. The ids
    // come from Python's CTC tokenizer (the text re-encoded), so this stays a call of its own; it
    // goes to the CTC head only, under the head's mutex, never the engine's.
    py::array_t<float> ctc_log_probs(const Generation & g, const py::object & ids_obj) {
        funasr::CtcHead * ctc = asr_.ctc();
        if (!ctc) throw funasr::error(errc::invalid_argument, "the mmproj " + asr_.mmproj_path() + " has no CTC branch");
        const int64_t n_frames = (int64_t) g.ctc_best.size();
        if (!g.ctc || (int64_t) g.ctc_feats.size() != n_frames * ctc->width()) {
            throw funasr::error(errc::invalid_argument, "this Generation has no CTC outputs: submit the job with ctc=True");
        }
        std::vector<int32_t> ids;
        for (const py::handle & v : ids_obj) ids.push_back(v.cast<int32_t>());
        py::array_t<float> out({(py::ssize_t) n_frames, (py::ssize_t) ids.size()});
        float * dst = out.mutable_data();
        try {
            py::gil_scoped_release nogil;
            ctc->log_probs(g.ctc_feats.data(), n_frames, ids, dst);
        } catch (const std::out_of_range & e) {
            throw funasr::error(errc::invalid_argument, e.what());
        } catch (const std::runtime_error & e) {
            throw funasr::error(errc::runtime, e.what());
        }
        return out;
    }

    bool has_ctc() const { return asr_.ctc() != nullptr; }
    py::list ctc_ranks() const {  // the CTC tokenizer's tiktoken ranks as bytes ([] without them)
        py::list out;
        if (asr_.ctc()) for (const std::string & r : asr_.ctc()->ranks()) out.append(py::bytes(r));
        return out;
    }
    py::object ctc_vocab_size() const { return asr_.ctc() ? py::object(py::int_(asr_.ctc()->n_vocab())) : py::none(); }
    py::object ctc_blank() const { return asr_.ctc() ? py::object(py::int_(asr_.ctc()->blank())) : py::none(); }

    py::bytes token_bytes(const py::object & ids_obj, bool skip_special) {
        asr_.handles().check_open();
        const std::vector<llama_token> ids = funasr_py::token_ids(ids_obj, asr_.handles().n_vocab());
        std::string bytes;
        {
            py::gil_scoped_release nogil;
            bytes = asr_.detokenize(ids, skip_special);
        }
        return py::bytes(bytes);
    }

    py::str detokenize(const py::object & ids, bool skip_special) {
        return funasr_py::utf8_text(token_bytes(ids, skip_special));
    }

    std::vector<llama_token> tokenize(const std::string & text) {
        asr_.handles().check_open();
        py::gil_scoped_release nogil;
        return asr_.tokenize(text);
    }

    bool is_eog(int64_t id) const { return asr_.is_eog(id); }

    funasr::llama_handles & handles() { return asr_.handles(); }
    const std::string & mmproj_path() const { return asr_.mmproj_path(); }
    int32_t n_vocab() const { asr_.handles().check_open(); return asr_.handles().n_vocab(); }
    int32_t n_embd() const { asr_.handles().check_open(); return llama_model_n_embd(asr_.handles().model()); }
    uint32_t n_ctx() const { asr_.handles().check_open(); return asr_.n_ctx(); }
    int n_parallel() const { return asr_.n_parallel(); }
    int sample_rate() const { asr_.handles().check_open(); return asr_.sample_rate(); }
    std::string device() const { return funasr::device_name(asr_.device()); }
    std::string encoder_device() const { return funasr::device_name(asr_.encoder_device()); }

    std::string repr() const {
        const funasr::llama_handles & h = asr_.handles();
        if (h.closed()) return "<AsrModel " + h.path() + " (closed)>";
        return "<AsrModel " + h.path() + " + " + asr_.mmproj_path() + " n_embd=" +
               std::to_string(llama_model_n_embd(h.model())) + " n_ctx=" + std::to_string(asr_.n_ctx()) +
               " n_parallel=" + std::to_string(asr_.n_parallel()) + " device=" + device() + ">";
    }

private:
    funasr::Transcriber asr_;
};

AsrModel * load(const py::object & llm, const py::object & mmproj, int n_threads, const std::string & device,
                int n_gpu_layers, bool use_gpu, int n_ctx, int n_batch, const std::string & flash_attn,
                const std::string & kv_type, int n_parallel) {
    funasr::transcriber_params p{funasr_py::fspath(llm), funasr_py::fspath(mmproj),
                                 {n_threads, n_gpu_layers, n_ctx, n_batch, flash_attn, kv_type, device}, use_gpu, n_parallel};
    py::gil_scoped_release nogil;  // loading reads the files
    return new AsrModel(p);
}

}  // namespace

void register_asr_bindings(py::module_ & m) {
    py::class_<Generation>(m, "Generation", "What one transcription job produced and what it cost.")
        .def_readonly("tokens", &Generation::tokens, "generated ids, without the end-of-generation token")
        .def_property_readonly("text", [](const Generation & g) { return funasr_py::utf8_text(g.text); },
                               "the tokens as HF batch_decode(skip_special_tokens=True) renders them (before\n"
                               "funasr_cpp.prompt.postprocess); invalid UTF-8 becomes U+FFFD")
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
        .def_property_readonly("ctc_text", [](const Generation & g) { return funasr_py::utf8_text(g.ctc_text); },
                               "ctc / ctc_draft jobs: the greedy CTC transcript (runs merged, blanks and special\n"
                               "tokens dropped); else ''")
        .def_readonly("admitted", &Generation::admitted,
                      "the engine's admission order: 0 for the first job it started, then 1, 2 ... (jobs of\n"
                      "priority 0 before queued ones of priority 1)")
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
    cls.def(py::init(&load), py::arg("llm_path"), py::arg("mmproj_path"), py::kw_only(), py::arg("n_threads"),
             py::arg("device"), py::arg("n_gpu_layers"), py::arg("use_gpu"), py::arg("n_ctx"), py::arg("n_batch"),
             py::arg("flash_attn"), py::arg("kv_type"), py::arg("n_parallel"),
             "Load the LLM and mmproj GGUFs (str or os.PathLike). n_threads=0: all cores; device: 'auto' (the\n"
             "first GPU, else the CPU), 'cpu', 'vulkan0', 'cuda0', 'metal0' ... (case-insensitive; ValueError\n"
             "listing the devices there are for another name); n_gpu_layers=-1: all LLM layers (and the KV\n"
             "cache) on that device; use_gpu: the mmproj's graphs on it too; n_ctx=0: the KV cache is sized to the\n"
             "jobs (multiples of 1024 cells, grown when nothing runs); flash_attn 'auto'/'on'/'off';\n"
             "kv_type 'f16'/'f32'/'bf16'/'q8_0'; n_parallel: sequences decoded together (1-64). Every value is\n"
             "required (funasr_cpp.options.LoadOptions holds the defaults). Raises FileNotFoundError / ValueError\n"
             "naming the path, and ValueError when the mmproj's embedding width does not match the LLM's.")
        .def("submit", &AsrModel::submit, py::arg("samples"), py::arg("prompt"), py::kw_only(),
             py::arg("max_new_tokens"), py::arg("draft_max"), py::arg("return_logits") = false,
             py::arg("ignore_eos") = false, py::arg("draft") = py::none(), py::arg("ctc") = false,
             py::arg("ctc_draft") = false, py::arg("priority") = 0, py::arg("ctc_only") = false, py::keep_alive<0, 1>(),
             "Queue the transcription of samples (1-D float, 16 kHz mono) with prompt, the full ChatML text\n"
             "containing the media marker '<__media__>' once (see funasr_cpp.prompt.build_prompt); returns an\n"
             "AsrJob. Greedy decoding until an end-of-generation token or max_new_tokens (ignore_eos, for\n"
             "benchmarks: never stop early; EOG tokens are skipped). draft: token ids the answer is expected\n"
             "to be (e.g. another recognizer's text); up to draft_max of them are verified per step and the\n"
             "result is the same as without. The text before the audio is prefilled once and shared by the\n"
             "jobs with the same instruction (Generation.n_cached_tokens). ctc: also run the mmproj's CTC branch\n"
             "in the same encoder pass and keep its outputs (Generation.ctc_best, ctc_log_probs); ctc_draft: with\n"
             "no draft given, the CTC branch's greedy transcript (re-tokenized for the LLM) is the draft.\n"
             "Both need an mmproj with the CTC branch (has_ctc), else ValueError.\n"
             "priority: 0 = normal (finals, offline transcription), 1 = background (live partials): every queued\n"
             "priority-0 job is admitted before any priority-1 job (FIFO within a priority); a running job is never\n"
             "preempted. ctc_only: the frontend and the encoder with its CTC head only (one encoder pass, no LLM,\n"
             "no KV cells, no slot; the prompt and max_new_tokens are not used): the Generation has ctc_best and\n"
             "ctc_text, empty tokens and text, frontend_ms and encode_ms; needs has_ctc, else ValueError.")
        .def("generate",
             [](AsrModel & self, const py::object & samples, const std::string & prompt, int max_new_tokens,
                int draft_max, bool return_logits, bool ignore_eos, const py::object & draft, bool ctc, bool ctc_draft,
                int priority, bool ctc_only) {
                 return self.submit(samples, prompt, max_new_tokens, draft_max, return_logits, ignore_eos, draft, ctc,
                                    ctc_draft, priority, ctc_only)->result();
             },
             py::arg("samples"), py::arg("prompt"), py::kw_only(), py::arg("max_new_tokens"), py::arg("draft_max"),
             py::arg("return_logits") = false, py::arg("ignore_eos") = false, py::arg("draft") = py::none(),
             py::arg("ctc") = false, py::arg("ctc_draft") = false, py::arg("priority") = 0, py::arg("ctc_only") = false,
             "submit(...).result(): transcribe and return the Generation.")
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
        .def_property_readonly("device", &AsrModel::device, "the device the LLM runs on ('cpu', 'vulkan0', ...)")
        .def_property_readonly("encoder_device", &AsrModel::encoder_device,
                               "the device the mmproj's encoder, adaptor and CTC graphs run on")
        .def_property_readonly("media_marker", [](AsrModel &) { return std::string(mtmd_default_marker()); });
}
