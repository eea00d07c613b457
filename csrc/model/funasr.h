// funasr-cpp: the Fun-ASR-Nano audio projector for llama.cpp's mtmd ("funasr"), following funasr
// 1.4.16 models/fun_asr_nano/model.py (FunASRNano: frontend -> audio_encoder -> audio_adaptor, and
// the CTC branch). Only the mtmd glue lives here: the preprocessor, the clip hparams / tensor
// loading, the graph class and the patched encode entry point. Compiled into libmtmd (our
// CMakeLists adds the sources with target_sources); the small patch in third_party/patches only
// dispatches to the entry points below. The frontend itself is frontend/frontend.h.
#pragma once

#include "clip-graph.h"
#include "ggml-cpp.h"
#include "frontend/frontend.h"
#include "mtmd-audio.h"
#include "mtmd.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

struct gguf_context;

// ----------------------------------------------------------------------------- preprocessor
// The mtmd input layout of LFR rows [n_rows, n_mels * lfr_m] (row-major): one mtmd_audio_mel with
// n_mel = n_mels and n_len = lfr_m * n_rows, column lfr_m * i + j holding sub-frame j of row i, so
// that num_mel_bins stays n_mels; the graph recovers the rows with a transpose + reshape.
mtmd_audio_mel funasr_mtmd_mel(const float * rows, int64_t n_rows, int n_mels, int lfr_m);

// mtmd preprocessor: the mmproj's frontend (hparams.funasr.frontend) over chunks of at most
// hparams.audio_chunk_len seconds, each in the layout above
struct mtmd_audio_preprocessor_funasr : mtmd_audio_preprocessor {
    mtmd_audio_preprocessor_funasr(const clip_ctx * ctx);
    void initialize() override;
    bool preprocess(const float * samples, size_t n_samples, std::vector<mtmd_audio_mel> & output) const override;

private:
    std::unique_ptr<funasr_frontend> frontend;
};

// the preprocessor's work: samples -> chunks of at most chunk_seconds (<= 0: one chunk) in the
// layout above; chunks without a whole frame are skipped
bool funasr_audio_to_mel_chunks(const funasr_frontend & fe, int chunk_seconds, const float * samples,
                                size_t n_samples, std::vector<mtmd_audio_mel> & output);

// ----------------------------------------------------------------------------- clip glue
// hparams case of clip_model_loader::load_hparams (reads funasr.* keys)
void funasr_load_hparams(clip_hparams & hparams, const gguf_context * ctx);
// tensors beyond the generic a.blk.N.* ones (FSMN kernels, adaptor)
void funasr_load_tensors(clip_model & model, const std::function<ggml_tensor *(const std::string &, bool)> & get_tensor);
// clip_model_loader's weight allocation: the default buffer `buft` (returned) gets every tensor of
// ctx_data except the matrix weights that one of the CPU backend's extra buffer types multiplies
// (AMX, repacked layouts: funasr_weights.cpp), which go to buffers of those types (added to extra)
ggml_backend_buffer_t funasr_alloc_weights(ggml_context * ctx_data, const clip_model & model, ggml_backend_t backend,
                                           ggml_backend_buffer_type_t buft, std::vector<ggml_backend_buffer_ptr> & extra);
// audio tokens for a chunk of nx = lfr_m * T sub-frames (use_low_frame_rate rule)
int funasr_n_output_tokens(const clip_hparams & hparams, int nx);

// ----------------------------------------------------------------------------- graph
// The graph's output is the LLM's audio rows (the last node, as clip_encode expects). When the
// caller asks for clip's optional outputs and the mmproj has the CTC branch, the graph also gives,
// per CTC frame, "out_codes" = the first argmax of ctc.out's logits (params->out_codes) and
// "out_feats" = [ctc_decoder output (ctc width) | log-sum-exp of the logits] (ctc width + 1
// floats; params->out_feats too: the normalizer is a pass over all logits a draft does not need).
struct clip_graph_funasr : clip_graph {
    clip_graph_funasr(clip_ctx * ctx, const clip_image_f32 & img, const clip_encode_params * params)
        : clip_graph(ctx, img), want_ctc(params && params->out_codes), want_log_probs(want_ctc && params->out_feats) {}
    ggml_cgraph * build() override;

private:
    ggml_tensor * build_lfr_input(int64_t n_sub, int64_t n_mel);
    ggml_tensor * build_encoder(ggml_tensor * cur);
    ggml_tensor * build_transformer(ggml_tensor * cur, ggml_tensor * const mlp[4], const std::vector<clip_layer> & blocks,
                                    int k, int n_heads, float eps, int il0, const char * name);
    void build_ctc(ggml_tensor * enc_out);
    bool want_ctc, want_log_probs;
};

// ----------------------------------------------------------------------------- encode with CTC
// mtmd_encode_chunk for an audio chunk that also asks for the CTC outputs above (ctc_best and,
// unless null, ctc_feats are replaced; empty without a CTC branch); the audio rows as
// mtmd_get_output_embd gives them. 0 on success. Defined in the patched mtmd.cpp: it needs
// mtmd's internals.
__attribute__((visibility("default"))) int32_t funasr_mtmd_encode_audio(
    mtmd_context * ctx, const mtmd_input_chunk * chunk, std::vector<float> * ctc_feats, std::vector<int32_t> * ctc_best);
