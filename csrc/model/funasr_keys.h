// GGUF key and tensor names of funasr-cpp's files (the mmproj and the FSMN-VAD GGUF), as llama.cpp's
// tools/mtmd/clip-impl.h lists its own: KEY_* metadata keys, TN_* tensor names (printf formats: %d = layer
// index, %s = "weight"/"bias" or as noted). python/funasr_cpp/keys.py holds the same names and values in the
// same order; tests/test_keys.py checks that the two agree.
#pragma once

// general / tokenizer keys (llama.cpp's names)
#define KEY_GENERAL_ARCH "general.architecture"      // ARCH_CLIP for our mmproj, ARCH_VAD for the VAD
#define KEY_GENERAL_NAME "general.name"              // model name
#define KEY_TOKEN_TYPE   "tokenizer.ggml.token_type" // token types of the LLM vocabulary (detokenizing)

// clip keys mtmd reads for an audio encoder (values of the SAN-M encoder)
#define KEY_CLIP_HAS_VISION    "clip.has_vision_encoder"                 // false: our mmproj has no vision tower
#define KEY_CLIP_HAS_AUDIO     "clip.has_audio_encoder"                  // true: our mmproj is an audio encoder
#define KEY_CLIP_PROJ_TYPE     "clip.projector_type"                     // projector name, PROJECTOR_FUNASR
#define KEY_CLIP_A_EMBD        "clip.audio.embedding_length"             // encoder width
#define KEY_CLIP_A_HEAD_COUNT  "clip.audio.attention.head_count"         // encoder attention heads
#define KEY_CLIP_A_FFN         "clip.audio.feed_forward_length"          // encoder feed-forward width
#define KEY_CLIP_A_BLOCK_COUNT "clip.audio.block_count"                  // encoder blocks, all of them
#define KEY_CLIP_A_PROJ_DIM    "clip.audio.projection_dim"               // adaptor output width = the LLM's n_embd
#define KEY_CLIP_A_LN_EPS      "clip.audio.attention.layer_norm_epsilon" // encoder layer-norm epsilon
#define KEY_CLIP_A_N_MEL_BINS  "clip.audio.num_mel_bins"                 // mel bins of one fbank frame (before LFR)
#define KEY_CLIP_A_CONV_KERNEL "clip.audio.conv_kernel_size"             // FSMN memory kernel taps

// funasr.source.*: where the weights came from
#define KEY_SOURCE_LAYOUT  "funasr.source.layout"  // release layout (funasr folder or Hugging Face)
#define KEY_SOURCE_VARIANT "funasr.source.variant" // model variant of the release
#define KEY_SOURCE_RELEASE "funasr.source.release" // known release name, or empty
#define KEY_SOURCE_FILES   "funasr.source.files"   // "name:sha256" of each source file, space separated

// funasr.frontend.*: WavFrontend (Kaldi fbank + LFR + CMVN)
#define KEY_FE_SAMPLE_RATE     "funasr.frontend.sample_rate"     // input sample rate in Hz
#define KEY_FE_WINDOW          "funasr.frontend.window"          // analysis window name (hamming, ...)
#define KEY_FE_FRAME_LENGTH_MS "funasr.frontend.frame_length_ms" // fbank frame length in ms
#define KEY_FE_FRAME_SHIFT_MS  "funasr.frontend.frame_shift_ms"  // fbank frame shift in ms
#define KEY_FE_LFR_M           "funasr.frontend.lfr_m"           // LFR: frames stacked per output row
#define KEY_FE_LFR_N           "funasr.frontend.lfr_n"           // LFR: frames advanced per output row
#define KEY_FE_PREEMPHASIS     "funasr.frontend.preemphasis"     // pre-emphasis coefficient
#define KEY_FE_LOW_FREQ        "funasr.frontend.low_freq"        // lowest mel frequency in Hz
#define KEY_FE_HIGH_FREQ       "funasr.frontend.high_freq"       // highest mel frequency in Hz (0 = Nyquist)
#define KEY_FE_SNIP_EDGES      "funasr.frontend.snip_edges"      // only frames wholly inside the audio
#define KEY_FE_INPUT_SCALE     "funasr.frontend.input_scale"     // samples are multiplied by this before the fbank
#define KEY_FE_CMVN_SHIFT      "funasr.frontend.cmvn_shift"      // CMVN <AddShift> per LFR feature
#define KEY_FE_CMVN_SCALE      "funasr.frontend.cmvn_scale"      // CMVN <Rescale> per LFR feature

// funasr.encoder.*: SAN-M encoder
#define KEY_ENC_NUM_BLOCKS  "funasr.encoder.num_blocks"  // encoders0 + encoders blocks (before after_norm)
#define KEY_ENC_TP_BLOCKS   "funasr.encoder.tp_blocks"   // tp_encoders blocks (after after_norm)
#define KEY_ENC_SANM_SHIFT  "funasr.encoder.sanm_shift"  // FSMN memory shift (upstream ignores a negative one)
#define KEY_ENC_INPUT_SCALE "funasr.encoder.input_scale" // features are multiplied by this (sqrt of the width)

// funasr.adaptor.*: the Transformer adaptor into the LLM's width
#define KEY_ADP_BLOCK_COUNT    "funasr.adaptor.block_count"        // adaptor blocks
#define KEY_ADP_HEAD_COUNT     "funasr.adaptor.head_count"         // adaptor attention heads
#define KEY_ADP_LN_EPS         "funasr.adaptor.layer_norm_epsilon" // adaptor layer-norm epsilon
#define KEY_ADP_DOWNSAMPLE     "funasr.adaptor.downsample_rate"    // encoder frames stacked per adaptor input row
#define KEY_ADP_LOW_FRAME_RATE "funasr.adaptor.use_low_frame_rate" // keep only fake_token_len(T) output rows

// funasr.ctc.*: the CTC branch (timestamps)
#define KEY_CTC_STATUS         "funasr.ctc.status"             // "complete", "incomplete" or "absent"
#define KEY_CTC_MISSING        "funasr.ctc.missing_tensors"    // CTC tensors the release lacks
#define KEY_CTC_BLOCK_COUNT    "funasr.ctc.block_count"        // CTC decoder blocks
#define KEY_CTC_HEAD_COUNT     "funasr.ctc.head_count"         // CTC decoder attention heads
#define KEY_CTC_LN_EPS         "funasr.ctc.layer_norm_epsilon" // CTC decoder layer-norm epsilon
#define KEY_CTC_DOWNSAMPLE     "funasr.ctc.downsample_rate"    // encoder frames stacked per CTC input row
#define KEY_CTC_VOCAB_SIZE     "funasr.ctc.vocab_size"         // CTC output classes
#define KEY_CTC_BLANK_ID       "funasr.ctc.blank_id"           // CTC blank class
#define KEY_CTC_TIKTOKEN_RANKS "funasr.ctc.tiktoken_ranks"     // CTC tokens as base64 strings, in rank order

// fsmn_vad.*: the FSMN-VAD GGUF
#define KEY_VAD_SOURCE_FOLDER         "fsmn_vad.source.folder"             // name of the release folder
#define KEY_VAD_SOURCE_SHA256         "fsmn_vad.source.sha256.%s"          // sha256 of source file %s
#define KEY_VAD_FE_SAMPLE_RATE        "fsmn_vad.frontend.sample_rate"      // input sample rate in Hz
#define KEY_VAD_FE_WINDOW             "fsmn_vad.frontend.window"           // analysis window name
#define KEY_VAD_FE_N_MELS             "fsmn_vad.frontend.n_mels"           // mel bins per fbank frame
#define KEY_VAD_FE_FRAME_LENGTH       "fsmn_vad.frontend.frame_length"     // fbank frame length in samples
#define KEY_VAD_FE_FRAME_SHIFT        "fsmn_vad.frontend.frame_shift"      // fbank frame shift in samples
#define KEY_VAD_FE_LFR_M              "fsmn_vad.frontend.lfr_m"            // LFR: frames stacked per row
#define KEY_VAD_FE_LFR_N              "fsmn_vad.frontend.lfr_n"            // LFR: frames advanced per row (1)
#define KEY_VAD_FE_CMVN_SHIFT         "fsmn_vad.frontend.cmvn_shift"       // CMVN <AddShift> per feature
#define KEY_VAD_FE_CMVN_SCALE         "fsmn_vad.frontend.cmvn_scale"       // CMVN <Rescale> per feature
#define KEY_VAD_ENC_INPUT_DIM         "fsmn_vad.encoder.input_dim"         // features per frame
#define KEY_VAD_ENC_INPUT_AFFINE_DIM  "fsmn_vad.encoder.input_affine_dim"  // width of in_linear1
#define KEY_VAD_ENC_FSMN_LAYERS       "fsmn_vad.encoder.fsmn_layers"       // FSMN layers
#define KEY_VAD_ENC_LINEAR_DIM        "fsmn_vad.encoder.linear_dim"        // width between FSMN layers
#define KEY_VAD_ENC_PROJ_DIM          "fsmn_vad.encoder.proj_dim"          // width of the FSMN memory
#define KEY_VAD_ENC_LORDER            "fsmn_vad.encoder.lorder"            // left memory taps
#define KEY_VAD_ENC_RORDER            "fsmn_vad.encoder.rorder"            // right memory taps (0 = none)
#define KEY_VAD_ENC_LSTRIDE           "fsmn_vad.encoder.lstride"           // left memory stride
#define KEY_VAD_ENC_RSTRIDE           "fsmn_vad.encoder.rstride"           // right memory stride
#define KEY_VAD_ENC_OUTPUT_AFFINE_DIM "fsmn_vad.encoder.output_affine_dim" // width of out_linear1
#define KEY_VAD_ENC_OUTPUT_DIM        "fsmn_vad.encoder.output_dim"        // pdfs (posterior classes)
#define KEY_VAD_ENC_USE_SOFTMAX       "fsmn_vad.encoder.use_softmax"       // posteriors through a softmax
#define KEY_VAD_OPTION                "fsmn_vad.options.%s"                // VADXOptions field %s (upstream's name)

// key prefixes (listing a file's keys)
#define KEY_PREFIX_FUNASR   "funasr."                // every funasr-specific mmproj key starts so
#define KEY_PREFIX_VAD      "fsmn_vad."              // every FSMN-VAD key starts so
#define KEY_PREFIX_VAD_CMVN "fsmn_vad.frontend.cmvn" // the VAD's two CMVN arrays

// values
#define ARCH_CLIP        "clip"     // general.architecture of an mmproj
#define ARCH_VAD         "fsmn_vad" // general.architecture of an FSMN-VAD GGUF
#define PROJECTOR_FUNASR "funasr"   // clip.projector_type of our mmproj

// mmproj tensors: %d = layer index, %s = "weight" or "bias" unless noted
#define TN_ENC_POS_EMBD "a.position_embd.weight"  // sinusoidal position table, row r = position r+1
#define TN_ENC_BLK      "a.blk.%d.%s.%s"          // SAN-M block tensor: block, a TN_PART_*, weight or bias
#define TN_ENC_CONV_DW  "a.blk.%d.conv_dw.weight" // FSMN depthwise memory kernel [taps, channels]
#define TN_ENC_POST_LN  "a.post_ln.%s"            // after_norm (between encoders and tp_encoders)
#define TN_ADP_NORM_PRE "mm.a.norm_pre.%s"        // tp_norm (encoder output norm)
#define TN_ADP_MLP      "mm.a.mlp.%d.%s"          // adaptor linear1 (%d = 1, ReLU) and linear2 (%d = 2)
#define TN_ADP_BLK      "mm.a.local_blk.%d.%s.%s" // adaptor block tensor: block, a TN_PART_*, weight or bias
#define TN_CTC_MLP      "ctc.mlp.%d.%s"           // CTC decoder linear1 (%d = 1) and linear2 (%d = 2)
#define TN_CTC_BLK      "ctc.blk.%d.%s.%s"        // CTC decoder block tensor: block, a TN_PART_*, weight or bias
#define TN_CTC_PROJ     "ctc.out.%s"              // CTC output projection (ctc_lo)

// parts of a block (the first %s of TN_*_BLK)
#define TN_PART_LN1      "ln1"      // norm1
#define TN_PART_LN2      "ln2"      // norm2
#define TN_PART_ATTN_QKV "attn_qkv" // SAN-M fused q/k/v projection
#define TN_PART_ATTN_Q   "attn_q"   // query projection
#define TN_PART_ATTN_K   "attn_k"   // key projection
#define TN_PART_ATTN_V   "attn_v"   // value projection
#define TN_PART_ATTN_OUT "attn_out" // attention output projection
#define TN_PART_FFN_UP   "ffn_up"   // feed_forward.w_1
#define TN_PART_FFN_DOWN "ffn_down" // feed_forward.w_2

// FSMN-VAD tensors: %d = FSMN layer, %s = "weight" or "bias"
#define TN_VAD_IN1             "in_linear1.%s"             // input affine 1
#define TN_VAD_IN2             "in_linear2.%s"             // input affine 2
#define TN_VAD_FSMN_LINEAR     "fsmn.%d.linear.%s"         // FSMN layer projection (a weight, no bias)
#define TN_VAD_FSMN_CONV_LEFT  "fsmn.%d.conv_left.weight"  // left memory kernel [taps, channels]
#define TN_VAD_FSMN_CONV_RIGHT "fsmn.%d.conv_right.weight" // right memory kernel [taps, channels]
#define TN_VAD_FSMN_AFFINE     "fsmn.%d.affine.%s"         // FSMN layer output affine
#define TN_VAD_OUT1            "out_linear1.%s"            // output affine 1
#define TN_VAD_OUT2            "out_linear2.%s"            // output affine 2 (pdf logits)
