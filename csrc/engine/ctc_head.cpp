// CTC head, host side (see ctc_head.h). Upstream: funasr/models/fun_asr_nano/model.py,
// FunASRNano.inference_llm: ctc_logits = ctc.log_softmax(ctc_decoder(encoder_out)); greedy text =
// argmax, unique_consecutive, blanks removed, SenseVoice tokenizer decode.
#include "engine/ctc_head.h"

#include "gguf.h"
#include "model/funasr_keys.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace funasr {

namespace {

// RFC 4648 base64 (the tiktoken rank files' encoding); throws on a character outside it
std::string base64_decode(const char * s) {
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (; *s && *s != '='; ++s) {
        const int v = value(*s);
        if (v < 0) throw std::runtime_error("funasr.ctc.tiktoken_ranks holds a token that is not base64");
        acc = (acc << 6) | (uint32_t) v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back((char) ((acc >> bits) & 0xFF));
        }
    }
    return out;
}

// a TN_* format with its %s filled
std::string tensor_name(const char * format, const char * part) {
    char buf[128];
    snprintf(buf, sizeof(buf), format, part);
    return buf;
}

}  // namespace

std::unique_ptr<CtcHead> CtcHead::load(const std::string & path) {
    gguf_init_params gp{};
    gp.no_alloc = true;
    gguf_context * g = gguf_init_from_file(path.c_str(), gp);
    if (!g) throw std::runtime_error("cannot read the GGUF file " + path);
    auto u32 = [&](const char * key, int64_t fallback) -> int64_t {
        const int64_t id = gguf_find_key(g, key);
        return id >= 0 && gguf_get_kv_type(g, id) == GGUF_TYPE_UINT32 ? (int64_t) gguf_get_val_u32(g, id) : fallback;
    };
    const int64_t status = gguf_find_key(g, KEY_CTC_STATUS);
    const bool complete = status >= 0 && gguf_get_kv_type(g, status) == GGUF_TYPE_STRING &&
                          std::string(gguf_get_val_str(g, status)) == "complete";
    const int64_t n_vocab = u32(KEY_CTC_VOCAB_SIZE, 0);
    const int64_t blank = u32(KEY_CTC_BLANK_ID, n_vocab - 1);
    std::vector<std::string> ranks;
    const int64_t key = gguf_find_key(g, KEY_CTC_TIKTOKEN_RANKS);
    try {
        if (complete && key >= 0 && gguf_get_kv_type(g, key) == GGUF_TYPE_ARRAY &&
            gguf_get_arr_type(g, key) == GGUF_TYPE_STRING) {
            const size_t n = gguf_get_arr_n(g, key);
            ranks.reserve(n);
            for (size_t i = 0; i < n; ++i) ranks.push_back(base64_decode(gguf_get_arr_str(g, key, i)));
        }
    } catch (...) {
        gguf_free(g);
        throw;
    }
    gguf_free(g);
    if (!complete) return nullptr;
    if (n_vocab <= 0 || blank < 0 || blank >= n_vocab) {
        throw std::runtime_error(path + ": funasr.ctc.vocab_size / blank_id are missing or out of range");
    }
    return std::unique_ptr<CtcHead>(new CtcHead(path, (int32_t) n_vocab, (int32_t) blank, std::move(ranks)));
}

CtcHead::CtcHead(const std::string & path, int32_t n_vocab, int32_t blank, std::vector<std::string> ranks)
    : weight_(path, tensor_name(TN_CTC_PROJ, "weight")), n_vocab_(n_vocab), blank_(blank), width_(weight_.width() + 1),
      ranks_(std::move(ranks)) {
    if (weight_.n_rows() != n_vocab_) {
        throw std::runtime_error(path + ": ctc.out.weight has " + std::to_string(weight_.n_rows()) +
                                 " rows, funasr.ctc.vocab_size is " + std::to_string(n_vocab_));
    }
    GgufRows bias(path, tensor_name(TN_CTC_PROJ, "bias"));  // 1-D: one row of n_vocab values
    if (bias.width() != n_vocab_ || bias.n_rows() != 1) throw std::runtime_error(path + ": ctc.out.bias does not fit");
    bias_.resize(n_vocab_);
    bias.read(0, bias_.data());
}

std::string CtcHead::greedy_bytes(const std::vector<int32_t> & best) const {
    std::string out;
    int32_t prev = -1;
    for (int32_t id : best) {
        if (id != prev && id != blank_ && id >= 0 && (size_t) id < ranks_.size()) out += ranks_[id];
        prev = id;
    }
    return out;
}

const std::vector<float> & CtcHead::row(int32_t id) {
    auto it = rows_.find(id);
    if (it != rows_.end()) return it->second;
    std::vector<float> r(weight_.width());
    weight_.read(id, r.data());
    return rows_.emplace(id, std::move(r)).first->second;
}

void CtcHead::log_probs(const float * feats, int64_t n_frames, const std::vector<int32_t> & ids, float * out) {
    const int64_t d = weight_.width();
    std::vector<const float *> w(ids.size());
    {
        std::lock_guard<std::mutex> lock(mu_);
        for (size_t j = 0; j < ids.size(); ++j) {
            if (ids[j] < 0 || ids[j] >= n_vocab_) {
                throw std::out_of_range("CTC token id " + std::to_string(ids[j]) + " is outside [0, " +
                                        std::to_string(n_vocab_) + ")");
            }
            w[j] = row(ids[j]).data();  // the map's rows never move
        }
    }
    const size_t k = ids.size();
    for (int64_t t = 0; t < n_frames; ++t) {
        const float * h = feats + t * width_;
        const float lse = h[d];
        for (size_t j = 0; j < k; ++j) {
            float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 8 partial sums: vectorizable in strict FP
            int64_t i = 0;
            for (; i + 8 <= d; i += 8) {
                for (int u = 0; u < 8; ++u) acc[u] += w[j][i + u] * h[i + u];
            }
            float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (; i < d; ++i) s += w[j][i] * h[i];
            // the normalizer came from the graph's matmul (activations rounded to the weight type's
            // dot format when it is not f32): a token near p = 1 can land a hair above 0
            out[t * (int64_t) k + j] = std::min(s + bias_[ids[j]] - lse, 0.0f);
        }
    }
}

}  // namespace funasr
