// funasr projector graph: SenseVoice SAN-M encoder + Fun-ASR adaptor (+ the optional CTC branch),
// following funasr 1.4.16 models/sense_voice/model.py (SenseVoiceEncoderSmall), models/llm_asr/adaptor.py
// (Transformer) and models/fun_asr_nano/model.py (FunASRNano.inference_llm, the CTC part).
#include "model/funasr.h"

#include <cmath>

// SAN-M self-attention memory: per-channel depthwise conv over time (kernel K, zero padding
// `left` before and `right` after, K - 1 in all) of v, plus v itself. v: [d, T] -> [d, T].
// The conv runs channels-last (ggml's CWHN layout: time is the conv's H axis, W = 1, channels
// contiguous, which is v's own layout): ggml then vectorizes over channels and threads over frames,
// and no transpose is needed. Strides of the size-1 axes are never used to address data; they are
// set so that ggml recognizes the layout (ggml_is_contiguous_channels and the kernel's check).
static ggml_tensor * build_fsmn(ggml_context * ctx0, ggml_tensor * v, ggml_tensor * kernel, int left, int right) {
    const int64_t d = v->ne[0];
    const int64_t k = kernel->ne[0];
    const size_t es = ggml_element_size(v);
    // padded explicitly (sanm_shift makes it asymmetric), which also makes v dense: [d, T + K - 1].
    // More than one frame in: a single dense frame would look contiguous to ggml, which would then
    // read it as the other layout (K = 1 is the same in both).
    ggml_tensor * x = ggml_pad_ext(ctx0, v, 0, 0, left, right, 0, 0, 0, 0);
    const int64_t t_in = x->ne[1];
    // [W = 1, H = T, C = d, N = 1] over x's data
    x = ggml_view_4d(ctx0, x, 1, t_in, d, 1, d * es, es, t_in * d * es, 0);
    x->nb[0] = 2 * es;
    // the kernel [K, d] as [KW = 1, KH = K, 1, C = d] with channels contiguous
    ggml_tensor * w = ggml_cont(ctx0, ggml_transpose(ctx0, ggml_reshape_2d(ctx0, kernel, k, d)));  // [d, K]
    const size_t ws = ggml_element_size(w);
    w = ggml_view_4d(ctx0, w, 1, k, 1, d, d * ws, ws, ws, 0);
    w->nb[0] = d * ws;
    x = ggml_conv_2d_dw_direct(ctx0, w, x, 1, 1, 0, 0, 1, 1);                    // CWHN [1, T, d, 1]
    x = ggml_view_2d(ctx0, x, d, x->ne[1], d * es, 0);                            // [d, T]
    return ggml_add(ctx0, x, v);
}

static ggml_tensor * build_linear(ggml_context * ctx0, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    x = ggml_mul_mat(ctx0, w, x);
    return b ? ggml_add(ctx0, x, b) : x;
}

// funasr's "Transformer" (llm_asr/adaptor.py), the adaptor and the CTC decoder: k consecutive
// frames stacked into one row (zero-padded to a multiple of k), linear1 -> ReLU -> linear2, then
// pre-LN transformer blocks (ReLU FFN). cur: [d_in, T] -> [d, (T - 1) / k + 1].
ggml_tensor * clip_graph_funasr::build_transformer(ggml_tensor * cur, ggml_tensor * const mlp[4],
                                                   const std::vector<clip_layer> & blocks, int k, int n_heads,
                                                   float eps, int il0, const char * name) {
    const int64_t n_frames = cur->ne[1];
    const int64_t n_rows = (n_frames - 1) / k + 1;
    if (k > 1) {
        cur = ggml_pad(ctx0, cur, 0, (int) (n_rows * k - n_frames), 0, 0);
        cur = ggml_reshape_2d(ctx0, cur, cur->ne[0] * k, n_rows);
    }
    cur = ggml_relu(ctx0, build_linear(ctx0, cur, mlp[0], mlp[1]));
    cur = build_linear(ctx0, cur, mlp[2], mlp[3]);
    const int64_t head_dim = cur->ne[0] / n_heads;
    const float kq_scale = 1.0f / std::sqrt((float) head_dim);
    for (size_t ib = 0; ib < blocks.size(); ++ib) {
        const auto & blk = blocks[ib];
        const int il = il0 + (int) ib;
        ggml_tensor * h = build_norm(cur, blk.ln_1_w, blk.ln_1_b, NORM_TYPE_NORMAL, eps, il);
        ggml_tensor * q = ggml_reshape_3d(ctx0, build_linear(ctx0, h, blk.q_w, blk.q_b), head_dim, n_heads, n_rows);
        ggml_tensor * kk = ggml_reshape_3d(ctx0, build_linear(ctx0, h, blk.k_w, blk.k_b), head_dim, n_heads, n_rows);
        ggml_tensor * v = ggml_reshape_3d(ctx0, build_linear(ctx0, h, blk.v_w, blk.v_b), head_dim, n_heads, n_rows);
        cur = ggml_add(ctx0, cur, build_attn(blk.o_w, blk.o_b, q, kk, v, nullptr, kq_scale, il));
        h = build_norm(cur, blk.ln_2_w, blk.ln_2_b, NORM_TYPE_NORMAL, eps, il);
        h = ggml_relu(ctx0, build_linear(ctx0, h, blk.ff_up_w, blk.ff_up_b));
        cur = ggml_add(ctx0, cur, build_linear(ctx0, h, blk.ff_down_w, blk.ff_down_b));
        cb(cur, name, il);
    }
    return cur;
}

// The CTC branch of FunASRNano.inference_llm (fun_asr_nano/model.py): ctc_decoder on the encoder
// output, ctc.ctc_lo, log_softmax. What leaves the graph is small: per frame the decoder output
// and the log-softmax normalizer (any token's log-prob is then its logit minus it, see
// csrc/engine/ctc_head.cpp) and the greedy token; the [vocab, T] logits stay in the compute buffer.
void clip_graph_funasr::build_ctc(ggml_tensor * enc_out) {
    const auto & fp = hparams.funasr;
    const auto & ctc = model.funasr_ctc;
    ggml_tensor * mlp[4] = {ctc.mlp_1_w, ctc.mlp_1_b, ctc.mlp_2_w, ctc.mlp_2_b};
    ggml_tensor * h = build_transformer(enc_out, mlp, ctc.blocks, fp.ctc_downsample, fp.ctc_heads, fp.ctc_eps,
                                        n_layer + (int) model.mm_a_local_layers.size(), "ctc_decoder_out");
    ggml_tensor * logits = build_linear(ctx0, h, ctc.out_w, ctc.out_b);  // [vocab, T]
    cb(logits, "ctc_logits", -1);
    const int64_t n_vocab = logits->ne[0];
    const int64_t n_frames = logits->ne[1];

    ggml_tensor * best = ggml_argmax(ctx0, logits);  // [T] i32, torch.argmax's first maximum
    ggml_set_name(best, "out_codes");
    ggml_set_output(best);
    ggml_build_forward_expand(gf, best);
    if (!want_log_probs) {
        return;
    }

    // log-sum-exp per frame, shifted by the frame's largest logit (picked at its first argmax:
    // every logit viewed as a one-element row, one row gathered per frame)
    ggml_tensor * cells = ggml_view_3d(ctx0, logits, 1, n_vocab, n_frames, logits->nb[0], logits->nb[1], 0);
    ggml_tensor * top = ggml_get_rows(ctx0, cells, ggml_reshape_2d(ctx0, best, 1, n_frames));
    top = ggml_reshape_2d(ctx0, top, 1, n_frames);
    ggml_tensor * lse = ggml_log(ctx0, ggml_sum_rows(ctx0, ggml_exp(ctx0, ggml_sub(ctx0, logits, top))));
    lse = ggml_add(ctx0, lse, top);  // [1, T]

    ggml_tensor * feats = ggml_concat(ctx0, h, lse, 0);  // [width + 1, T]
    ggml_set_name(feats, "out_feats");
    ggml_set_output(feats);
    ggml_build_forward_expand(gf, feats);
}

// The encoder's input: the preprocessor's layout (funasr_mtmd_mel) back to LFR rows, scaled, plus
// the positions. -> [n_feat, n_frames]
ggml_tensor * clip_graph_funasr::build_lfr_input(int64_t n_sub, int64_t n_mel) {
    const auto & fp = hparams.funasr;
    const int lfr_m = fp.frontend.lfr_m;
    const int64_t n_frames = n_sub / lfr_m;    // LFR frames (60 ms each)
    const int64_t n_feat = n_mel * lfr_m;      // 560
    GGML_ASSERT(n_sub % lfr_m == 0 && n_frames > 0);
    GGML_ASSERT(n_frames <= model.position_embeddings->ne[1] && "audio chunk longer than the position table");

    // inp_raw [n_sub, n_mel]: frames contiguous -> LFR rows [n_feat, n_frames]
    ggml_tensor * inp = build_inp_raw(1);
    ggml_tensor * cur = ggml_cont(ctx0, ggml_transpose(ctx0, ggml_reshape_2d(ctx0, inp, n_sub, n_mel)));
    cur = ggml_reshape_2d(ctx0, cur, n_feat, n_frames);
    cb(cur, "lfr_feats", -1);

    // x * sqrt(d_model) + sinusoidal positions 1..T (table row r = position r+1)
    cur = ggml_scale(ctx0, cur, fp.enc_input_scale);
    ggml_tensor * pos = ggml_view_2d(ctx0, model.position_embeddings, n_feat, n_frames,
                                     model.position_embeddings->nb[1], 0);
    cur = ggml_add(ctx0, cur, pos);
    cb(cur, "enc_in", -1);
    return cur;
}

// SenseVoiceEncoderSmall: encoders0 + encoders, after_norm, tp_encoders, tp_norm (SAN-M blocks:
// self-attention plus the FSMN memory of v). cur: [n_feat, T] -> [n_embd, T]
ggml_tensor * clip_graph_funasr::build_encoder(ggml_tensor * cur) {
    const auto & fp = hparams.funasr;
    const int64_t n_frames = cur->ne[1];
    const float enc_kq_scale = 1.0f / std::sqrt((float) d_head);
    const int fsmn_left  = fp.fsmn_left(hparams.audio_conv_kernel_size);
    const int fsmn_right = fp.fsmn_right(hparams.audio_conv_kernel_size);
    for (int il = 0; il < n_layer; ++il) {
        const auto & layer = model.layers[il];
        const int64_t d_in = cur->ne[0];

        ggml_tensor * h = build_norm(cur, layer.ln_1_w, layer.ln_1_b, NORM_TYPE_NORMAL, eps, il);
        ggml_tensor * qkv = build_linear(ctx0, h, layer.qkv_w, layer.qkv_b);  // [3*n_embd, T]
        const size_t es = ggml_element_size(qkv);
        auto head_view = [&](int i) {  // i-th of q | k | v as [d_head, n_head, T]
            return ggml_view_3d(ctx0, qkv, d_head, n_head, n_frames, d_head * es, qkv->nb[1],
                                (size_t) i * n_embd * es);
        };
        ggml_tensor * v = ggml_view_2d(ctx0, qkv, n_embd, n_frames, qkv->nb[1], 2 * n_embd * es);
        ggml_tensor * memory = build_fsmn(ctx0, v, layer.conv_dw_w, fsmn_left, fsmn_right);
        cb(memory, "fsmn", il);

        ggml_tensor * attn = build_attn(layer.o_w, layer.o_b, head_view(0), head_view(1), head_view(2),
                                        nullptr, enc_kq_scale, il);
        ggml_tensor * y = ggml_add(ctx0, attn, memory);
        // encoders0 maps 560 -> 512 and has no residual around attention
        cur = d_in == n_embd ? ggml_add(ctx0, cur, y) : y;

        h = build_norm(cur, layer.ln_2_w, layer.ln_2_b, NORM_TYPE_NORMAL, eps, il);
        h = ggml_relu(ctx0, build_linear(ctx0, h, layer.ff_up_w, layer.ff_up_b));
        cur = ggml_add(ctx0, cur, build_linear(ctx0, h, layer.ff_down_w, layer.ff_down_b));
        cb(cur, "layer_out", il);

        if (il == fp.enc_blocks - 1) {  // after_norm, then the tp_encoders
            cur = build_norm(cur, model.post_ln_w, model.post_ln_b, NORM_TYPE_NORMAL, eps, il);
        }
    }
    cur = build_norm(cur, model.mm_norm_pre_w, model.mm_norm_pre_b, NORM_TYPE_NORMAL, eps, -1);  // tp_norm
    cb(cur, "enc_out", -1);
    return cur;
}

ggml_cgraph * clip_graph_funasr::build() {
    const auto & fp = hparams.funasr;
    const int64_t n_sub = img.nx();  // lfr_m sub-frames per LFR frame
    ggml_tensor * cur = build_encoder(build_lfr_input(n_sub, img.ny()));

    if (want_ctc && fp.has_ctc()) {
        build_ctc(cur);  // before the adaptor: the audio rows stay the graph's last node
    }

    ggml_tensor * adaptor_mlp[4] = {model.mm_1_w, model.mm_1_b, model.mm_2_w, model.mm_2_b};
    cur = build_transformer(cur, adaptor_mlp, model.mm_a_local_layers, fp.downsample_rate, fp.adaptor_heads,
                            fp.adaptor_eps, n_layer, "adaptor_out");
    const int64_t d_llm = cur->ne[0];

    // use_low_frame_rate: the LLM sees only the first ~T/8 rows (they attend over all rows)
    const int n_out = funasr_n_output_tokens(hparams, (int) n_sub);
    cur = ggml_cont(ctx0, ggml_view_2d(ctx0, cur, d_llm, n_out, cur->nb[1], 0));
    cb(cur, "audio_rows", -1);
    ggml_build_forward_expand(gf, cur);
    return gf;
}
