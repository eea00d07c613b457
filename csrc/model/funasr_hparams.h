// funasr-cpp: the funasr projector's hyper-parameters, one field per funasr.* key of the mmproj,
// following funasr 1.4.16 (frontends/wav_frontend.py WavFrontend, models/sense_voice/model.py
// SenseVoiceEncoderSmall, models/llm_asr/adaptor.py Transformer, models/fun_asr_nano/model.py FunASRNano).
// Included by the patched clip-model.h (clip_hparams::funasr), so it must not depend on clip.
//
// Defaults are upstream's code defaults, used when a key is missing (the frontend's are in
// frontend/frontend.h); docs/ARCHITECTURE.md lists them. funasr_load_hparams (funasr_clip.cpp) fills this
// struct and refuses values the graph cannot run.
#pragma once

#include "frontend/frontend.h"

#include <cstdint>
#include <vector>

struct ggml_tensor;
struct clip_layer;  // complete before clip_model (which holds funasr_ctc_tensors) is defined

struct funasr_hparams {
    // WavFrontend + Kaldi fbank. Its sample rate, mel bins and frame sizes are also clip's generic
    // fields (audio_sample_rate, n_mel_bins, audio_window_len, audio_hop_len), which mtmd reads;
    // funasr_load_hparams sets both from the same keys.
    funasr_frontend_params frontend;

    // SAN-M encoder (widths, heads, eps and layer count are the generic clip.audio.* keys)
    int32_t enc_blocks      = 0;     // encoders0 + encoders; after_norm follows them (required key)
    int32_t enc_tp_blocks   = 0;     // tp_encoders, then tp_norm
    int32_t sanm_shift      = 0;     // FSMN padding: left (K-1)/2 + shift, right K-1-left
    float   enc_input_scale = 0.0f;  // features x scale before the positions (key default sqrt(n_embd))

    // adaptor
    int32_t adaptor_blocks     = 2;
    int32_t adaptor_heads      = 8;
    float   adaptor_eps        = 1e-12f;
    int32_t downsample_rate    = 2;      // k encoder frames stacked into one adaptor row
    bool    use_low_frame_rate = false;  // true: the LLM sees the first ~T/8 rows, false: all rows

    // CTC branch (optional: ctc_blocks < 0 when the mmproj has none): the adaptor's Transformer
    // class again (ctc_decoder) on the encoder output, then ctc.ctc_lo and a log-softmax
    int32_t ctc_blocks     = -1;
    int32_t ctc_heads      = 8;
    float   ctc_eps        = 1e-12f;
    int32_t ctc_downsample = 1;
    int32_t ctc_vocab      = 0;
    int32_t ctc_blank      = 0;
    bool has_ctc() const { return ctc_blocks >= 0; }

    // FSMN zero padding on each side of the time axis for a kernel of k taps
    int32_t fsmn_left(int32_t k) const { return (k - 1) / 2 + (sanm_shift > 0 ? sanm_shift : 0); }
    int32_t fsmn_right(int32_t k) const { return k - 1 - fsmn_left(k); }
};

// The CTC branch's tensors (ctc.mlp.{1,2}, ctc.blk.J.*, ctc.out), held by the patched clip_model
// (clip_model::funasr_ctc); all null / empty when the mmproj has no CTC branch.
struct funasr_ctc_tensors {
    ggml_tensor * mlp_1_w = nullptr;
    ggml_tensor * mlp_1_b = nullptr;
    ggml_tensor * mlp_2_w = nullptr;
    ggml_tensor * mlp_2_b = nullptr;
    std::vector<clip_layer> blocks;
    ggml_tensor * out_w = nullptr;
    ggml_tensor * out_b = nullptr;
};
