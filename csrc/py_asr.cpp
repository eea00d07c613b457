// funasr_cpp._core.AsrModel: Fun-ASR-Nano speech recognition through libllama + libmtmd, the
// native half of funasr_cpp.model.Model. It follows upstream's inference
// (funasr/models/fun_asr_nano/model.py, FunASRNano.inference): the ChatML prompt with the audio
// rows in place of the media marker, prefilled, then greedy decoding until an end of turn.
// generate() runs these steps, each a method below:
//   tokenize_input  mtmd tokenizes the text around the marker (each side on its own, special
//                   tokens parsed, as upstream does) and runs the fbank + LFR frontend
//   check_layout    counts the tokens, sizes the context, finds the chunk that gives the logits
//   reuse_prefix    keeps the system turn + instruction in the KV cache from the previous call
//   prefill         text chunks decoded as tokens, the audio encoded and decoded as embeddings
//   decode          greedy argmax, one token per llama_decode
// Native work runs with the GIL released and the object's mutex held (llama_handles::locked).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "gguf.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"
#include "py_native.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;
using funasr_py::native_error;

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

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

// What one generate() call produced and what it cost (funasr_cpp.options.Timings adds these up).
struct Generation {
    std::vector<llama_token> tokens;  // generated ids, without the end-of-generation token
    int64_t n_prompt_tokens = 0;      // prompt length, audio rows included
    int64_t n_audio_tokens = 0;
    int64_t n_cached_tokens = 0;      // leading prompt tokens whose KV came from the previous call
    int64_t n_decoded_tokens = 0;     // single-token llama_decode calls (in decode_ms)
    double frontend_ms = 0, encode_ms = 0, prefill_ms = 0, decode_ms = 0;
    std::vector<float> logits;        // return_logits: [steps, n_vocab], what each argmax was taken from
    int32_t n_vocab = 0;

    py::object logits_array() const {
        if (n_vocab == 0) return py::none();
        py::array_t<float> a({(py::ssize_t) (logits.size() / (size_t) n_vocab), (py::ssize_t) n_vocab});
        std::copy(logits.begin(), logits.end(), a.mutable_data());
        return a;
    }
};

struct chunks_deleter { void operator()(mtmd_input_chunks * c) const { mtmd_input_chunks_free(c); } };
using chunks_ptr = std::unique_ptr<mtmd_input_chunks, chunks_deleter>;

class AsrModel {
public:
    AsrModel(const py::object & llm, const py::object & mmproj, const funasr_py::context_options & opts, bool use_gpu)
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
        cparams_ = funasr_py::llama_handles::context_params(opts);
        mtmd_context_params mcp = mtmd_context_params_default();
        mcp.use_gpu = use_gpu;
        mcp.print_timings = false;
        mcp.n_threads = cparams_.n_threads;
        mcp.flash_attn_type = cparams_.flash_attn_type;
        h_.attach_mtmd(mmproj_path_, mcp);
        auto_ctx_ = opts.n_ctx == 0;
        cparams_.n_ctx = auto_ctx_ ? AUTO_CTX_STEP : (uint32_t) opts.n_ctx;
        // llama.cpp reserves logits for a whole ubatch (n_ubatch x n_vocab floats: 311 MB at 512);
        // we only ever read the last token's, and prefill is compute-bound either way
        cparams_.n_ubatch = std::min<uint32_t>(cparams_.n_batch, 128);
        h_.create_context(cparams_);
        n_ctx_ = llama_n_ctx(h_.ctx());
        n_batch_ = llama_n_batch(h_.ctx());
        sample_rate_ = mtmd_get_audio_sample_rate(h_.mtmd());
    }

    Generation generate(const py::object & samples_obj, const std::string & prompt, int max_new_tokens,
                        bool return_logits, bool ignore_eos) {
        h_.check_open();
        if (max_new_tokens < 0) {
            throw native_error(PyExc_ValueError, "max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
        }
        std::vector<float> samples = funasr_py::float_samples(samples_obj, "samples");
        check_marker(prompt);
        // mtmd rejects an empty bitmap and asserts on a one-sample one: below one frame (400
        // samples) no audio rows come out either way, so pad those to two zero samples
        if (samples.size() < 2) samples.resize(2, 0.0f);
        return h_.locked([&] {
            funasr_py::log_capture cap;
            Generation g;
            chunks_ptr chunks = tokenize_input(samples, prompt, g);
            const size_t last = check_layout(chunks.get(), max_new_tokens, g);
            const size_t first = reuse_prefix(chunks.get(), last, g);
            const llama_pos n_past = prefill(chunks.get(), first, last, g);
            decode(n_past, max_new_tokens, return_logits, ignore_eos, g);
            return g;
        });
    }

    // The bytes of ids rendered like HF decode: skip_special drops CONTROL tokens (<|im_end|>, ...).
    py::bytes token_bytes(const py::object & ids_obj, bool skip_special) {
        h_.check_open();
        const std::vector<llama_token> ids = funasr_py::token_ids(ids_obj, h_.n_vocab());
        // special=false: CONTROL tokens render as nothing; user-defined ones always render
        return py::bytes(h_.locked([&] { return funasr_py::token_bytes(h_.vocab(), ids, !skip_special); }));
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
    uint32_t n_ctx() const { h_.check_open(); return n_ctx_; }
    int sample_rate() const { h_.check_open(); return sample_rate_; }

    std::string repr() const {
        if (h_.closed()) return "<AsrModel " + h_.path() + " (closed)>";
        return "<AsrModel " + h_.path() + " + " + mmproj_path_ + " n_embd=" +
               std::to_string(llama_model_n_embd(h_.model())) + " n_ctx=" + std::to_string(n_ctx_) + ">";
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

    static const mtmd_input_chunk * chunk_at(const mtmd_input_chunks * chunks, size_t i) {
        return mtmd_input_chunks_get(chunks, i);
    }

    chunks_ptr tokenize_input(const std::vector<float> & samples, const std::string & prompt, Generation & g) {
        struct bitmap_deleter { void operator()(mtmd_bitmap * b) const { mtmd_bitmap_free(b); } };
        std::unique_ptr<mtmd_bitmap, bitmap_deleter> bitmap(mtmd_bitmap_init_from_audio(samples.size(), samples.data()));
        chunks_ptr chunks(mtmd_input_chunks_init());
        if (!bitmap || !chunks) throw native_error(PyExc_MemoryError, "cannot allocate the mtmd input");
        mtmd_input_text text{prompt.c_str(), prompt.size(), /*add_special*/ false, /*parse_special*/ true};
        const mtmd_bitmap * bitmaps[1] = {bitmap.get()};
        const auto t0 = std::chrono::steady_clock::now();
        const int32_t rc = mtmd_tokenize(h_.mtmd(), chunks.get(), &text, bitmaps, 1);
        g.frontend_ms = ms_since(t0);
        if (rc != 0) {
            throw native_error(rc == 1 ? PyExc_ValueError : PyExc_RuntimeError,
                               "cannot tokenize the prompt and audio (mtmd_tokenize code " + std::to_string(rc) + ")");
        }
        return chunks;
    }

    // Counts the prompt, fits the context to it (n_ctx=0) and returns the index of the last
    // non-empty chunk: a text chunk, whose last token gives the logits of the first answer token.
    size_t check_layout(const mtmd_input_chunks * chunks, int max_new_tokens, Generation & g) {
        const size_t n_chunks = mtmd_input_chunks_size(chunks);
        size_t last = n_chunks;
        for (size_t i = 0; i < n_chunks; ++i) {
            const int64_t n = (int64_t) mtmd_input_chunk_get_n_tokens(chunk_at(chunks, i));
            g.n_prompt_tokens += n;
            if (mtmd_input_chunk_get_type(chunk_at(chunks, i)) != MTMD_INPUT_CHUNK_TYPE_TEXT) g.n_audio_tokens += n;
            if (n > 0) last = i;
        }
        if (g.n_prompt_tokens == 0) throw native_error(PyExc_ValueError, "the prompt is empty");
        if (auto_ctx_) fit_context(g.n_prompt_tokens + max_new_tokens);
        if (g.n_prompt_tokens > (int64_t) n_ctx_) {
            throw native_error(PyExc_ValueError, "the prompt (" + std::to_string(g.n_prompt_tokens) + " tokens, " +
                               std::to_string(g.n_audio_tokens) + " of them audio) does not fit the context (n_ctx=" +
                               std::to_string(n_ctx_) + ")");
        }
        if (mtmd_input_chunk_get_type(chunk_at(chunks, last)) != MTMD_INPUT_CHUNK_TYPE_TEXT) {
            throw native_error(PyExc_ValueError, "the prompt must have text after the media marker " +
                               std::string(mtmd_default_marker()) + " (e.g. <|im_end|>\\n<|im_start|>assistant\\n)");
        }
        return last;
    }

    // The text before the audio (system turn + instruction) is the same for every call with the
    // same prompt options. When the KV cache still holds it from the previous call, only the
    // positions after it are dropped and the prefill starts at chunk 1 (the audio); otherwise the
    // cache is cleared and the prefill starts at chunk 0. Either way the cache then holds what a
    // prefill of the whole prompt from position 0 would. Returns the first chunk to prefill.
    size_t reuse_prefix(const mtmd_input_chunks * chunks, size_t last, Generation & g) {
        prefix_.clear();
        const mtmd_input_chunk * first = chunk_at(chunks, 0);
        if (last > 0 && mtmd_input_chunk_get_type(first) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t n = 0;
            const llama_token * t = mtmd_input_chunk_get_tokens_text(first, &n);
            prefix_.assign(t, t + n);
        }
        llama_memory_t mem = llama_get_memory(h_.ctx());
        if (!prefix_.empty() && prefix_ == kv_prefix_ && mem &&
            llama_memory_seq_rm(mem, 0, (llama_pos) prefix_.size(), -1)) {
            g.n_cached_tokens = (int64_t) prefix_.size();
            return 1;
        }
        kv_prefix_.clear();
        if (mem) llama_memory_clear(mem, true);
        return 0;
    }

    // Decodes chunks [first, last] after the cached prefix; returns the next position.
    llama_pos prefill(const mtmd_input_chunks * chunks, size_t first, size_t last, Generation & g) {
        llama_context * ctx = h_.ctx();
        mtmd_context * mctx = h_.mtmd();
        llama_pos n_past = (llama_pos) g.n_cached_tokens;
        for (size_t i = first; i <= last; ++i) {
            const mtmd_input_chunk * c = chunk_at(chunks, i);
            if (mtmd_input_chunk_get_n_tokens(c) == 0) continue;  // audio below one frame
            auto t0 = std::chrono::steady_clock::now();
            int32_t rc;
            llama_pos new_past = n_past;
            if (mtmd_input_chunk_get_type(c) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
                rc = mtmd_helper_eval_chunk_single(mctx, ctx, c, n_past, 0, (int32_t) n_batch_, i == last, &new_past);
                g.prefill_ms += ms_since(t0);
            } else {
                rc = mtmd_encode_chunk(mctx, c);
                g.encode_ms += ms_since(t0);
                if (rc != 0) throw native_error(PyExc_RuntimeError, "the audio encoder failed (code " + std::to_string(rc) + ")");
                t0 = std::chrono::steady_clock::now();
                rc = mtmd_helper_decode_image_chunk(mctx, ctx, c, mtmd_get_output_embd(mctx), n_past, 0,
                                                    (int32_t) n_batch_, &new_past, nullptr, nullptr);
                g.prefill_ms += ms_since(t0);
            }
            if (rc != 0) {
                throw native_error(PyExc_RuntimeError, "prefill failed (code " + std::to_string(rc) + ") at chunk " + std::to_string(i));
            }
            if (i == 0 && !prefix_.empty()) kv_prefix_ = prefix_;  // positions [0, prefix) now hold it
            n_past = new_past;
        }
        return n_past;
    }

    // Greedy decoding: the argmax of the last logits (the first maximum on ties, like torch.argmax)
    // until an end-of-generation token, max_new_tokens or a full context. ignore_eos (benchmarks):
    // the argmax over the non-EOG tokens, so exactly max_new_tokens come out.
    void decode(llama_pos n_past, int max_new_tokens, bool return_logits, bool ignore_eos, Generation & g) {
        llama_context * ctx = h_.ctx();
        const llama_vocab * vocab = h_.vocab();
        const int32_t n_vocab = h_.n_vocab();
        if (return_logits) g.n_vocab = n_vocab;
        const auto t0 = std::chrono::steady_clock::now();
        for (int step = 0; step < max_new_tokens && n_past < (llama_pos) n_ctx_; ++step) {
            const float * logits = llama_get_logits_ith(ctx, -1);
            if (!logits) throw native_error(PyExc_RuntimeError, "no logits after decoding");
            llama_token tok = (llama_token) (std::max_element(logits, logits + n_vocab) - logits);
            if (return_logits) g.logits.insert(g.logits.end(), logits, logits + n_vocab);
            if (ignore_eos) tok = best_non_eog(logits, tok);
            if (llama_vocab_is_eog(vocab, tok)) break;
            g.tokens.push_back(tok);
            if (step + 1 == max_new_tokens || n_past + 1 >= (llama_pos) n_ctx_) break;  // no logits needed
            const int32_t rc = llama_decode(ctx, llama_batch_get_one(&tok, 1));
            if (rc != 0) {
                throw native_error(PyExc_RuntimeError, "llama_decode failed (code " + std::to_string(rc) +
                                                       ") at position " + std::to_string(n_past));
            }
            ++n_past;
            ++g.n_decoded_tokens;
        }
        g.decode_ms = ms_since(t0);
    }

    // n_ctx=0: a context of the smallest multiple of AUTO_CTX_STEP cells holding n tokens (at most
    // the training context), recreated only when an input needs more than the current one
    void fit_context(int64_t n) {
        const int64_t cap = std::max<int64_t>(llama_model_n_ctx_train(h_.model()), AUTO_CTX_STEP);
        const int64_t want = std::min(cap, (n + AUTO_CTX_STEP - 1) / AUTO_CTX_STEP * AUTO_CTX_STEP);
        if (want <= (int64_t) n_ctx_) return;
        kv_prefix_.clear();
        cparams_.n_ctx = (uint32_t) want;
        h_.create_context(cparams_);  // on failure the model is closed: it cannot run without one
        n_ctx_ = llama_n_ctx(h_.ctx());
    }

    // tok when it is not an end-of-generation token, else the highest-scoring token that is not
    llama_token best_non_eog(const float * logits, llama_token tok) const {
        const llama_vocab * vocab = h_.vocab();
        if (!llama_vocab_is_eog(vocab, tok)) return tok;
        llama_token best = -1;
        for (int32_t i = 0; i < h_.n_vocab(); ++i) {
            if (!llama_vocab_is_eog(vocab, i) && (best < 0 || logits[i] > logits[best])) best = i;
        }
        return best < 0 ? tok : best;
    }

    funasr_py::llama_handles h_;
    std::string mmproj_path_;
    llama_context_params cparams_{};
    bool auto_ctx_ = false;
    uint32_t n_ctx_ = 0, n_batch_ = 0;
    int sample_rate_ = 16000;
    std::vector<llama_token> prefix_;     // this call's text before the audio
    std::vector<llama_token> kv_prefix_;  // the prompt text the KV cache holds at positions [0, size)
};

}  // namespace

void register_asr_bindings(py::module_ & m) {
    py::class_<Generation>(m, "Generation", "What one AsrModel.generate call produced and what it cost.")
        .def_readonly("tokens", &Generation::tokens, "generated ids, without the end-of-generation token")
        .def_readonly("n_prompt_tokens", &Generation::n_prompt_tokens, "prompt length, audio rows included")
        .def_readonly("n_audio_tokens", &Generation::n_audio_tokens)
        .def_readonly("n_cached_tokens", &Generation::n_cached_tokens,
                      "leading prompt tokens kept in the KV cache from the previous call (not prefilled again)")
        .def_readonly("n_decoded_tokens", &Generation::n_decoded_tokens, "single-token llama_decode calls in decode_ms")
        .def_readonly("frontend_ms", &Generation::frontend_ms, "fbank + LFR (in mtmd_tokenize)")
        .def_readonly("encode_ms", &Generation::encode_ms)
        .def_readonly("prefill_ms", &Generation::prefill_ms)
        .def_readonly("decode_ms", &Generation::decode_ms)
        .def_property_readonly("logits", &Generation::logits_array,
                               "return_logits: float32 [n_steps, n_vocab], the logits each step's argmax was taken\n"
                               "from (incl. a final EOG step); else None");

    py::class_<AsrModel> cls(m, "AsrModel",
        "Fun-ASR-Nano: the GGUF LLM (libllama) + the funasr mmproj (libmtmd) for greedy transcription.\n"
        "Calls from several threads on one object are serialized.");
    funasr_py::bind_lifetime(cls);
    cls.def(py::init([](const py::object & llm, const py::object & mmproj, int n_threads, int n_gpu_layers, bool use_gpu,
                         int n_ctx, int n_batch, const std::string & flash_attn, const std::string & kv_type) {
                 return new AsrModel(llm, mmproj, {n_threads, n_gpu_layers, n_ctx, n_batch, flash_attn, kv_type}, use_gpu);
             }),
             py::arg("llm_path"), py::arg("mmproj_path"), py::kw_only(), py::arg("n_threads") = 0,
             py::arg("n_gpu_layers") = -1, py::arg("use_gpu") = true, py::arg("n_ctx") = 0,
             py::arg("n_batch") = 512, py::arg("flash_attn") = "auto", py::arg("kv_type") = "f16",
             "Load the LLM and mmproj GGUFs (str or os.PathLike). n_threads=0: all cores; n_gpu_layers=-1:\n"
             "all LLM layers on the GPU; use_gpu: the mmproj on the GPU; n_ctx=0: the KV cache is sized to each\n"
             "input (multiples of 1024 tokens, grown when needed); flash_attn 'auto'/'on'/'off';\n"
             "kv_type 'f16'/'f32'/'bf16'/'q8_0'. Raises FileNotFoundError / ValueError naming the path, and\n"
             "ValueError when the mmproj's embedding width does not match the LLM's.")
        .def("generate", &AsrModel::generate, py::arg("samples"), py::arg("prompt"), py::kw_only(),
             py::arg("max_new_tokens") = 512, py::arg("return_logits") = false, py::arg("ignore_eos") = false,
             "Transcribe samples (1-D float, 16 kHz mono) with prompt, the full ChatML text containing the\n"
             "media marker '<__media__>' once (see funasr_cpp.prompt.build_prompt). Greedy decoding until an\n"
             "end-of-generation token or max_new_tokens (ignore_eos, for benchmarks: never stop early; EOG\n"
             "tokens are skipped). The text before the audio stays in the KV cache for the next call with\n"
             "the same instruction (Generation.n_cached_tokens). Returns a Generation.")
        .def("token_bytes", &AsrModel::token_bytes, py::arg("ids"), py::kw_only(), py::arg("skip_special") = true,
             "The concatenated bytes of ids (skip_special: control tokens such as <|im_end|> give nothing).")
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
        .def_property_readonly("sample_rate", &AsrModel::sample_rate)
        .def_property_readonly("media_marker", [](AsrModel &) { return std::string(mtmd_default_marker()); });
}
