// funasr_cpp._core.LlamaModel: a GGUF LLM through libllama (funasr_cpp.llm): tokenizer and the
// logits of every position of one sequence.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common.h"
#include "llama.h"
#include "engine/tokens.h"
#include "python/native.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace py = pybind11;
using funasr::errc;

namespace {

class LlamaModel {
public:
    // without the GIL (the binding's factory releases it)
    LlamaModel(const std::string & path, const funasr::context_options & opts) : h_("LlamaModel", path, opts.device, opts.n_gpu_layers) {
        if (opts.n_ctx < 0) {
            throw funasr::error(errc::invalid_argument, "n_ctx must be >= 0 (0 = the model's training context), got " +
                                                 std::to_string(opts.n_ctx));
        }
        llama_context_params cp = funasr::llama_handles::context_params(opts);  // n_ubatch: min(n_batch, 512)
        cp.n_outputs_max = 0;  // 0 means n_batch: every token of a batch may output logits
        h_.create_context(cp);
        n_ctx_ = llama_n_ctx(h_.ctx());      // padded by llama.cpp (multiple of 256)
        n_batch_ = llama_n_batch(h_.ctx());  // capped at n_ctx
        const llama_vocab * vocab = h_.vocab();
        bos_ = llama_vocab_bos(vocab);
        eos_ = llama_vocab_eos(vocab);
        for (llama_token t = 0; t < h_.n_vocab(); ++t) {
            if (llama_vocab_is_eog(vocab, t)) eog_.push_back(t);
        }
    }

    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) {
        h_.check_open();
        return funasr_py::locked(h_, [&] { return funasr::tokenize(h_.vocab(), text, add_special, parse_special); });
    }

    py::str detokenize(const py::object & tokens, bool unparse_special) {
        h_.check_open();
        const std::vector<llama_token> ids = funasr_py::token_ids(tokens, h_.n_vocab());
        // tokens may end inside a UTF-8 sequence (byte-level BPE): never fail on that
        return funasr_py::utf8_text(funasr_py::locked(h_, [&] { return common_detokenize(h_.vocab(), ids, unparse_special); }));
    }

    py::bytes token_to_piece(int64_t id, bool special) {
        h_.check_open();
        if (id < 0 || id >= h_.n_vocab()) {
            throw funasr::error(errc::invalid_argument, "token id " + std::to_string(id) + " is out of range [0, " +
                                                 std::to_string(h_.n_vocab()) + ")");
        }
        return py::bytes(funasr_py::locked(h_, [&] { return common_token_to_piece(h_.vocab(), (llama_token) id, special); }));
    }

    // Logits of every position of `tokens` decoded as one sequence from position 0.
    py::array_t<float> eval_logits(const py::object & tokens) {
        h_.check_open();
        const std::vector<llama_token> ids = funasr_py::token_ids(tokens, h_.n_vocab());
        if (ids.empty()) throw funasr::error(errc::invalid_argument, "eval_logits needs at least one token");
        if (ids.size() > n_ctx_) {
            throw funasr::error(errc::invalid_argument, std::to_string(ids.size()) + " tokens do not fit the context (n_ctx=" +
                                                 std::to_string(n_ctx_) + ") of " + h_.path());
        }
        const size_t n = ids.size(), n_vocab = (size_t) h_.n_vocab();
        py::array_t<float> out({(py::ssize_t) n, (py::ssize_t) n_vocab});
        float * dst = out.mutable_data();  // filled below without the GIL; nothing else sees it yet
        funasr_py::locked(h_, [&] {
            funasr::log_capture cap;
            llama_context * ctx = h_.ctx();
            llama_memory_t mem = llama_get_memory(ctx);
            if (mem) llama_memory_clear(mem, true);  // every call starts from an empty KV cache
            const uint32_t step = n_batch_;
            llama_batch batch = llama_batch_init((int32_t) step, 0, 1);
            struct batch_guard { llama_batch & b; ~batch_guard() { llama_batch_free(b); } } guard{batch};
            for (size_t start = 0; start < n; start += step) {
                const int32_t m = (int32_t) std::min<size_t>(step, n - start);
                batch.n_tokens = m;
                for (int32_t i = 0; i < m; ++i) {
                    batch.token[i] = ids[start + i];
                    batch.pos[i] = (llama_pos) (start + i);
                    batch.n_seq_id[i] = 1;
                    batch.seq_id[i][0] = 0;
                    batch.logits[i] = 1;  // logits for every position, not only the last
                }
                const int32_t rc = llama_decode(ctx, batch);
                const float * logits = rc == 0 ? llama_get_logits(ctx) : nullptr;
                if (!logits) {
                    throw funasr::error(errc::runtime, "llama_decode failed (code " + std::to_string(rc) + ") at token " +
                                                           std::to_string(start) + " of " + std::to_string(n) + " for " + h_.path());
                }
                std::memcpy(dst + start * n_vocab, logits, sizeof(float) * (size_t) m * n_vocab);
            }
        });
        return out;
    }

    bool is_eog(int64_t id) const {
        h_.check_open();
        return id >= 0 && id < h_.n_vocab() && std::binary_search(eog_.begin(), eog_.end(), (llama_token) id);
    }

    // Cached at load; reading them still requires an open model, like every other call.
    funasr::llama_handles & handles() { return h_; }
    int32_t n_vocab() const { h_.check_open(); return h_.n_vocab(); }
    int32_t n_embd() const { h_.check_open(); return llama_model_n_embd(h_.model()); }
    uint32_t n_ctx() const { h_.check_open(); return n_ctx_; }
    uint32_t n_batch() const { h_.check_open(); return n_batch_; }
    std::string device() const { return funasr::device_name(h_.device()); }
    std::vector<llama_token> eog_ids() const { h_.check_open(); return eog_; }
    py::object bos() const { h_.check_open(); return token_or_none(bos_); }
    py::object eos() const { h_.check_open(); return token_or_none(eos_); }

    std::string repr() const {
        if (h_.closed()) return "<LlamaModel " + h_.path() + " (closed)>";
        return "<LlamaModel " + h_.path() + " n_vocab=" + std::to_string(h_.n_vocab()) + " n_embd=" +
               std::to_string(llama_model_n_embd(h_.model())) + " n_ctx=" + std::to_string(n_ctx_) + " device=" +
               device() + ">";
    }

private:
    static py::object token_or_none(llama_token t) {
        return t == LLAMA_TOKEN_NULL ? py::object(py::none()) : py::object(py::int_(t));
    }

    funasr::llama_handles h_;
    uint32_t n_ctx_ = 0, n_batch_ = 0;
    llama_token bos_ = LLAMA_TOKEN_NULL, eos_ = LLAMA_TOKEN_NULL;
    std::vector<llama_token> eog_;  // sorted
};

}  // namespace

void register_llm_bindings(py::module_ & m) {
    py::class_<LlamaModel> cls(m, "LlamaModel",
        "A GGUF LLM loaded with libllama (model + context): tokenizer and full-sequence logits.\n"
        "Calls from several threads on one object are serialized.");
    funasr_py::bind_lifetime(cls);
    cls.def(py::init([](const py::object & path, int n_ctx, int n_threads, const std::string & device, int n_gpu_layers,
                         int n_batch, const std::string & flash_attn, const std::string & kv_type) {
                 const std::string file = funasr_py::fspath(path);
                 py::gil_scoped_release nogil;  // loading reads the file
                 return new LlamaModel(file, {n_threads, n_gpu_layers, n_ctx, n_batch, flash_attn, kv_type, device});
             }),
             py::arg("path"), py::kw_only(), py::arg("n_ctx"), py::arg("n_threads"), py::arg("device"),
             py::arg("n_gpu_layers"), py::arg("n_batch"), py::arg("flash_attn"), py::arg("kv_type"),
             "Load the model at path (str or os.PathLike). n_threads=0: all cores; device: 'auto', 'cpu',\n"
             "'vulkan0' ... (as AsrModel's); n_gpu_layers=-1: all layers on that device;\n"
             "flash_attn: 'auto', 'on' or 'off'; kv_type: KV cache type 'f16', 'f32', 'bf16' or 'q8_0'.\n"
             "Raises FileNotFoundError / ValueError naming the path.")
        .def("tokenize", &LlamaModel::tokenize, py::arg("text"), py::kw_only(),
             py::arg("add_special") = false, py::arg("parse_special") = true,
             "Text -> token ids. parse_special: '<|im_start|>' etc. become their single special ids.")
        .def("detokenize", &LlamaModel::detokenize, py::arg("tokens"), py::kw_only(), py::arg("unparse_special") = true,
             "Token ids -> text (invalid UTF-8, e.g. a cut multi-byte character, becomes U+FFFD).")
        .def("token_to_piece", &LlamaModel::token_to_piece, py::arg("id"), py::kw_only(), py::arg("special") = true,
             "The bytes of one token (a byte-level token may be part of a UTF-8 character).")
        .def("eval_logits", &LlamaModel::eval_logits, py::arg("tokens"),
             "Decode tokens as one sequence from position 0 (the KV cache is cleared first) and return\n"
             "the logits of every position: float32 array [n_tokens, n_vocab].")
        .def("is_eog", &LlamaModel::is_eog, py::arg("id"), "Whether id ends generation (eos, eot, <|im_end|>, ...).")
        .def("__repr__", &LlamaModel::repr)
        .def_property_readonly("path", [](LlamaModel & self) { return self.handles().path(); })
        .def_property_readonly("n_vocab", &LlamaModel::n_vocab)
        .def_property_readonly("n_embd", &LlamaModel::n_embd)
        .def_property_readonly("n_ctx", &LlamaModel::n_ctx, "Context size in tokens (llama.cpp pads it to a multiple of 256).")
        .def_property_readonly("n_batch", &LlamaModel::n_batch, "Tokens per llama_decode call (at most n_ctx).")
        .def_property_readonly("device", &LlamaModel::device, "The device the model runs on ('cpu', 'vulkan0', ...).")
        .def_property_readonly("bos", &LlamaModel::bos, "Beginning-of-sequence id, or None.")
        .def_property_readonly("eos", &LlamaModel::eos, "End-of-sequence id, or None.")
        .def_property_readonly("eog_ids", &LlamaModel::eog_ids, "All end-of-generation ids, sorted.")
        .def_property_readonly("eos_ids", &LlamaModel::eog_ids, "Alias of eog_ids.");
}
