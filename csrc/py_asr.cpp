// funasr_cpp._core.AsrModel: Fun-ASR-Nano speech recognition through libllama + libmtmd.
// One object owns the LLM (llama_model + llama_context) and the funasr mmproj (mtmd_context).
// generate(): the prompt with one media marker is tokenized by mtmd (text around the marker
// tokenized separately, special tokens parsed), the audio is encoded by the mmproj, everything
// is prefilled from an empty KV cache and the answer is decoded greedily.
// Native work runs with the GIL released and the object's mutex held (taken in that order).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ggml.h"
#include "gguf.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "py_common.h"

namespace py = pybind11;


namespace {

using funasr_py::native_error;

[[noreturn]] void raise(PyObject * type, const std::string & msg) {
    PyErr_SetString(type, msg.c_str());
    throw py::error_already_set();
}

std::string with_errors(const std::string & msg) {
    const std::string e = funasr_py::errors_text();
    return e.empty() ? msg : msg + ": " + e;
}

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

class AsrModel {
public:
    AsrModel(const py::object & llm_obj, const py::object & mmproj_obj, int n_threads, int n_gpu_layers,
             bool use_gpu, int n_ctx, int n_batch, const std::string & flash_attn, const std::string & kv_type)
        : llm_path_(funasr_py::fspath(llm_obj)), mmproj_path_(funasr_py::fspath(mmproj_obj)) {
        funasr_py::check_gguf_file(llm_path_);
        funasr_py::check_gguf_file(mmproj_path_);
        if (n_ctx < 0) raise(PyExc_ValueError, "n_ctx must be >= 0 (0 = sized to each input), got " + std::to_string(n_ctx));
        if (n_batch < 1) raise(PyExc_ValueError, "n_batch must be >= 1, got " + std::to_string(n_batch));
        const int32_t threads = funasr_py::thread_count(n_threads);
        const llama_flash_attn_type fa = funasr_py::parse_flash_attn(flash_attn);
        const ggml_type kv = funasr_py::parse_kv_type(kv_type);

        enum { OK, NO_MODEL, MISMATCH, NO_MTMD, NO_AUDIO, NO_CTX } failure = OK;
        std::string errors;
        int64_t llm_width = 0, mm_width = 0;
        {
            py::gil_scoped_release nogil;
            funasr_py::errors_begin();
            llama_model_params mp = llama_model_default_params();
            mp.n_gpu_layers = n_gpu_layers;
            model_ = llama_model_load_from_file(llm_path_.c_str(), mp);
            if (!model_) {
                failure = NO_MODEL;
            } else {
                llm_width = llama_model_n_embd_inp(model_);
                mm_width = mmproj_projection_dim(mmproj_path_);
                if (mm_width > 0 && mm_width != llm_width) {
                    failure = MISMATCH;
                } else {
                    mtmd_context_params mcp = mtmd_context_params_default();
                    mcp.use_gpu = use_gpu;
                    mcp.print_timings = false;
                    mcp.n_threads = threads;
                    mcp.flash_attn_type = fa;
                    mctx_ = mtmd_init_from_file(mmproj_path_.c_str(), model_, mcp);
                    if (!mctx_) {
                        failure = NO_MTMD;
                    } else if (!mtmd_support_audio(mctx_)) {
                        failure = NO_AUDIO;
                    } else {
                        llama_context_params & cp = cparams_;
                        cp = llama_context_default_params();
                        auto_ctx_ = n_ctx == 0;
                        cp.n_ctx = auto_ctx_ ? AUTO_CTX_STEP : (uint32_t) n_ctx;
                        cp.n_batch = (uint32_t) n_batch;
                        // llama.cpp reserves logits for a whole ubatch (n_ubatch x n_vocab floats: 311 MB at
                        // 512); we only ever read the last token's, and prefill is compute-bound either way
                        cp.n_ubatch = (uint32_t) std::min(n_batch, 128);
                        cp.n_seq_max = 1;
                        cp.n_threads = cp.n_threads_batch = threads;
                        cp.flash_attn_type = fa;
                        cp.type_k = cp.type_v = kv;
                        ctx_ = llama_init_from_model(model_, cp);
                        if (!ctx_) failure = NO_CTX;
                    }
                }
            }
            errors = funasr_py::errors_text();
            if (failure != OK) free_all();
        }
        const std::string why = errors.empty() ? "" : ": " + errors;
        switch (failure) {
            case OK: break;
            case NO_MODEL: raise(PyExc_ValueError, "cannot load GGUF model " + llm_path_ + why);
            case MISMATCH:
                raise(PyExc_ValueError, "the mmproj's embedding width does not match the LLM's: mmproj " + mmproj_path_ +
                      " projects to " + std::to_string(mm_width) + " but the LLM " + llm_path_ + " has n_embd " +
                      std::to_string(llm_width) + " (the two files are not a pair)");
            case NO_MTMD: raise(PyExc_ValueError, "cannot load mmproj " + mmproj_path_ + " for " + llm_path_ + why);
            case NO_AUDIO: raise(PyExc_ValueError, "mmproj " + mmproj_path_ + " has no audio encoder");
            case NO_CTX: raise(PyExc_RuntimeError, "cannot create a llama.cpp context for " + llm_path_ + why);
        }
        vocab_ = llama_model_get_vocab(model_);
        n_vocab_ = llama_vocab_n_tokens(vocab_);
        n_embd_ = llama_model_n_embd(model_);
        n_ctx_ = llama_n_ctx(ctx_);
        n_batch_ = llama_n_batch(ctx_);
        sample_rate_ = mtmd_get_audio_sample_rate(mctx_);
        marker_ = mtmd_default_marker();
    }

    ~AsrModel() { free_all(); }
    AsrModel(const AsrModel &) = delete;
    AsrModel & operator=(const AsrModel &) = delete;

    void close() {
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> lock(mu_);
        free_all();
    }

    bool closed() const { return closed_.load(); }

    py::dict generate(const py::array & samples_obj, const std::string & prompt, int max_new_tokens, bool return_logits,
                      bool ignore_eos) {
        check_open();
        if (max_new_tokens < 0) raise(PyExc_ValueError, "max_new_tokens must be >= 0, got " + std::to_string(max_new_tokens));
        if (samples_obj.ndim() != 1) {
            raise(PyExc_ValueError, "samples must be a 1-D array (16 kHz mono), got " + std::to_string(samples_obj.ndim()) + " dimensions");
        }
        if (samples_obj.dtype().kind() != 'f') {
            raise(PyExc_TypeError, "samples must be floating point (16 kHz mono in [-1, 1]), got dtype " +
                                   py::str(samples_obj.dtype()).cast<std::string>());
        }
        auto arr = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(samples_obj);
        if (!arr) throw py::error_already_set();
        size_t n_markers = 0;
        for (size_t p = prompt.find(marker_); p != std::string::npos; p = prompt.find(marker_, p + marker_.size())) ++n_markers;
        if (n_markers != 1) {
            raise(PyExc_ValueError, "the prompt must contain the media marker " + marker_ + " exactly once, found " +
                                    std::to_string(n_markers));
        }
        // mtmd rejects an empty bitmap and asserts on a one-sample one: below one frame (400 samples)
        // no audio rows come out either way, so pad those to two zero samples
        std::vector<float> samples(arr.data(), arr.data() + arr.size());
        if (samples.size() < 2) samples.resize(2, 0.0f);

        std::vector<llama_token> out;
        std::vector<float> all_logits;  // return_logits: the logits each generated token was picked from
        int64_t n_prompt = 0, n_audio = 0, n_decoded = 0;  // n_decoded: llama_decode calls after the prefill
        int64_t n_cached = 0;  // prompt tokens whose KV came from the previous call
        double frontend_ms = 0, encode_ms = 0, prefill_ms = 0, decode_ms = 0;
        {
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(mu_);
            if (!ctx_) throw native_error(PyExc_RuntimeError, "AsrModel is closed: " + llm_path_);
            funasr_py::errors_begin();
            struct bitmap_del { void operator()(mtmd_bitmap * b) const { mtmd_bitmap_free(b); } };
            struct chunks_del { void operator()(mtmd_input_chunks * c) const { mtmd_input_chunks_free(c); } };
            std::unique_ptr<mtmd_bitmap, bitmap_del> bitmap(mtmd_bitmap_init_from_audio(samples.size(), samples.data()));
            std::unique_ptr<mtmd_input_chunks, chunks_del> chunks(mtmd_input_chunks_init());
            if (!bitmap || !chunks) throw native_error(PyExc_MemoryError, "cannot allocate the mtmd input");
            mtmd_input_text text{prompt.c_str(), prompt.size(), /*add_special*/ false, /*parse_special*/ true};
            const mtmd_bitmap * bitmaps[1] = {bitmap.get()};
            const auto t_tok = std::chrono::steady_clock::now();
            const int32_t rc = mtmd_tokenize(mctx_, chunks.get(), &text, bitmaps, 1);  // runs the fbank + LFR frontend
            frontend_ms = ms_since(t_tok);
            if (rc != 0) {
                throw native_error(rc == 1 ? PyExc_ValueError : PyExc_RuntimeError,
                                with_errors("cannot tokenize the prompt and audio (mtmd_tokenize code " + std::to_string(rc) + ")"));
            }
            const size_t n_chunks = mtmd_input_chunks_size(chunks.get());
            for (size_t i = 0; i < n_chunks; ++i) {
                const mtmd_input_chunk * c = mtmd_input_chunks_get(chunks.get(), i);
                const int64_t n = (int64_t) mtmd_input_chunk_get_n_tokens(c);
                n_prompt += n;
                if (mtmd_input_chunk_get_type(c) != MTMD_INPUT_CHUNK_TYPE_TEXT) n_audio += n;
            }
            if (n_prompt == 0) throw native_error(PyExc_ValueError, "the prompt is empty");
            if (auto_ctx_) fit_context(n_prompt + max_new_tokens);
            if (n_prompt > (int64_t) n_ctx_) {
                throw native_error(PyExc_ValueError, "the prompt (" + std::to_string(n_prompt) + " tokens, " +
                                std::to_string(n_audio) + " of them audio) does not fit the context (n_ctx=" +
                                std::to_string(n_ctx_) + ")");
            }
            // the last non-empty chunk must produce the logits for the first generated token
            size_t last = n_chunks;
            for (size_t i = 0; i < n_chunks; ++i) {
                if (mtmd_input_chunk_get_n_tokens(mtmd_input_chunks_get(chunks.get(), i)) > 0) last = i;
            }
            if (mtmd_input_chunk_get_type(mtmd_input_chunks_get(chunks.get(), last)) != MTMD_INPUT_CHUNK_TYPE_TEXT) {
                throw native_error(PyExc_ValueError, "the prompt must have text after the media marker " + marker_ +
                                " (e.g. <|im_end|>\\n<|im_start|>assistant\\n)");
            }

            // The text before the audio (system turn + instruction) is the same for every call with the
            // same prompt options: when the KV cache still holds it from the previous call, only the
            // positions after it are dropped and the prefill starts at the audio. Otherwise every call
            // starts from an empty cache. Either way the cache content equals a fresh prefill's.
            std::vector<llama_token> prefix;
            const mtmd_input_chunk * first = mtmd_input_chunks_get(chunks.get(), 0);
            if (last > 0 && mtmd_input_chunk_get_type(first) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
                size_t n = 0;
                const llama_token * t = mtmd_input_chunk_get_tokens_text(first, &n);
                prefix.assign(t, t + n);
            }
            llama_memory_t mem = llama_get_memory(ctx_);
            size_t start = 0;
            llama_pos n_past = 0;
            if (!prefix.empty() && prefix == kv_prefix_ && mem && llama_memory_seq_rm(mem, 0, (llama_pos) prefix.size(), -1)) {
                start = 1;
                n_past = (llama_pos) prefix.size();
                n_cached = (int64_t) prefix.size();
            } else {
                kv_prefix_.clear();
                if (mem) llama_memory_clear(mem, true);
            }

            // prefill: text chunks decoded as tokens, audio chunks encoded then decoded as embeddings
            for (size_t i = start; i <= last; ++i) {
                const mtmd_input_chunk * c = mtmd_input_chunks_get(chunks.get(), i);
                if (mtmd_input_chunk_get_n_tokens(c) == 0) continue;  // audio below one frame
                auto t0 = std::chrono::steady_clock::now();
                int32_t r;
                llama_pos new_past = n_past;
                if (mtmd_input_chunk_get_type(c) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
                    r = mtmd_helper_eval_chunk_single(mctx_, ctx_, c, n_past, 0, (int32_t) n_batch_, i == last, &new_past);
                    prefill_ms += ms_since(t0);
                } else {
                    r = mtmd_encode_chunk(mctx_, c);
                    encode_ms += ms_since(t0);
                    if (r != 0) throw native_error(PyExc_RuntimeError, with_errors("the audio encoder failed (code " + std::to_string(r) + ")"));
                    t0 = std::chrono::steady_clock::now();
                    r = mtmd_helper_decode_image_chunk(mctx_, ctx_, c, mtmd_get_output_embd(mctx_), n_past, 0,
                                                       (int32_t) n_batch_, &new_past, nullptr, nullptr);
                    prefill_ms += ms_since(t0);
                }
                if (r != 0) throw native_error(PyExc_RuntimeError, with_errors("prefill failed (code " + std::to_string(r) + ") at chunk " + std::to_string(i)));
                if (i == 0 && !prefix.empty()) kv_prefix_ = prefix;  // positions [0, prefix) now hold it
                n_past = new_past;
            }

            // greedy decoding: argmax of the last logits (the first maximum on ties, like torch.argmax);
            // ignore_eos (benchmarks): the argmax over the non-EOG tokens, so exactly max_new_tokens come out
            auto t0 = std::chrono::steady_clock::now();
            for (int step = 0; step < max_new_tokens && n_past < (llama_pos) n_ctx_; ++step) {
                const float * logits = llama_get_logits_ith(ctx_, -1);
                if (!logits) throw native_error(PyExc_RuntimeError, with_errors("no logits after decoding"));
                llama_token tok = (llama_token) (std::max_element(logits, logits + n_vocab_) - logits);
                if (return_logits) all_logits.insert(all_logits.end(), logits, logits + n_vocab_);
                if (ignore_eos) tok = best_non_eog(logits, tok);
                if (llama_vocab_is_eog(vocab_, tok)) break;
                out.push_back(tok);
                if (step + 1 == max_new_tokens || n_past + 1 >= (llama_pos) n_ctx_) break;  // no logits needed
                llama_token t = tok;
                const int32_t r = llama_decode(ctx_, llama_batch_get_one(&t, 1));
                if (r != 0) throw native_error(PyExc_RuntimeError, with_errors("llama_decode failed (code " + std::to_string(r) + ") at position " + std::to_string(n_past)));
                ++n_past;
                ++n_decoded;
            }
            decode_ms = ms_since(t0);
        }
        py::dict d;
        d["tokens"] = py::cast(out);
        d["n_prompt_tokens"] = n_prompt;
        d["n_audio_tokens"] = n_audio;
        d["n_cached_tokens"] = n_cached;
        d["frontend_ms"] = frontend_ms;
        d["encode_ms"] = encode_ms;
        d["prefill_ms"] = prefill_ms;
        d["decode_ms"] = decode_ms;
        d["n_decoded_tokens"] = n_decoded;
        if (return_logits) {
            const py::ssize_t rows = (py::ssize_t) (all_logits.size() / (size_t) n_vocab_);
            py::array_t<float> a({rows, (py::ssize_t) n_vocab_});
            std::copy(all_logits.begin(), all_logits.end(), a.mutable_data());
            d["logits"] = a;
        }
        return d;
    }

    // The bytes of ids rendered like HF decode: skip_special drops CONTROL tokens (<|im_end|>, ...).
    py::bytes token_bytes(const std::vector<int64_t> & ids64, bool skip_special) {
        check_open();
        std::vector<llama_token> ids;
        ids.reserve(ids64.size());
        for (size_t i = 0; i < ids64.size(); ++i) {
            if (ids64[i] < 0 || ids64[i] >= n_vocab_) {
                raise(PyExc_ValueError, "token id " + std::to_string(ids64[i]) + " at index " + std::to_string(i) +
                                        " is out of range [0, " + std::to_string(n_vocab_) + ")");
            }
            ids.push_back((llama_token) ids64[i]);
        }
        std::string bytes;
        {
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(mu_);
            if (!ctx_) throw native_error(PyExc_RuntimeError, "AsrModel is closed: " + llm_path_);
            std::string buf(64, '\0');
            for (llama_token t : ids) {
                // special=false: CONTROL tokens render as nothing; user-defined ones always render
                int32_t n = llama_token_to_piece(vocab_, t, buf.data(), (int32_t) buf.size(), 0, !skip_special);
                if (n < 0) {
                    buf.resize((size_t) -n);
                    n = llama_token_to_piece(vocab_, t, buf.data(), (int32_t) buf.size(), 0, !skip_special);
                }
                if (n < 0) throw native_error(PyExc_ValueError, "cannot render token " + std::to_string(t));
                bytes.append(buf.data(), (size_t) n);
            }
        }
        return py::bytes(bytes);
    }

    py::str detokenize(const std::vector<int64_t> & ids, bool skip_special) {
        const std::string bytes = token_bytes(ids, skip_special);
        PyObject * s = PyUnicode_DecodeUTF8(bytes.data(), (Py_ssize_t) bytes.size(), "replace");
        if (!s) throw py::error_already_set();
        return py::reinterpret_steal<py::str>(s);
    }

    std::vector<llama_token> tokenize(const std::string & text) {
        check_open();
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> lock(mu_);
        if (!ctx_) throw native_error(PyExc_RuntimeError, "AsrModel is closed: " + llm_path_);
        return funasr_py::tokenize(vocab_, text, /*add_special*/ false, /*parse_special*/ true);
    }

    bool is_eog(int64_t id) const {
        check_open();
        return id >= 0 && id < n_vocab_ && llama_vocab_is_eog(vocab_, (llama_token) id);
    }

    const std::string & llm_path() const { return llm_path_; }
    const std::string & mmproj_path() const { return mmproj_path_; }
    int32_t n_vocab() const { check_open(); return n_vocab_; }
    int32_t n_embd() const { check_open(); return n_embd_; }
    uint32_t n_ctx() const { check_open(); return n_ctx_; }
    int sample_rate() const { check_open(); return sample_rate_; }
    const std::string & marker() const { return marker_; }

    std::string repr() const {
        if (closed()) return "<AsrModel " + llm_path_ + " (closed)>";
        return "<AsrModel " + llm_path_ + " + " + mmproj_path_ + " n_embd=" + std::to_string(n_embd_) +
               " n_ctx=" + std::to_string(n_ctx_) + ">";
    }

private:
    static constexpr uint32_t AUTO_CTX_STEP = 1024;

    // n_ctx=0: a context of the smallest multiple of AUTO_CTX_STEP cells holding n tokens (at most
    // the training context), recreated only when an input needs more than the current one
    void fit_context(int64_t n) {
        const int64_t cap = std::max<int64_t>(llama_model_n_ctx_train(model_), AUTO_CTX_STEP);
        const int64_t want = std::min(cap, (n + AUTO_CTX_STEP - 1) / AUTO_CTX_STEP * AUTO_CTX_STEP);
        if (want <= (int64_t) n_ctx_) return;
        llama_free(ctx_);
        kv_prefix_.clear();
        cparams_.n_ctx = (uint32_t) want;
        ctx_ = llama_init_from_model(model_, cparams_);
        if (!ctx_) {
            closed_ = true;  // the model cannot be used without a context
            throw native_error(PyExc_MemoryError, with_errors("cannot create a llama.cpp context of " + std::to_string(want) + " tokens"));
        }
        n_ctx_ = llama_n_ctx(ctx_);
    }

    // tok when it is not an end-of-generation token, else the highest-scoring token that is not
    llama_token best_non_eog(const float * logits, llama_token tok) const {
        if (!llama_vocab_is_eog(vocab_, tok)) return tok;
        llama_token best = -1;
        for (int32_t i = 0; i < n_vocab_; ++i) {
            if (!llama_vocab_is_eog(vocab_, i) && (best < 0 || logits[i] > logits[best])) best = i;
        }
        return best < 0 ? tok : best;
    }

    void check_open() const {
        if (closed_.load()) raise(PyExc_RuntimeError, "AsrModel is closed: " + llm_path_);
    }

    void free_all() {
        closed_ = true;
        if (mctx_) mtmd_free(mctx_);
        if (ctx_) llama_free(ctx_);
        if (model_) llama_model_free(model_);
        mctx_ = nullptr;
        ctx_ = nullptr;
        model_ = nullptr;
        vocab_ = nullptr;
    }

    std::string llm_path_, mmproj_path_;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    mtmd_context * mctx_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    int32_t n_vocab_ = 0, n_embd_ = 0;
    uint32_t n_ctx_ = 0, n_batch_ = 0;
    bool auto_ctx_ = false;
    std::vector<llama_token> kv_prefix_;  // the prompt text the KV cache holds at positions [0, size)
    llama_context_params cparams_{};
    int sample_rate_ = 16000;
    std::string marker_ = "<__media__>";
    std::mutex mu_;
    std::atomic<bool> closed_{false};
};

}  // namespace

void register_asr_bindings(py::module_ & m) {
    py::class_<AsrModel>(m, "AsrModel",
        "Fun-ASR-Nano: the GGUF LLM (libllama) + the funasr mmproj (libmtmd) for greedy transcription.\n"
        "Calls from several threads on one object are serialized.")
        .def(py::init<const py::object &, const py::object &, int, int, bool, int, int, const std::string &,
                      const std::string &>(),
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
             "media marker '<__media__>' once (see funasr_cpp.prompt.build_prompt). Greedy decoding from a\n"
             "fresh prefill (see n_cached_tokens) until an end-of-generation token or max_new_tokens (ignore_eos, for benchmarks:\n"
             "never stop early; EOG tokens are skipped). Returns {'tokens': generated ids without the EOG,\n"
             "'n_prompt_tokens': prompt length incl. audio rows, 'n_audio_tokens', 'n_cached_tokens' (leading\n"
             "prompt tokens kept in the KV cache from the previous call: not prefilled again), 'frontend_ms' (fbank + LFR,\n"
             "in mtmd_tokenize), 'encode_ms', 'prefill_ms', 'decode_ms', 'n_decoded_tokens' (single-token\n"
             "llama_decode calls in decode_ms)}; with return_logits also 'logits': float32\n"
             "[n_steps, n_vocab], the logits each step's argmax was taken from (incl. a final EOG step).")
        .def("token_bytes", &AsrModel::token_bytes, py::arg("ids"), py::kw_only(), py::arg("skip_special") = true,
             "The concatenated bytes of ids (skip_special: control tokens such as <|im_end|> give nothing).")
        .def("detokenize", &AsrModel::detokenize, py::arg("ids"), py::kw_only(), py::arg("skip_special") = true,
             "ids -> text like HF batch_decode(skip_special_tokens=True); invalid UTF-8 becomes U+FFFD.")
        .def("tokenize", &AsrModel::tokenize, py::arg("text"), "Text -> ids (no BOS, special tokens parsed).")
        .def("is_eog", &AsrModel::is_eog, py::arg("id"))
        .def("close", &AsrModel::close, "Free the models and contexts (idempotent); later calls raise RuntimeError.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](AsrModel & self, const py::args &) { self.close(); })
        .def("__repr__", &AsrModel::repr)
        .def_property_readonly("closed", &AsrModel::closed)
        .def_property_readonly("llm_path", &AsrModel::llm_path)
        .def_property_readonly("mmproj_path", &AsrModel::mmproj_path)
        .def_property_readonly("n_vocab", &AsrModel::n_vocab)
        .def_property_readonly("n_embd", &AsrModel::n_embd)
        .def_property_readonly("n_ctx", &AsrModel::n_ctx)
        .def_property_readonly("sample_rate", &AsrModel::sample_rate)
        .def_property_readonly("media_marker", &AsrModel::marker);
}
