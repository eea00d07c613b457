// funasr projector: hyper-parameters, tensors and token count, called from clip.cpp's switches.
#include "funasr.h"

#include "gguf.h"

#include <stdexcept>

#ifndef FUNASR_CPP_MTMD_PATCH
#error "llama.cpp tree is not patched for funasr-cpp: apply third_party/patches/*.patch"
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

void funasr_load_hparams(clip_hparams & hp, const gguf_context * ctx) {
    auto & f = hp.funasr;
    f.lfr_m         = get_u32(ctx, "funasr.frontend.lfr_m", 7);
    f.lfr_n         = get_u32(ctx, "funasr.frontend.lfr_n", 6);
    f.enc_blocks    = get_u32(ctx, "funasr.encoder.num_blocks", 0, true);
    f.adaptor_heads = get_u32(ctx, "funasr.adaptor.head_count", 8);
    f.adaptor_eps   = get_f32(ctx, "funasr.adaptor.layer_norm_epsilon", 1e-12f);
    f.cmvn_shift    = get_f32_array(ctx, "funasr.frontend.cmvn_shift");
    f.cmvn_scale    = get_f32_array(ctx, "funasr.frontend.cmvn_scale");
    const size_t n_feat = (size_t) hp.n_mel_bins * f.lfr_m;
    if (f.cmvn_shift.size() != f.cmvn_scale.size() || (!f.cmvn_shift.empty() && f.cmvn_shift.size() != n_feat)) {
        throw std::runtime_error("funasr: CMVN vectors must both have n_mel_bins * lfr_m values");
    }
    if (f.enc_blocks < 1 || f.enc_blocks > hp.n_layer) {
        throw std::runtime_error("funasr: funasr.encoder.num_blocks out of range");
    }

    const float sr = (float) get_u32(ctx, "funasr.frontend.sample_rate", 16000);
    hp.audio_sample_rate = (int32_t) sr;  // drives the resampling of decoded audio files
    hp.audio_window_len  = (int32_t) (sr * get_f32(ctx, "funasr.frontend.frame_length_ms", 25.0f) / 1000.0f);
    hp.audio_hop_len     = (int32_t) (sr * get_f32(ctx, "funasr.frontend.frame_shift_ms", 10.0f) / 1000.0f);
    hp.audio_n_fft       = 512;  // round_to_power_of_two(400)
    hp.audio_chunk_len   = 30;   // seconds of audio per chunk (each chunk is encoded on its own)
    hp.warmup_audio_size = f.lfr_m * 100;  // warmup input must be whole LFR frames
}

void funasr_load_tensors(clip_model & model,
                         const std::function<ggml_tensor *(const std::string &, bool)> & get_tensor) {
    const auto & hp = model.hparams;
    for (int il = 0; il < hp.n_layer; ++il) {
        model.layers[il].conv_dw_w = get_tensor(string_format("a.blk.%d.conv_dw.weight", il), true);
    }
    model.mm_norm_pre_w = get_tensor("mm.a.norm_pre.weight", true);  // tp_norm
    model.mm_norm_pre_b = get_tensor("mm.a.norm_pre.bias", true);
    model.mm_1_w = get_tensor("mm.a.mlp.1.weight", true);
    model.mm_1_b = get_tensor("mm.a.mlp.1.bias", true);
    model.mm_2_w = get_tensor("mm.a.mlp.2.weight", true);
    model.mm_2_b = get_tensor("mm.a.mlp.2.bias", true);
    for (int il = 0;; ++il) {
        ggml_tensor * q_w = get_tensor(string_format(TN_MM_A_LOCAL_ATTN_Q, il, "weight"), false);
        if (!q_w) {
            break;
        }
        clip_layer layer;
        layer.q_w = q_w;
        layer.q_b = get_tensor(string_format(TN_MM_A_LOCAL_ATTN_Q, il, "bias"), true);
        layer.k_w = get_tensor(string_format(TN_MM_A_LOCAL_ATTN_K, il, "weight"), true);
        layer.k_b = get_tensor(string_format(TN_MM_A_LOCAL_ATTN_K, il, "bias"), true);
        layer.v_w = get_tensor(string_format(TN_MM_A_LOCAL_ATTN_V, il, "weight"), true);
        layer.v_b = get_tensor(string_format(TN_MM_A_LOCAL_ATTN_V, il, "bias"), true);
        layer.o_w = get_tensor(string_format(TN_MM_A_LOCAL_ATTN_OUT, il, "weight"), true);
        layer.o_b = get_tensor(string_format(TN_MM_A_LOCAL_ATTN_OUT, il, "bias"), true);
        layer.ln_1_w = get_tensor(string_format(TN_MM_A_LOCAL_LN1, il, "weight"), true);
        layer.ln_1_b = get_tensor(string_format(TN_MM_A_LOCAL_LN1, il, "bias"), true);
        layer.ln_2_w = get_tensor(string_format(TN_MM_A_LOCAL_LN2, il, "weight"), true);
        layer.ln_2_b = get_tensor(string_format(TN_MM_A_LOCAL_LN2, il, "bias"), true);
        layer.ff_up_w = get_tensor(string_format(TN_MM_A_LOCAL_FFN_UP, il, "weight"), true);
        layer.ff_up_b = get_tensor(string_format(TN_MM_A_LOCAL_FFN_UP, il, "bias"), true);
        layer.ff_down_w = get_tensor(string_format(TN_MM_A_LOCAL_FFN_DOWN, il, "weight"), true);
        layer.ff_down_b = get_tensor(string_format(TN_MM_A_LOCAL_FFN_DOWN, il, "bias"), true);
        model.mm_a_local_layers.push_back(layer);
    }
    if (model.mm_a_local_layers.empty()) {
        throw std::runtime_error("funasr: mmproj has no adaptor blocks (mm.a.local_blk.0.*)");
    }
}

int funasr_n_output_tokens(const clip_hparams & hp, int nx) {
    // nx = lfr_m sub-frames per LFR frame; the adaptor keeps ~T/8 rows (use_low_frame_rate)
    const int t = nx / hp.funasr.lfr_m;
    if (t <= 0) {
        return 0;
    }
    const int o1 = 1 + (t - 1) / 2;
    const int o2 = 1 + (o1 - 1) / 2;
    return (o2 - 1) / 2 + 1;
}
