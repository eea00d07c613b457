// funasr projector glue for clip and mtmd, following funasr 1.4.16 models/fun_asr_nano/model.py
// (FunASRNano: its frontend, audio_encoder, audio_adaptor and ctc_decoder / ctc configuration):
// the hyper-parameters by section, the tensors and the token count (called from clip.cpp's
// switches), and the preprocessor (from mtmd.cpp's). Key and tensor names: model/funasr_keys.h.
#include "model/funasr.h"

#include "gguf.h"
#include "model/funasr_keys.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
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

// a tensor name from its TN_* format
std::string tensor_name(const char * fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int) sizeof(buf)) {
        throw std::runtime_error(std::string("funasr: tensor name too long for format ") + fmt);
    }
    return std::string(buf, (size_t) n);
}

}  // namespace

// ----------------------------------------------------------------------------- hparams
// Every funasr.* key the frontend, encoder, adaptor and CTC branch depend on, by section; a missing
// key takes upstream's code default (funasr_hparams.h, frontend/frontend.h), a value the graph
// cannot run is refused here.

namespace {

// WavFrontend: funasr.frontend.* into hparams.funasr.frontend, and the generic clip fields that
// mtmd reads (sample rate, frame sizes, chunking, warmup) from the same keys
void load_frontend(clip_hparams & hp, const gguf_context * ctx) {
    auto & fe = hp.funasr.frontend;
    const funasr_frontend_params def;
    const int sr = (int) get_u32(ctx, KEY_FE_SAMPLE_RATE, def.sample_rate);
    const float frame_ms = get_f32(ctx, KEY_FE_FRAME_LENGTH_MS, 1000.0f * def.frame_length / def.sample_rate);
    const float shift_ms = get_f32(ctx, KEY_FE_FRAME_SHIFT_MS, 1000.0f * def.frame_shift / def.sample_rate);
    fe.window      = get_str(ctx, KEY_FE_WINDOW, def.window);
    fe.lfr_m       = get_u32(ctx, KEY_FE_LFR_M, def.lfr_m);
    fe.lfr_n       = get_u32(ctx, KEY_FE_LFR_N, def.lfr_n);
    fe.preemph     = get_f32(ctx, KEY_FE_PREEMPHASIS, def.preemph);
    fe.low_freq    = get_f32(ctx, KEY_FE_LOW_FREQ, def.low_freq);
    fe.high_freq   = get_f32(ctx, KEY_FE_HIGH_FREQ, def.high_freq);
    fe.input_scale = get_f32(ctx, KEY_FE_INPUT_SCALE, def.input_scale);
    fe.cmvn_shift  = get_f32_array(ctx, KEY_FE_CMVN_SHIFT);
    fe.cmvn_scale  = get_f32_array(ctx, KEY_FE_CMVN_SCALE);
    if (sr <= 0) {
        refuse(KEY_FE_SAMPLE_RATE, std::to_string(sr), "a positive rate in Hz");
    }
    if (fe.window != "hamming" && fe.window != "hanning" && fe.window != "povey" && fe.window != "rectangular" &&
        fe.window != "blackman") {
        refuse(KEY_FE_WINDOW, fe.window, "hamming, hanning, povey, rectangular or blackman");
    }
    if (!get_bool(ctx, KEY_FE_SNIP_EDGES, true)) {
        refuse(KEY_FE_SNIP_EDGES, "false", "only true: frames that lie wholly inside the audio");
    }
    if (fe.lfr_m < 1 || fe.lfr_n < 1) {
        refuse(std::string(KEY_FE_LFR_M) + "/" + KEY_FE_LFR_N, std::to_string(fe.lfr_m) + "/" + std::to_string(fe.lfr_n),
               "both >= 1");
    }
    hp.audio_sample_rate = sr;  // also drives mtmd's resampling of decoded audio files
    hp.audio_window_len  = (int32_t) std::lround(sr * frame_ms / 1000.0);
    hp.audio_hop_len     = (int32_t) std::lround(sr * shift_ms / 1000.0);
    if (hp.audio_window_len < 2 || hp.audio_hop_len < 1) {
        refuse(std::string(KEY_FE_FRAME_LENGTH_MS) + "/" + KEY_FE_FRAME_SHIFT_MS, str(frame_ms) + "/" + str(shift_ms),
               "at least 2 samples per frame and 1 per shift");
    }
    if (fe.low_freq < 0.0f || (fe.high_freq > 0.0f ? fe.high_freq : 0.5f * sr + fe.high_freq) <= fe.low_freq ||
        fe.high_freq > 0.5f * sr) {
        refuse(std::string(KEY_FE_LOW_FREQ) + "/" + KEY_FE_HIGH_FREQ, str(fe.low_freq) + "/" + str(fe.high_freq),
               "0 <= low < high <= Nyquist; high <= 0 is relative to Nyquist");
    }
    const size_t n_feat = (size_t) hp.n_mel_bins * fe.lfr_m;
    if (fe.cmvn_shift.size() != fe.cmvn_scale.size() || (!fe.cmvn_shift.empty() && fe.cmvn_shift.size() != n_feat)) {
        throw std::runtime_error("funasr: CMVN vectors must both have n_mel_bins * lfr_m values");
    }
    fe.sample_rate  = sr;
    fe.n_mels       = hp.n_mel_bins;  // clip.audio.num_mel_bins, read by clip
    fe.frame_length = hp.audio_window_len;
    fe.frame_shift  = hp.audio_hop_len;
    hp.audio_n_fft  = next_pow2(hp.audio_window_len);  // Kaldi's round_to_power_of_two
    // Seconds of audio per chunk when mtmd is given a whole file (llama-mtmd-cli, llama-server):
    // a runtime choice, not a model constant. Fun-ASR was trained on utterances of up to ~30 s.
    hp.audio_chunk_len   = 30;
    hp.warmup_audio_size = fe.lfr_m * 100;  // warmup input must be whole LFR frames
}

// SenseVoiceEncoderSmall: funasr.encoder.* and the FSMN kernel size
void load_encoder(clip_hparams & hp, const gguf_context * ctx) {
    auto & f = hp.funasr;
    const funasr_hparams def;
    f.enc_blocks      = get_u32(ctx, KEY_ENC_NUM_BLOCKS, 0, true);
    f.enc_tp_blocks   = get_u32(ctx, KEY_ENC_TP_BLOCKS, hp.n_layer - f.enc_blocks);
    f.sanm_shift      = get_u32(ctx, KEY_ENC_SANM_SHIFT, def.sanm_shift);
    f.enc_input_scale = get_f32(ctx, KEY_ENC_INPUT_SCALE, std::sqrt((float) hp.n_embd));
    hp.audio_conv_kernel_size = get_u32(ctx, KEY_CLIP_A_CONV_KERNEL, 11);
    if (f.enc_blocks < 1 || f.enc_blocks > hp.n_layer) {
        refuse(KEY_ENC_NUM_BLOCKS, std::to_string(f.enc_blocks),
               std::string("1 .. " KEY_CLIP_A_BLOCK_COUNT " = ") + std::to_string(hp.n_layer));
    }
    if (f.enc_blocks + f.enc_tp_blocks != hp.n_layer) {
        refuse(KEY_ENC_TP_BLOCKS, std::to_string(f.enc_tp_blocks),
               std::string("num_blocks + tp_blocks must equal " KEY_CLIP_A_BLOCK_COUNT " = ") + std::to_string(hp.n_layer));
    }
    const int k = hp.audio_conv_kernel_size;
    if (k < 1 || f.fsmn_right(k) < 0) {
        refuse(KEY_ENC_SANM_SHIFT, std::to_string(f.sanm_shift),
               "0 .. " + std::to_string(std::max(0, k - 1 - (k - 1) / 2)) + " for an FSMN kernel of " +
                   std::to_string(k) + " taps (upstream would crop the sequence)");
    }
}

// the llm_asr Transformer adaptor: funasr.adaptor.*
void load_adaptor(clip_hparams & hp, const gguf_context * ctx) {
    auto & f = hp.funasr;
    const funasr_hparams def;
    f.adaptor_blocks     = get_u32(ctx, KEY_ADP_BLOCK_COUNT, def.adaptor_blocks);
    f.adaptor_heads      = get_u32(ctx, KEY_ADP_HEAD_COUNT, def.adaptor_heads);
    f.adaptor_eps        = get_f32(ctx, KEY_ADP_LN_EPS, def.adaptor_eps);
    f.downsample_rate    = get_u32(ctx, KEY_ADP_DOWNSAMPLE, def.downsample_rate);
    f.use_low_frame_rate = get_bool(ctx, KEY_ADP_LOW_FRAME_RATE, def.use_low_frame_rate);
    if (f.adaptor_heads < 1 || hp.projection_dim % f.adaptor_heads != 0) {
        refuse(KEY_ADP_HEAD_COUNT, std::to_string(f.adaptor_heads),
               std::string("a divisor of " KEY_CLIP_A_PROJ_DIM " = ") + std::to_string(hp.projection_dim));
    }
    // Upstream writes the first fake_token_len(T) adaptor rows into the prompt; with more
    // placeholders than rows (use_low_frame_rate false and k > 1, or k > 8) it logs a shape
    // error and leaves the extra placeholders as the embedding of token 0: not a model to run.
    const int k_max = f.use_low_frame_rate ? 8 : 1;
    if (f.downsample_rate < 1 || f.downsample_rate > k_max) {
        refuse(KEY_ADP_DOWNSAMPLE, std::to_string(f.downsample_rate),
               std::string("1 .. ") + std::to_string(k_max) + " with use_low_frame_rate " +
                   (f.use_low_frame_rate ? "true" : "false") +
                   "; more would leave prompt placeholders without audio rows upstream");
    }
}

// the CTC branch (ctc_decoder + ctc): funasr.ctc.*, only a "complete" one (the converter leaves
// the others out)
void load_ctc(clip_hparams & hp, const gguf_context * ctx) {
    auto & f = hp.funasr;
    const funasr_hparams def;
    if (get_str(ctx, KEY_CTC_STATUS, "absent") != "complete") {
        return;
    }
    f.ctc_blocks     = get_u32(ctx, KEY_CTC_BLOCK_COUNT, 0, true);
    f.ctc_heads      = get_u32(ctx, KEY_CTC_HEAD_COUNT, def.ctc_heads);
    f.ctc_eps        = get_f32(ctx, KEY_CTC_LN_EPS, def.ctc_eps);
    f.ctc_downsample = get_u32(ctx, KEY_CTC_DOWNSAMPLE, def.ctc_downsample);
    f.ctc_vocab      = get_u32(ctx, KEY_CTC_VOCAB_SIZE, 0, true);
    f.ctc_blank      = get_u32(ctx, KEY_CTC_BLANK_ID, f.ctc_vocab - 1);
    if (f.ctc_heads < 1 || f.ctc_downsample < 1) {
        refuse(std::string(KEY_CTC_HEAD_COUNT) + "/" + KEY_CTC_DOWNSAMPLE,
               std::to_string(f.ctc_heads) + "/" + std::to_string(f.ctc_downsample), "both >= 1");
    }
    if (f.ctc_blank < 0 || f.ctc_blank >= f.ctc_vocab) {
        refuse(KEY_CTC_BLANK_ID, std::to_string(f.ctc_blank),
               std::string("an id below " KEY_CTC_VOCAB_SIZE " = ") + std::to_string(f.ctc_vocab));
    }
}

}  // namespace

void funasr_load_hparams(clip_hparams & hp, const gguf_context * ctx) {
    load_frontend(hp, ctx);
    load_encoder(hp, ctx);
    load_adaptor(hp, ctx);
    load_ctc(hp, ctx);
}

// ----------------------------------------------------------------------------- tensors

using get_tensor_fn = std::function<ggml_tensor *(const std::string &, bool)>;

// One funasr "Transformer" (funasr/models/llm_asr/adaptor.py): linear1/linear2 (mlp_fmt, %d = 1, 2)
// and blocks J = 0.. (blk_fmt) until the first missing one.
static void load_transformer(const get_tensor_fn & get_tensor, const char * mlp_fmt, const char * blk_fmt,
                             ggml_tensor * w[4], std::vector<clip_layer> & blocks) {
    w[0] = get_tensor(tensor_name(mlp_fmt, 1, "weight"), true);
    w[1] = get_tensor(tensor_name(mlp_fmt, 1, "bias"), true);
    w[2] = get_tensor(tensor_name(mlp_fmt, 2, "weight"), true);
    w[3] = get_tensor(tensor_name(mlp_fmt, 2, "bias"), true);
    for (int il = 0;; ++il) {
        auto name = [&](const char * part, const char * suffix) { return tensor_name(blk_fmt, il, part, suffix); };
        ggml_tensor * q_w = get_tensor(name(TN_PART_ATTN_Q, "weight"), false);
        if (!q_w) {
            break;
        }
        clip_layer layer;
        layer.q_w = q_w;
        layer.q_b = get_tensor(name(TN_PART_ATTN_Q, "bias"), true);
        layer.k_w = get_tensor(name(TN_PART_ATTN_K, "weight"), true);
        layer.k_b = get_tensor(name(TN_PART_ATTN_K, "bias"), true);
        layer.v_w = get_tensor(name(TN_PART_ATTN_V, "weight"), true);
        layer.v_b = get_tensor(name(TN_PART_ATTN_V, "bias"), true);
        layer.o_w = get_tensor(name(TN_PART_ATTN_OUT, "weight"), true);
        layer.o_b = get_tensor(name(TN_PART_ATTN_OUT, "bias"), true);
        layer.ln_1_w = get_tensor(name(TN_PART_LN1, "weight"), true);
        layer.ln_1_b = get_tensor(name(TN_PART_LN1, "bias"), true);
        layer.ln_2_w = get_tensor(name(TN_PART_LN2, "weight"), true);
        layer.ln_2_b = get_tensor(name(TN_PART_LN2, "bias"), true);
        layer.ff_up_w = get_tensor(name(TN_PART_FFN_UP, "weight"), true);
        layer.ff_up_b = get_tensor(name(TN_PART_FFN_UP, "bias"), true);
        layer.ff_down_w = get_tensor(name(TN_PART_FFN_DOWN, "weight"), true);
        layer.ff_down_b = get_tensor(name(TN_PART_FFN_DOWN, "bias"), true);
        blocks.push_back(layer);
    }
}

// the FSMN memory kernels of every encoder block, which must match clip.audio.conv_kernel_size
static void load_fsmn_kernels(clip_model & model, const get_tensor_fn & get_tensor) {
    const auto & hp = model.hparams;
    for (int il = 0; il < hp.n_layer; ++il) {
        const std::string name = tensor_name(TN_ENC_CONV_DW, il);
        model.layers[il].conv_dw_w = get_tensor(name, true);
        if (model.layers[il].conv_dw_w->ne[0] != hp.audio_conv_kernel_size) {
            throw std::runtime_error(string_format("funasr: %s has %lld taps, " KEY_CLIP_A_CONV_KERNEL " is %d",
                                                   name.c_str(), (long long) model.layers[il].conv_dw_w->ne[0],
                                                   hp.audio_conv_kernel_size));
        }
    }
}

// tp_norm and the adaptor, checked against funasr.adaptor.*
static void load_adaptor_tensors(clip_model & model, const get_tensor_fn & get_tensor) {
    const auto & hp = model.hparams;
    model.mm_norm_pre_w = get_tensor(tensor_name(TN_ADP_NORM_PRE, "weight"), true);  // tp_norm
    model.mm_norm_pre_b = get_tensor(tensor_name(TN_ADP_NORM_PRE, "bias"), true);
    ggml_tensor * mlp[4];
    load_transformer(get_tensor, TN_ADP_MLP, TN_ADP_BLK, mlp, model.mm_a_local_layers);
    model.mm_1_w = mlp[0];
    model.mm_1_b = mlp[1];
    model.mm_2_w = mlp[2];
    model.mm_2_b = mlp[3];
    if ((int) model.mm_a_local_layers.size() != hp.funasr.adaptor_blocks) {
        throw std::runtime_error(string_format("funasr: mmproj has %d adaptor blocks (%s), " KEY_ADP_BLOCK_COUNT " is %d",
                                               (int) model.mm_a_local_layers.size(),
                                               tensor_name(TN_ADP_BLK, 0, "*", "*").c_str(), hp.funasr.adaptor_blocks));
    }
    const int64_t k_in = model.mm_1_w->ne[0];
    if (k_in != (int64_t) hp.n_embd * hp.funasr.downsample_rate) {
        throw std::runtime_error(string_format("funasr: %s takes %lld inputs, expected n_embd %d x " KEY_ADP_DOWNSAMPLE
                                               " %d", tensor_name(TN_ADP_MLP, 1, "weight").c_str(), (long long) k_in,
                                               hp.n_embd, hp.funasr.downsample_rate));
    }
}

// the CTC branch, checked against funasr.ctc.*
static void load_ctc_tensors(clip_model & model, const get_tensor_fn & get_tensor) {
    const auto & hp = model.hparams;
    auto & ctc = model.funasr_ctc;
    ggml_tensor * mlp[4];
    load_transformer(get_tensor, TN_CTC_MLP, TN_CTC_BLK, mlp, ctc.blocks);
    ctc.mlp_1_w = mlp[0];
    ctc.mlp_1_b = mlp[1];
    ctc.mlp_2_w = mlp[2];
    ctc.mlp_2_b = mlp[3];
    ctc.out_w = get_tensor(tensor_name(TN_CTC_PROJ, "weight"), true);
    ctc.out_b = get_tensor(tensor_name(TN_CTC_PROJ, "bias"), true);
    const int64_t dim = ctc.mlp_2_w->ne[1];
    if ((int) ctc.blocks.size() != hp.funasr.ctc_blocks || dim % hp.funasr.ctc_heads != 0 ||
        ctc.mlp_1_w->ne[0] != (int64_t) hp.n_embd * hp.funasr.ctc_downsample || ctc.out_w->ne[0] != dim ||
        ctc.out_w->ne[1] != hp.funasr.ctc_vocab) {
        throw std::runtime_error(string_format(
            "funasr: the CTC branch does not fit its keys: %d blocks (" KEY_CTC_BLOCK_COUNT " %d), width %lld "
            "(%d heads), input %lld (n_embd %d x downsample %d), ctc.out %lld x %lld (vocab_size %d)",
            (int) ctc.blocks.size(), hp.funasr.ctc_blocks, (long long) dim, hp.funasr.ctc_heads,
            (long long) ctc.mlp_1_w->ne[0], hp.n_embd, hp.funasr.ctc_downsample, (long long) ctc.out_w->ne[0],
            (long long) ctc.out_w->ne[1], hp.funasr.ctc_vocab));
    }
}

// tensors beyond the generic a.blk.N.* ones clip loads itself
void funasr_load_tensors(clip_model & model, const get_tensor_fn & get_tensor) {
    load_fsmn_kernels(model, get_tensor);
    load_adaptor_tensors(model, get_tensor);
    if (model.hparams.funasr.has_ctc()) {
        load_ctc_tensors(model, get_tensor);
    }
}

// ----------------------------------------------------------------------------- token count

int funasr_n_output_tokens(const clip_hparams & hp, int nx) {
    // nx = lfr_m sub-frames per LFR frame (see mtmd_audio_preprocessor_funasr)
    const auto & f = hp.funasr;
    const int t = nx / f.frontend.lfr_m;
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

// ----------------------------------------------------------------------------- mtmd preprocessor

mtmd_audio_preprocessor_funasr::mtmd_audio_preprocessor_funasr(const clip_ctx * ctx) : mtmd_audio_preprocessor(ctx) {}

void mtmd_audio_preprocessor_funasr::initialize() {
    frontend = std::make_unique<funasr_frontend>(hparams.funasr.frontend);
}

mtmd_audio_mel funasr_mtmd_mel(const float * rows, int64_t n_rows, int n_mels, int lfr_m) {
    mtmd_audio_mel mel;
    mel.n_mel     = n_mels;
    mel.n_len     = (int) (n_rows * lfr_m);
    mel.n_len_org = mel.n_len;
    mel.data.resize((size_t) n_mels * (size_t) mel.n_len);
    // rows viewed as [n_len sub-frames, n_mels] -> data [n_mels, n_len]
    const int64_t n_len = mel.n_len;
    for (int64_t s = 0; s < n_len; ++s) {
        const float * src = rows + (size_t) s * n_mels;
        for (int m = 0; m < n_mels; ++m) {
            mel.data[(size_t) m * n_len + s] = src[m];
        }
    }
    return mel;
}

bool funasr_audio_to_mel_chunks(const funasr_frontend & fe, int chunk_seconds, const float * samples,
                                size_t n_samples, std::vector<mtmd_audio_mel> & output) {
    if (n_samples > 0 && samples == nullptr) {
        return false;
    }
    const auto & p     = fe.params();
    const size_t chunk = chunk_seconds > 0 ? (size_t) chunk_seconds * (size_t) p.sample_rate : n_samples;
    const int n_feat   = fe.feature_dim();

    std::vector<float> feats;
    for (size_t off = 0; off < n_samples; off += chunk) {
        const size_t n = std::min(chunk, n_samples - off);
        fe.compute(samples + off, n, feats);
        const int64_t n_lfr = (int64_t) feats.size() / n_feat;
        if (n_lfr > 0) {  // a chunk without a whole frame gives no audio tokens
            output.push_back(funasr_mtmd_mel(feats.data(), n_lfr, p.n_mels, p.lfr_m));
        }
    }
    return true;
}

bool mtmd_audio_preprocessor_funasr::preprocess(const float * samples, size_t n_samples,
                                                std::vector<mtmd_audio_mel> & output) const {
    if (!frontend) {
        return false;
    }
    return funasr_audio_to_mel_chunks(*frontend, hparams.audio_chunk_len, samples, n_samples, output);
}
