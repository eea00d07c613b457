// funasr projector: hyper-parameters, tensors and token count, called from clip.cpp's switches.
#include "model/funasr.h"

#include "gguf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#ifndef FUNASR_CPP_MTMD_PATCH
#error "llama.cpp tree is not patched for funasr-cpp: apply third_party/patches/*.patch"
#elif FUNASR_CPP_MTMD_PATCH < 4
#error "llama.cpp tree carries an older funasr-cpp patch: re-apply third_party/patches/*.patch"
#endif

extern "C" __attribute__((visibility("default"))) int funasr_mtmd_patch_level(void) {
    return FUNASR_CPP_MTMD_PATCH;
}

namespace {

int64_t find_key(const gguf_context * ctx, const char * key, gguf_type type, bool required) {
    const int64_t id = gguf_find_key(ctx, key);
    if (id < 0) {
        if (required) {
            throw std::runtime_error(std::string("funasr: mmproj lacks key ") + key);
        }
        return -1;
    }
    if (gguf_get_kv_type(ctx, id) != type) {
        throw std::runtime_error(std::string("funasr: key ") + key + " has an unexpected type");
    }
    return id;
}

int32_t get_u32(const gguf_context * ctx, const char * key, int32_t fallback, bool required = false) {
    const int64_t id = find_key(ctx, key, GGUF_TYPE_UINT32, required);
    return id < 0 ? fallback : (int32_t) gguf_get_val_u32(ctx, id);
}

float get_f32(const gguf_context * ctx, const char * key, float fallback, bool required = false) {
    const int64_t id = find_key(ctx, key, GGUF_TYPE_FLOAT32, required);
    return id < 0 ? fallback : gguf_get_val_f32(ctx, id);
}

std::vector<float> get_f32_array(const gguf_context * ctx, const char * key) {
    const int64_t id = find_key(ctx, key, GGUF_TYPE_ARRAY, false);
    if (id < 0) {
        return {};
    }
    if (gguf_get_arr_type(ctx, id) != GGUF_TYPE_FLOAT32) {
        throw std::runtime_error(std::string("funasr: key ") + key + " must be a float32 array");
    }
    const float * data = (const float *) gguf_get_arr_data(ctx, id);
    return std::vector<float>(data, data + gguf_get_arr_n(ctx, id));
}

}  // namespace

namespace {

[[noreturn]] void refuse(const std::string & key, const std::string & value, const std::string & supported) {
    throw std::runtime_error("funasr: mmproj key " + key + " = " + value + " is not supported (" + supported + ")");
}

std::string get_str(const gguf_context * ctx, const char * key, const std::string & fallback) {
    const int64_t id = find_key(ctx, key, GGUF_TYPE_STRING, false);
    return id < 0 ? fallback : std::string(gguf_get_val_str(ctx, id));
}

bool get_bool(const gguf_context * ctx, const char * key, bool fallback) {
    const int64_t id = find_key(ctx, key, GGUF_TYPE_BOOL, false);
    return id < 0 ? fallback : gguf_get_val_bool(ctx, id);
}

std::string str(double v) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%g", v);
    return buf;
}

int next_pow2(int n) {
    int p = 1;
    while (p < n) {
        p <<= 1;
    }
    return p;
}

}  // namespace

// Every funasr.* key the frontend, encoder and adaptor depend on; a missing key takes
// upstream's code default (funasr_hparams.h), a value the graph cannot run is refused here.
void funasr_load_hparams(clip_hparams & hp, const gguf_context * ctx) {
    auto & f = hp.funasr;
    const funasr_hparams def;

    // frontend
    const int sr = (int) get_u32(ctx, "funasr.frontend.sample_rate", 16000);
    const float frame_ms = get_f32(ctx, "funasr.frontend.frame_length_ms", 25.0f);
    const float shift_ms = get_f32(ctx, "funasr.frontend.frame_shift_ms", 10.0f);
    f.window      = get_str(ctx, "funasr.frontend.window", def.window);
    f.lfr_m       = get_u32(ctx, "funasr.frontend.lfr_m", def.lfr_m);
    f.lfr_n       = get_u32(ctx, "funasr.frontend.lfr_n", def.lfr_n);
    f.preemph     = get_f32(ctx, "funasr.frontend.preemphasis", def.preemph);
    f.low_freq    = get_f32(ctx, "funasr.frontend.low_freq", def.low_freq);
    f.high_freq   = get_f32(ctx, "funasr.frontend.high_freq", def.high_freq);
    f.input_scale = get_f32(ctx, "funasr.frontend.input_scale", def.input_scale);
    f.cmvn_shift  = get_f32_array(ctx, "funasr.frontend.cmvn_shift");
    f.cmvn_scale  = get_f32_array(ctx, "funasr.frontend.cmvn_scale");
    if (sr <= 0) {
        refuse("funasr.frontend.sample_rate", std::to_string(sr), "a positive rate in Hz");
    }
    if (f.window != "hamming" && f.window != "hanning" && f.window != "povey" && f.window != "rectangular" &&
        f.window != "blackman") {
        refuse("funasr.frontend.window", f.window, "hamming, hanning, povey, rectangular or blackman");
    }
    if (!get_bool(ctx, "funasr.frontend.snip_edges", true)) {
        refuse("funasr.frontend.snip_edges", "false", "only true: frames that lie wholly inside the audio");
    }
    if (f.lfr_m < 1 || f.lfr_n < 1) {
        refuse("funasr.frontend.lfr_m/lfr_n", std::to_string(f.lfr_m) + "/" + std::to_string(f.lfr_n),
               "both >= 1");
    }
    hp.audio_sample_rate = sr;  // also drives mtmd's resampling of decoded audio files
    hp.audio_window_len  = (int32_t) std::lround(sr * frame_ms / 1000.0);
    hp.audio_hop_len     = (int32_t) std::lround(sr * shift_ms / 1000.0);
    if (hp.audio_window_len < 2 || hp.audio_hop_len < 1) {
        refuse("funasr.frontend.frame_length_ms/frame_shift_ms", str(frame_ms) + "/" + str(shift_ms),
               "at least 2 samples per frame and 1 per shift");
    }
    if (f.low_freq < 0.0f || (f.high_freq > 0.0f ? f.high_freq : 0.5f * sr + f.high_freq) <= f.low_freq ||
        f.high_freq > 0.5f * sr) {
        refuse("funasr.frontend.low_freq/high_freq", str(f.low_freq) + "/" + str(f.high_freq),
               "0 <= low < high <= Nyquist; high <= 0 is relative to Nyquist");
    }
    const size_t n_feat = (size_t) hp.n_mel_bins * f.lfr_m;
    if (f.cmvn_shift.size() != f.cmvn_scale.size() || (!f.cmvn_shift.empty() && f.cmvn_shift.size() != n_feat)) {
        throw std::runtime_error("funasr: CMVN vectors must both have n_mel_bins * lfr_m values");
    }
    hp.audio_n_fft       = next_pow2(hp.audio_window_len);  // Kaldi's round_to_power_of_two
    // Seconds of audio per chunk when mtmd is given a whole file (llama-mtmd-cli, llama-server):
    // a runtime choice, not a model constant. Fun-ASR was trained on utterances of up to ~30 s.
    hp.audio_chunk_len   = 30;
    hp.warmup_audio_size = f.lfr_m * 100;  // warmup input must be whole LFR frames

    // encoder
    f.enc_blocks      = get_u32(ctx, "funasr.encoder.num_blocks", 0, true);
    f.enc_tp_blocks   = get_u32(ctx, "funasr.encoder.tp_blocks", hp.n_layer - f.enc_blocks);
    f.sanm_shift      = get_u32(ctx, "funasr.encoder.sanm_shift", def.sanm_shift);
    f.enc_input_scale = get_f32(ctx, "funasr.encoder.input_scale", std::sqrt((float) hp.n_embd));
    hp.audio_conv_kernel_size = get_u32(ctx, "clip.audio.conv_kernel_size", 11);
    if (f.enc_blocks < 1 || f.enc_blocks > hp.n_layer) {
        refuse("funasr.encoder.num_blocks", std::to_string(f.enc_blocks),
               "1 .. clip.audio.block_count = " + std::to_string(hp.n_layer));
    }
    if (f.enc_blocks + f.enc_tp_blocks != hp.n_layer) {
        refuse("funasr.encoder.tp_blocks", std::to_string(f.enc_tp_blocks),
               "num_blocks + tp_blocks must equal clip.audio.block_count = " + std::to_string(hp.n_layer));
    }
    const int k = hp.audio_conv_kernel_size;
    if (k < 1 || f.fsmn_right(k) < 0) {
        refuse("funasr.encoder.sanm_shift", std::to_string(f.sanm_shift),
               "0 .. " + std::to_string(std::max(0, k - 1 - (k - 1) / 2)) + " for an FSMN kernel of " +
                   std::to_string(k) + " taps (upstream would crop the sequence)");
    }

    // adaptor
    f.adaptor_blocks     = get_u32(ctx, "funasr.adaptor.block_count", def.adaptor_blocks);
    f.adaptor_heads      = get_u32(ctx, "funasr.adaptor.head_count", def.adaptor_heads);
    f.adaptor_eps        = get_f32(ctx, "funasr.adaptor.layer_norm_epsilon", def.adaptor_eps);
    f.downsample_rate    = get_u32(ctx, "funasr.adaptor.downsample_rate", def.downsample_rate);
    f.use_low_frame_rate = get_bool(ctx, "funasr.adaptor.use_low_frame_rate", def.use_low_frame_rate);
    if (f.adaptor_heads < 1 || hp.projection_dim % f.adaptor_heads != 0) {
        refuse("funasr.adaptor.head_count", std::to_string(f.adaptor_heads),
               "a divisor of clip.audio.projection_dim = " + std::to_string(hp.projection_dim));
    }
    // Upstream writes the first fake_token_len(T) adaptor rows into the prompt; with more
    // placeholders than rows (use_low_frame_rate false and k > 1, or k > 8) it logs a shape
    // error and leaves the extra placeholders as the embedding of token 0: not a model to run.
    const int k_max = f.use_low_frame_rate ? 8 : 1;
    if (f.downsample_rate < 1 || f.downsample_rate > k_max) {
        refuse("funasr.adaptor.downsample_rate", std::to_string(f.downsample_rate),
               std::string("1 .. ") + std::to_string(k_max) + " with use_low_frame_rate " +
                   (f.use_low_frame_rate ? "true" : "false") +
                   "; more would leave prompt placeholders without audio rows upstream");
    }

    // CTC branch: only a "complete" one is loaded (the converter leaves the others out)
    if (get_str(ctx, "funasr.ctc.status", "absent") == "complete") {
        f.ctc_blocks     = get_u32(ctx, "funasr.ctc.block_count", 0, true);
        f.ctc_heads      = get_u32(ctx, "funasr.ctc.head_count", def.ctc_heads);
        f.ctc_eps        = get_f32(ctx, "funasr.ctc.layer_norm_epsilon", def.ctc_eps);
        f.ctc_downsample = get_u32(ctx, "funasr.ctc.downsample_rate", def.ctc_downsample);
        f.ctc_vocab      = get_u32(ctx, "funasr.ctc.vocab_size", 0, true);
        f.ctc_blank      = get_u32(ctx, "funasr.ctc.blank_id", f.ctc_vocab - 1);
        if (f.ctc_heads < 1 || f.ctc_downsample < 1) {
            refuse("funasr.ctc.head_count/downsample_rate",
                   std::to_string(f.ctc_heads) + "/" + std::to_string(f.ctc_downsample), "both >= 1");
        }
        if (f.ctc_blank < 0 || f.ctc_blank >= f.ctc_vocab) {
            refuse("funasr.ctc.blank_id", std::to_string(f.ctc_blank),
                   "an id below funasr.ctc.vocab_size = " + std::to_string(f.ctc_vocab));
        }
    }
}

// One funasr "Transformer" (funasr/models/llm_asr/adaptor.py): mlp.{1,2} and blocks J = 0.. under prefix.
static void load_transformer(const std::function<ggml_tensor *(const std::string &, bool)> & get_tensor,
                             const std::string & mlp, const char * blk_fmt, ggml_tensor * w[4],
                             std::vector<clip_layer> & blocks) {
    w[0] = get_tensor(mlp + ".1.weight", true);
    w[1] = get_tensor(mlp + ".1.bias", true);
    w[2] = get_tensor(mlp + ".2.weight", true);
    w[3] = get_tensor(mlp + ".2.bias", true);
    for (int il = 0;; ++il) {
        auto name = [&](const char * part, const char * suffix) {  // clip's string_format keeps a trailing NUL
            return string_format(blk_fmt, il, (std::string(part) + "." + suffix).c_str());
        };
        ggml_tensor * q_w = get_tensor(name("attn_q", "weight"), false);
        if (!q_w) {
            break;
        }
        clip_layer layer;
        layer.q_w = q_w;
        layer.q_b = get_tensor(name("attn_q", "bias"), true);
        layer.k_w = get_tensor(name("attn_k", "weight"), true);
        layer.k_b = get_tensor(name("attn_k", "bias"), true);
        layer.v_w = get_tensor(name("attn_v", "weight"), true);
        layer.v_b = get_tensor(name("attn_v", "bias"), true);
        layer.o_w = get_tensor(name("attn_out", "weight"), true);
        layer.o_b = get_tensor(name("attn_out", "bias"), true);
        layer.ln_1_w = get_tensor(name("ln1", "weight"), true);
        layer.ln_1_b = get_tensor(name("ln1", "bias"), true);
        layer.ln_2_w = get_tensor(name("ln2", "weight"), true);
        layer.ln_2_b = get_tensor(name("ln2", "bias"), true);
        layer.ff_up_w = get_tensor(name("ffn_up", "weight"), true);
        layer.ff_up_b = get_tensor(name("ffn_up", "bias"), true);
        layer.ff_down_w = get_tensor(name("ffn_down", "weight"), true);
        layer.ff_down_b = get_tensor(name("ffn_down", "bias"), true);
        blocks.push_back(layer);
    }
}

void funasr_load_tensors(clip_model & model,
                         const std::function<ggml_tensor *(const std::string &, bool)> & get_tensor) {
    const auto & hp = model.hparams;
    for (int il = 0; il < hp.n_layer; ++il) {
        model.layers[il].conv_dw_w = get_tensor(string_format("a.blk.%d.conv_dw.weight", il), true);
        if (model.layers[il].conv_dw_w->ne[0] != hp.audio_conv_kernel_size) {
            throw std::runtime_error(string_format("funasr: a.blk.%d.conv_dw.weight has %lld taps, "
                                                   "clip.audio.conv_kernel_size is %d", il,
                                                   (long long) model.layers[il].conv_dw_w->ne[0],
                                                   hp.audio_conv_kernel_size));
        }
    }
    model.mm_norm_pre_w = get_tensor("mm.a.norm_pre.weight", true);  // tp_norm
    model.mm_norm_pre_b = get_tensor("mm.a.norm_pre.bias", true);
    ggml_tensor * mlp[4];
    load_transformer(get_tensor, "mm.a.mlp", "mm.a.local_blk.%d.%s", mlp, model.mm_a_local_layers);
    model.mm_1_w = mlp[0];
    model.mm_1_b = mlp[1];
    model.mm_2_w = mlp[2];
    model.mm_2_b = mlp[3];
    if ((int) model.mm_a_local_layers.size() != hp.funasr.adaptor_blocks) {
        throw std::runtime_error(string_format("funasr: mmproj has %d adaptor blocks (mm.a.local_blk.N.*), "
                                               "funasr.adaptor.block_count is %d",
                                               (int) model.mm_a_local_layers.size(), hp.funasr.adaptor_blocks));
    }
    const int64_t k_in = model.mm_1_w->ne[0];
    if (k_in != (int64_t) hp.n_embd * hp.funasr.downsample_rate) {
        throw std::runtime_error(string_format("funasr: mm.a.mlp.1.weight takes %lld inputs, expected n_embd %d x "
                                               "funasr.adaptor.downsample_rate %d", (long long) k_in, hp.n_embd,
                                               hp.funasr.downsample_rate));
    }

    if (hp.funasr.has_ctc()) {
        auto & ctc = model.funasr_ctc;
        load_transformer(get_tensor, "ctc.mlp", "ctc.blk.%d.%s", mlp, ctc.blocks);
        ctc.mlp_1_w = mlp[0];
        ctc.mlp_1_b = mlp[1];
        ctc.mlp_2_w = mlp[2];
        ctc.mlp_2_b = mlp[3];
        ctc.out_w = get_tensor("ctc.out.weight", true);
        ctc.out_b = get_tensor("ctc.out.bias", true);
        const int64_t dim = ctc.mlp_2_w->ne[1];
        if ((int) ctc.blocks.size() != hp.funasr.ctc_blocks || dim % hp.funasr.ctc_heads != 0 ||
            ctc.mlp_1_w->ne[0] != (int64_t) hp.n_embd * hp.funasr.ctc_downsample || ctc.out_w->ne[0] != dim ||
            ctc.out_w->ne[1] != hp.funasr.ctc_vocab) {
            throw std::runtime_error(string_format(
                "funasr: the CTC branch does not fit its keys: %d blocks (funasr.ctc.block_count %d), width %lld "
                "(%d heads), input %lld (n_embd %d x downsample %d), ctc.out %lld x %lld (vocab_size %d)",
                (int) ctc.blocks.size(), hp.funasr.ctc_blocks, (long long) dim, hp.funasr.ctc_heads,
                (long long) ctc.mlp_1_w->ne[0], hp.n_embd, hp.funasr.ctc_downsample, (long long) ctc.out_w->ne[0],
                (long long) ctc.out_w->ne[1], hp.funasr.ctc_vocab));
        }
    }
}

int funasr_n_output_tokens(const clip_hparams & hp, int nx) {
    // nx = lfr_m sub-frames per LFR frame (see mtmd_audio_preprocessor_funasr)
    const auto & f = hp.funasr;
    const int t = nx / f.lfr_m;
    if (t <= 0) {
        return 0;
    }
    if (!f.use_low_frame_rate) {
        return (t - 1) / f.downsample_rate + 1;  // every adaptor row (k = 1 here, see the load check)
    }
    // upstream's fake_token_len: two stride-2 "convolutions" and a final halving, ~T/8 rows
    const int o1 = 1 + (t - 1) / 2;
    const int o2 = 1 + (o1 - 1) / 2;
    return (o2 - 1) / 2 + 1;
}
