// funasr projector graph: SenseVoice SAN-M encoder + Fun-ASR adaptor, following funasr 1.4.16
// models/sense_voice/model.py (SenseVoiceEncoderSmall) and models/llm_asr/adaptor.py (Transformer).
#include "funasr.h"

#include <cmath>

// SAN-M self-attention memory: per-channel depthwise conv over time (kernel K, zero padding
// `left` before and `right` after, K - 1 in all) of v, plus v itself. v: [d, T] -> [d, T].
static ggml_tensor * build_fsmn(ggml_context * ctx0, ggml_tensor * v, ggml_tensor * kernel, int left, int right) {
    const int64_t d = v->ne[0];
    const int64_t t = v->ne[1];
    const int64_t k = kernel->ne[0];
    ggml_tensor * x = ggml_cont(ctx0, ggml_transpose(ctx0, v));                 // [T, d]
    x = ggml_reshape_4d(ctx0, x, t, 1, d, 1);                                     // W=T, H=1, C=d
    int pad = left;
    if (left != right) {  // sanm_shift != 0: pad explicitly, the conv pads symmetrically only
        x = ggml_pad_ext(ctx0, x, left, right, 0, 0, 0, 0, 0, 0);
        pad = 0;
    }
    ggml_tensor * w = ggml_reshape_4d(ctx0, kernel, k, 1, 1, d);                  // KW=K, KH=1, 1, C
    x = ggml_conv_2d_dw_direct(ctx0, w, x, 1, 1, pad, 0, 1, 1);                  // [T, 1, d, 1]
    x = ggml_cont(ctx0, ggml_transpose(ctx0, ggml_reshape_2d(ctx0, x, t, d)));  // [d, T]
    return ggml_add(ctx0, x, v);
}

static ggml_tensor * build_linear(ggml_context * ctx0, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    x = ggml_mul_mat(ctx0, w, x);
    return b ? ggml_add(ctx0, x, b) : x;
}

ggml_cgraph * clip_graph_funasr::build() {
    const auto & fp = hparams.funasr;
    const int64_t n_sub = img.nx();            // lfr_m sub-frames per LFR frame
    const int64_t n_mel = img.ny();
    const int64_t n_frames = n_sub / fp.lfr_m; // LFR frames (60 ms each)
    const int64_t n_feat = n_mel * fp.lfr_m;   // 560
    GGML_ASSERT(n_sub % fp.lfr_m == 0 && n_frames > 0);
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

    // adaptor: k consecutive frames stacked into one row (zero-padded to a multiple of k),
    // linear1 -> ReLU -> linear2, then pre-LN transformer blocks (ReLU FFN)
    const int64_t k = fp.downsample_rate;
    const int64_t n_rows = (n_frames - 1) / k + 1;
    if (k > 1) {
        cur = ggml_pad(ctx0, cur, 0, (int) (n_rows * k - n_frames), 0, 0);
        cur = ggml_reshape_2d(ctx0, cur, cur->ne[0] * k, n_rows);
    }
    cur = ggml_relu(ctx0, build_linear(ctx0, cur, model.mm_1_w, model.mm_1_b));
    cur = build_linear(ctx0, cur, model.mm_2_w, model.mm_2_b);
    const int64_t d_llm = cur->ne[0];
    const int64_t a_heads = fp.adaptor_heads;
    const int64_t a_head_dim = d_llm / a_heads;
    for (size_t ib = 0; ib < model.mm_a_local_layers.size(); ++ib) {
        const auto & blk = model.mm_a_local_layers[ib];
        const int il = (int) (n_layer + ib);
        ggml_tensor * h = build_norm(cur, blk.ln_1_w, blk.ln_1_b, NORM_TYPE_NORMAL, fp.adaptor_eps, il);
        ggml_tensor * q = ggml_reshape_3d(ctx0, build_linear(ctx0, h, blk.q_w, blk.q_b), a_head_dim, a_heads, n_rows);
        ggml_tensor * k = ggml_reshape_3d(ctx0, build_linear(ctx0, h, blk.k_w, blk.k_b), a_head_dim, a_heads, n_rows);
        ggml_tensor * v = ggml_reshape_3d(ctx0, build_linear(ctx0, h, blk.v_w, blk.v_b), a_head_dim, a_heads, n_rows);
        cur = ggml_add(ctx0, cur, build_attn(blk.o_w, blk.o_b, q, k, v, nullptr,
                                             1.0f / std::sqrt((float) a_head_dim), il));
        h = build_norm(cur, blk.ln_2_w, blk.ln_2_b, NORM_TYPE_NORMAL, fp.adaptor_eps, il);
        h = ggml_relu(ctx0, build_linear(ctx0, h, blk.ff_up_w, blk.ff_up_b));
        cur = ggml_add(ctx0, cur, build_linear(ctx0, h, blk.ff_down_w, blk.ff_down_b));
        cb(cur, "adaptor_out", il);
    }

    // use_low_frame_rate: the LLM sees only the first ~T/8 rows (they attend over all rows)
    const int n_out = funasr_n_output_tokens(hparams, (int) n_sub);
    cur = ggml_cont(ctx0, ggml_view_2d(ctx0, cur, d_llm, n_out, cur->nb[1], 0));
    cb(cur, "audio_rows", -1);
    ggml_build_forward_expand(gf, cur);
    return gf;
}
