// FSMN-VAD, following funasr 1.4.16: the FSMN network of funasr/models/fsmn_vad_streaming/encoder.py
// as a ggml graph, and model.py's decision logic (FsmnVADStreaming.inference, forward,
// DetectOneFrame, WindowDetector, GetFrameState) with the same arithmetic, so that the same
// posteriors give the same segments; the offline path here, the streaming one in vad_stream.cpp.
#include "vad/fsmn_vad.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"
#include "model/funasr_keys.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <stdexcept>

namespace funasr_vad {

// ============================================================================= decision logic

decider::decider(const options & o) : o_(o) {
    win_size_          = (int) (o.window_size_ms / o.frame_in_ms);
    sil2speech_frames_ = (int) (o.sil_to_speech_time_thres / o.frame_in_ms);
    speech2sil_frames_ = (int) (o.speech_to_sil_time_thres / o.frame_in_ms);
    win_.assign(std::max(win_size_, 1), 0);
    // init_cache: Stats(max_end_sil_frame_cnt_thresh = max_end_silence_time - speech_to_sil_time_thres)
    max_end_sil_        = o.max_end_silence_time - o.speech_to_sil_time_thres;
    speech_noise_thres_ = o.speech_noise_thres;
}

// GetFrameState: speech when the speech probability beats the noise probability by
// speech_noise_thres (and the SNR / level gates pass); otherwise silence, and the noise level is
// tracked. Python's math on doubles, as upstream.
bool decider::frame_is_speech(double sil, float db_f) {
    const double db  = db_f;
    const double snr = db - noise_db_;
    if (db < o_.decibel_thres) {
        return false;
    }
    double sum = sil;
    const double noise_prob  = std::log(sum) * o_.speech_2_noise_ratio;
    sum                      = 1.0 - sum;
    const double speech_prob = std::log(sum);
    if (std::exp(speech_prob) >= std::exp(noise_prob) + speech_noise_thres_) {
        return snr >= o_.snr_thres && db >= o_.decibel_thres;
    }
    if (noise_db_ < -99.9) {
        noise_db_ = db;
    } else {
        const int n = o_.noise_frame_num_used_for_snr;
        noise_db_   = (db + noise_db_ * (n - 1)) / n;
    }
    return false;
}

// WindowDetector.DetectOneFrame: a sliding count of speech frames with hysteresis
decider::change decider::window_detect(bool speech) {
    const int cur = speech ? 1 : 0;
    win_sum_ -= win_[win_pos_];
    win_sum_ += cur;
    win_[win_pos_] = cur;
    win_pos_       = (win_pos_ + 1) % win_size_;
    if (!win_speech_ && win_sum_ >= sil2speech_frames_) {
        win_speech_ = true;
        return change::sil2speech;
    }
    if (win_speech_ && win_sum_ <= speech2sil_frames_) {
        win_speech_ = false;
        return change::speech2sil;
    }
    return win_speech_ ? change::speech2speech : change::sil2sil;
}

int64_t decider::latency_frames() const {
    return win_size_ + (o_.do_extend ? (int64_t) (o_.lookback_time_start_point / o_.frame_in_ms) : 0);
}

// PopDataBufTillFrame (the sample buffer always holds the frames it is asked for here)
void decider::pop_till(int64_t frame) {
    data_buf_start_ = std::max(data_buf_start_, frame);
}

// PopDataToOutputBuf without the samples: only the segment times matter
void decider::pop_to_output(int64_t start, int64_t count, bool first_is_start, bool last_is_end) {
    const int64_t fs = (int64_t) o_.frame_in_ms;
    pop_till(start);
    if (out_buf_.empty() || first_is_start) {
        buffered b;
        b.start_ms = b.end_ms = start * fs;
        out_buf_.push_back(b);
    }
    buffered & cur = out_buf_.back();
    data_buf_start_ += count;
    cur.end_ms = (start + count) * fs;
    if (first_is_start) cur.has_start = true;
    if (last_is_end) cur.has_end = true;
}

void decider::on_silence(int64_t t) {
    latest_silence_ = t;
    if (state_ == state::start_not_detected) pop_till(t);
}

void decider::on_voice(int64_t t) {
    latest_speech_ = t;
    pop_to_output(t, 1, false, false);
}

void decider::on_voice_start(int64_t t, bool fake) {
    if (confirmed_start_ == -1) confirmed_start_ = t;  // upstream prints "not reset vad properly" otherwise
    if (!fake && state_ == state::start_not_detected) pop_to_output(confirmed_start_, 1, true, false);
}

void decider::on_voice_end(int64_t t, bool fake, bool /*last*/) {
    for (int64_t u = latest_speech_ + 1; u < t; ++u) on_voice(u);
    if (confirmed_end_ == -1) confirmed_end_ = t;
    if (!fake) pop_to_output(confirmed_end_, 1, false, true);
    ++n_end_detected_;
}

// ResetDetection (the dropping of cached samples and scores has no effect on the times)
void decider::reset_detection() {
    silence_run_     = 0;
    latest_speech_   = 0;
    latest_silence_  = -1;
    confirmed_start_ = -1;
    confirmed_end_   = -1;
    state_           = state::start_not_detected;
    win_pos_ = win_sum_ = 0;
    std::fill(win_.begin(), win_.end(), 0);
    win_speech_ = false;
}

// FsmnVADStreaming.DetectOneFrame. One function of ~65 lines on purpose: its branches are
// upstream's, in upstream's order, so that the two read side by side.
void decider::detect_frame(bool speech, int64_t t, bool final_frame) {
    speech                 = speech && std::fabs(1.0) > o_.fe_prior_thres;
    const change ch        = window_detect(speech);
    const double fs        = o_.frame_in_ms;
    const double max_frames = o_.max_single_segment_time / fs;
    auto end_here = [&](int64_t at) {
        on_voice_end(at, false, false);
        state_ = state::end_detected;
    };
    auto speech_frame = [&]() {  // a frame inside a segment: too long, going on, or the last one
        if (t - confirmed_start_ + 1 > max_frames) {
            end_here(t);
        } else if (!final_frame) {
            on_voice(t);
        } else {
            on_voice_end(t, false, true);
            state_ = state::end_detected;
        }
    };

    if (ch == change::sil2speech) {
        silence_run_ = 0;
        if (state_ == state::start_not_detected) {
            const int64_t start = std::max(data_buf_start_, t - latency_frames());
            on_voice_start(start, false);
            state_ = state::in_speech;
            for (int64_t u = start + 1; u <= t; ++u) on_voice(u);
        } else if (state_ == state::in_speech) {
            for (int64_t u = latest_speech_ + 1; u < t; ++u) on_voice(u);
            speech_frame();
        }
    } else if (ch == change::speech2sil || ch == change::speech2speech) {
        silence_run_ = 0;
        if (state_ == state::in_speech) speech_frame();
    } else if (ch == change::sil2sil) {
        silence_run_ += 1;
        if (state_ == state::start_not_detected) {
            const bool start_timeout = o_.detect_mode == 0 && silence_run_ * fs > o_.max_start_silence_time;
            if (start_timeout || (final_frame && n_end_detected_ == 0)) {
                for (int64_t u = latest_silence_ + 1; u < t; ++u) on_silence(u);
                on_voice_start(0, true);
                on_voice_end(0, true, false);
                state_ = state::end_detected;
            } else if (t >= latency_frames()) {
                on_silence(t - latency_frames());
            }
        } else if (state_ == state::in_speech) {
            if (silence_run_ * fs >= max_end_sil_) {
                int64_t lookback = (int64_t) (max_end_sil_ / fs);
                if (o_.do_extend) {
                    lookback -= (int64_t) (o_.lookahead_time_end_point / fs);
                    lookback -= 1;
                    lookback = std::max<int64_t>(0, lookback);
                }
                end_here(t - lookback);
            } else if (t - confirmed_start_ + 1 > max_frames) {
                end_here(t);
            } else if (o_.do_extend && !final_frame) {
                if (silence_run_ <= (int64_t) (o_.lookahead_time_end_point / fs)) on_voice(t);
            } else if (final_frame) {
                on_voice_end(t, false, true);
                state_ = state::end_detected;
            }
        }
    }
    if (state_ == state::end_detected && o_.detect_mode == 1) reset_detection();
}

// forward(): DetectCommonFrames / DetectLastFrames over the chunk, then its output in either form
void decider::run_chunk(const double * sil, const float * db, int64_t n, bool final, bool streaming,
                        std::vector<segment> & out) {
    if (n <= 0) return;  // forward returns [] for a chunk without frames
    frm_cnt_ += n;
    if (state_ != state::end_detected) {
        for (int64_t i = 0; i < n; ++i) {
            const bool speech = frame_is_speech(sil[i], db[i]);
            detect_frame(speech, frm_cnt_ - n + i, final && i == n - 1);
        }
    }
    for (size_t k = out_offset_; k < out_buf_.size(); ++k) {
        const buffered & b = out_buf_[k];
        if (streaming) {
            if (!b.has_start || (!next_seg_ && !b.has_end)) continue;
            out.push_back({next_seg_ ? b.start_ms : -1, b.has_end ? b.end_ms : -1});
            next_seg_ = b.has_end;
            if (b.has_end) ++out_offset_;
        } else {
            if (!final && (!b.has_start || !b.has_end)) continue;
            out.push_back({b.start_ms, b.end_ms});
            ++out_offset_;
        }
    }
    // the emitted entries are never read again; the last one stays (the buffer is never empty
    // again once used, as upstream's, whose emptiness pop_to_output tests)
    if (out_offset_ > 1) {
        out_buf_.erase(out_buf_.begin(), out_buf_.begin() + (std::ptrdiff_t) (out_offset_ - 1));
        out_offset_ = 1;
    }
}

// ============================================================================= the model

namespace {

std::string kv_str(const gguf_context * g, const std::string & key, const std::string & path) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_STRING) throw std::runtime_error(path + ": missing string key " + key);
    return gguf_get_val_str(g, id);
}

double kv_num(const gguf_context * g, const std::string & key, const std::string & path) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) throw std::runtime_error(path + ": missing key " + key + " (not an fsmn_vad GGUF of this version?)");
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT32:  return gguf_get_val_u32(g, id);
        case GGUF_TYPE_INT32:   return gguf_get_val_i32(g, id);
        case GGUF_TYPE_FLOAT32: return gguf_get_val_f32(g, id);
        case GGUF_TYPE_FLOAT64: return gguf_get_val_f64(g, id);
        case GGUF_TYPE_BOOL:    return gguf_get_val_bool(g, id) ? 1.0 : 0.0;
        default: throw std::runtime_error(path + ": key " + key + " is not a number");
    }
}

std::vector<double> kv_array(const gguf_context * g, const std::string & key, const std::string & path, bool required) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) {
        if (required) throw std::runtime_error(path + ": missing key " + key);
        return {};
    }
    if (gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY) throw std::runtime_error(path + ": key " + key + " is not an array");
    const size_t n = gguf_get_arr_n(g, id);
    const gguf_type t = gguf_get_arr_type(g, id);
    const void * data = gguf_get_arr_data(g, id);
    std::vector<double> out(n);
    for (size_t i = 0; i < n; ++i) {
        switch (t) {
            case GGUF_TYPE_FLOAT32: out[i] = ((const float *) data)[i]; break;
            case GGUF_TYPE_FLOAT64: out[i] = ((const double *) data)[i]; break;
            case GGUF_TYPE_INT32:   out[i] = ((const int32_t *) data)[i]; break;
            case GGUF_TYPE_INT64:   out[i] = (double) ((const int64_t *) data)[i]; break;
            case GGUF_TYPE_UINT32:  out[i] = ((const uint32_t *) data)[i]; break;
            default: throw std::runtime_error(path + ": key " + key + " has elements of an unexpected type");
        }
    }
    return out;
}

// out[:, t] = sum_k w[:, k] * x[:, t + k * dilation] for x [channels, W] (channel-contiguous columns)
// and w [channels, taps] (a row of channels per tap): ggml_conv_2d_dw_direct on channel-major
// ("CWHN") views of both, which runs SIMD across the channels; the result [channels, W - span]
ggml_tensor * depthwise_conv(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, int dilation) {
    const int64_t ch = x->ne[0], width = x->ne[1], taps = w->ne[1];
    ggml_tensor * src = ggml_permute(ctx, ggml_reshape_4d(ctx, x, ch, width, 1, 1), 2, 0, 1, 3);  // [W, 1, C, 1]
    ggml_tensor * knl = ggml_permute(ctx, ggml_reshape_4d(ctx, w, ch, 1, taps, 1), 3, 2, 0, 1);   // [K, 1, 1, C]
    ggml_tensor * out = ggml_conv_2d_dw_direct(ctx, knl, src, 1, 1, 0, 0, dilation, 1);          // [T, 1, C, 1]
    return ggml_reshape_2d(ctx, ggml_permute(ctx, out, 1, 2, 0, 3), ch, out->ne[0]);             // [C, T]
}

int64_t fbank_frames(size_t n, int flen, int shift) {
    return n >= (size_t) flen ? (int64_t) ((n - flen) / shift) + 1 : 0;
}

// a GGUF key or tensor name from its KEY_* / TN_* format (funasr_keys.h)
std::string format_name(const char * fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int) sizeof(buf)) throw std::runtime_error(std::string("FSMN-VAD: name too long for format ") + fmt);
    return std::string(buf, (size_t) n);
}

// general.architecture must be fsmn_vad; otherwise the error names what the file is
void check_architecture(const gguf_context * g, const std::string & path) {
    const int64_t arch_id = gguf_find_key(g, KEY_GENERAL_ARCH);
    const std::string arch = arch_id >= 0 && gguf_get_kv_type(g, arch_id) == GGUF_TYPE_STRING ? gguf_get_val_str(g, arch_id) : "";
    if (arch != ARCH_VAD) {
        std::string what = arch == ARCH_CLIP ? "an mmproj (the ASR model's encoder)" : arch == "qwen3" ? "an LLM GGUF (the ASR model's)"
                                                                                  : "architecture '" + arch + "'";
        throw std::runtime_error(path + " is not an FSMN-VAD GGUF: it is " + what +
                                 "; convert an FSMN-VAD release with `funasr-cpp convert VAD_DIR -o OUT`");
    }
}

// fsmn_vad.frontend.*: WavFrontendOnline's values (the rest are the frontend's defaults)
funasr_frontend_params read_frontend(const gguf_context * g, const std::string & path) {
    auto u = [&](const char * key) { return (int) kv_num(g, key, path); };
    funasr_frontend_params fe;
    fe.sample_rate  = u(KEY_VAD_FE_SAMPLE_RATE);
    fe.window       = kv_str(g, KEY_VAD_FE_WINDOW, path);
    fe.n_mels       = u(KEY_VAD_FE_N_MELS);
    fe.frame_length = u(KEY_VAD_FE_FRAME_LENGTH);
    fe.frame_shift  = u(KEY_VAD_FE_FRAME_SHIFT);
    fe.lfr_m        = u(KEY_VAD_FE_LFR_M);
    fe.lfr_n        = u(KEY_VAD_FE_LFR_N);
    for (double v : kv_array(g, KEY_VAD_FE_CMVN_SHIFT, path, false)) fe.cmvn_shift.push_back((float) v);
    for (double v : kv_array(g, KEY_VAD_FE_CMVN_SCALE, path, false)) fe.cmvn_scale.push_back((float) v);
    return fe;
}

// fsmn_vad.encoder.*: the FSMN's sizes
void read_encoder(const gguf_context * g, const std::string & path, model_info & I) {
    auto u = [&](const char * key) { return (int) kv_num(g, key, path); };
    I.input_dim         = u(KEY_VAD_ENC_INPUT_DIM);
    I.input_affine_dim  = u(KEY_VAD_ENC_INPUT_AFFINE_DIM);
    I.fsmn_layers       = u(KEY_VAD_ENC_FSMN_LAYERS);
    I.linear_dim        = u(KEY_VAD_ENC_LINEAR_DIM);
    I.proj_dim          = u(KEY_VAD_ENC_PROJ_DIM);
    I.lorder            = u(KEY_VAD_ENC_LORDER);
    I.rorder            = u(KEY_VAD_ENC_RORDER);
    I.lstride           = u(KEY_VAD_ENC_LSTRIDE);
    I.rstride           = u(KEY_VAD_ENC_RSTRIDE);
    I.output_affine_dim = u(KEY_VAD_ENC_OUTPUT_AFFINE_DIM);
    I.output_dim        = u(KEY_VAD_ENC_OUTPUT_DIM);
    I.use_softmax       = u(KEY_VAD_ENC_USE_SOFTMAX) != 0;
    const funasr_frontend_params & fe = I.frontend;
    if (fe.sample_rate != 16000 || fe.lfr_n != 1 || fe.lfr_m % 2 == 0 || I.input_dim != fe.n_mels * fe.lfr_m ||
        I.lorder < 2 || I.lstride < 1 || (I.rorder > 0 && I.rstride < 1) || I.fsmn_layers < 1) {
        throw std::runtime_error(path + ": frontend/encoder values this runtime cannot run (see funasr_cpp/converters/vad_gguf.py)");
    }
}

// fsmn_vad.options.*: the checkpoint's model_conf, checked as the binding's overrides are
options read_options(const gguf_context * g, const std::string & path, const model_info & I) {
    options o;
    auto d = [&](const char * name) { return kv_num(g, format_name(KEY_VAD_OPTION, name), path); };
    for (const number_option & n : number_options()) o.*n.field = d(n.name);
    o.detect_mode                  = (int) d("detect_mode");
    o.noise_frame_num_used_for_snr = (int) d("noise_frame_num_used_for_snr");
    o.do_extend                    = d("do_extend") != 0;
    o.frame_in_ms                  = d("frame_in_ms");
    o.sil_pdf_ids.clear();
    for (double v : kv_array(g, format_name(KEY_VAD_OPTION, "sil_pdf_ids"), path, true)) o.sil_pdf_ids.push_back((int) v);
    const funasr_frontend_params & fe = I.frontend;
    if (o.frame_in_ms * fe.sample_rate / 1000 != fe.frame_shift) {
        throw std::runtime_error(path + ": options.frame_in_ms does not match the frontend's frame shift");
    }
    const std::string bad = check_options(o, I);
    if (!bad.empty()) throw std::runtime_error(path + ": " + bad);
    return o;
}

// ComputeDecibel: 10 log10(sum of squares + 1e-6) of the raw samples of frames [first, first + n)
// (samples from x0 on at x)
void decibels(const float * x, int64_t x0, int64_t first, int64_t n, const funasr_frontend_params & fe, std::vector<float> & db) {
    db.resize((size_t) n);
    for (int64_t t = 0; t < n; ++t) {
        const float * s = x + (size_t) ((first + t) * fe.frame_shift - x0);
        double acc = 0;
        for (int k = 0; k < fe.frame_length; ++k) acc += (double) s[k] * s[k];
        db[t] = (float) (10.0 * std::log10((double) ((float) acc + 1e-6f)));
    }
}

}  // namespace

// WavFrontendOnline emits an LFR frame once its whole window has arrived: all fbank frames so far
// but the last lfr_m - 1 - pad (its splice cache starts with pad copies of the first frame), and
// at the final call all of them (the window padded by the last frame).
int64_t frames_ready(const funasr_frontend_params & fe, size_t n_samples, bool final, int64_t done) {
    const int pad = (fe.lfr_m - 1) / 2;
    const int64_t F = fbank_frames(n_samples, fe.frame_length, fe.frame_shift);
    return final ? F : std::max(done, F + pad - (fe.lfr_m - 1));
}

struct model::impl {
    std::string path;
    ggml_context * wctx = nullptr;  // weights, in host memory
    // the tensors the graph uses, prepared from the file's: widths padded with zeros to multiples of
    // 16 (ggml's fast f32 matmul, llamafile's sgemm, needs that of the inner dimension; the
    // extra units are 0 all the way through, so the sums are upstream's)
    ggml_context * kctx = nullptr;
    int64_t in_w = 0, proj_w = 0;  // padded input and projection widths
    gguf_context * gctx = nullptr;
    ggml_backend_t backend = nullptr;
    ggml_gallocr_t galloc = nullptr;
    std::unique_ptr<funasr_frontend> frontend;
    std::vector<float> feats;  // one forward call's features (reused)
    struct layer {
        ggml_tensor *lin, *left, *right, *aff_w, *aff_b;
    };
    ggml_tensor *in1_w, *in1_b, *in2_w, *in2_b, *out1_w, *out1_b, *out2_w, *out2_b;
    std::vector<layer> layers;

    // one forward call's graph: its inputs (features, each layer's left memory) and outputs
    // (the posteriors, each layer's memory for the next call)
    struct chunk_graph {
        ggml_context * ctx = nullptr;
        ggml_cgraph * gf = nullptr;
        ggml_tensor * feats = nullptr;
        ggml_tensor * posteriors = nullptr;
        std::vector<ggml_tensor *> mem_in, mem_out;
        ~chunk_graph() {
            if (ctx) ggml_free(ctx);
        }
    };

    ~impl() {
        if (kctx) ggml_free(kctx);
        if (galloc) ggml_gallocr_free(galloc);
        if (backend) ggml_backend_free(backend);
        if (gctx) gguf_free(gctx);
        if (wctx) ggml_free(wctx);
    }

    // the file's [ne0, ne1] tensor in a zero [pad0, pad1] one
    ggml_tensor * padded(const std::string & name, int64_t ne0, int64_t ne1, int64_t pad0, int64_t pad1) {
        const ggml_tensor * w = weight(name, ne0, ne1);
        ggml_tensor * t = ggml_new_tensor_2d(kctx, GGML_TYPE_F32, pad0, pad1);
        float * dst = (float *) t->data;
        std::fill(dst, dst + pad0 * pad1, 0.0f);
        for (int64_t j = 0; j < ne1; ++j) std::copy_n((const float *) w->data + j * ne0, ne0, dst + j * pad0);
        return t;
    }

    ggml_tensor * weight(const std::string & name, int64_t ne0, int64_t ne1) const {
        ggml_tensor * t = ggml_get_tensor(wctx, name.c_str());
        if (!t) throw std::runtime_error(path + ": missing tensor " + name);
        if (t->type != GGML_TYPE_F32 || t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
            throw std::runtime_error(path + ": tensor " + name + " is not f32 [" + std::to_string(ne0) + ", " +
                                     std::to_string(ne1) + "]");
        }
        return t;
    }

    void prepare_weights(const model_info & I);
    void init_backend(int n_threads);
    void chunk_features(const float * x, int64_t x0, int64_t done, int64_t end, int64_t n_frames, const model_info & I,
                        std::vector<float> & feats) const;
    void build_graph(int64_t T, const model_info & I, chunk_graph & g) const;
    void forward(const std::vector<float> & feats, int64_t T, const model_info & I,
                 std::vector<std::vector<float>> & memory, std::vector<float> & post);
};

// the graph's tensors from the file's, padded (see kctx), in a context of their own
void model::impl::prepare_weights(const model_info & I) {
    auto pad16 = [](int64_t n) { return (n + 15) / 16 * 16; };
    const int64_t Ip = pad16(I.input_dim), A = pad16(I.input_affine_dim), Lw = pad16(I.linear_dim);
    const int64_t P = pad16(I.proj_dim), OA = pad16(I.output_affine_dim), D = I.output_dim;
    const int64_t taps = I.lorder + I.rorder;
    {
        const int64_t floats = Ip * A + A + A * Lw + Lw + I.fsmn_layers * (Lw * P + taps * P + P * Lw + Lw) + Lw * OA + OA + OA * D + D;
        const size_t n_tensors = 8 + 5 * (size_t) I.fsmn_layers;
        ggml_init_params ip{(size_t) floats * sizeof(float) + n_tensors * (ggml_tensor_overhead() + 64), nullptr, false};
        kctx = ggml_init(ip);
        if (!kctx) throw std::runtime_error("FSMN-VAD: out of memory");
    }
    in_w   = Ip;
    proj_w = P;
    in1_w  = padded(format_name(TN_VAD_IN1, "weight"), I.input_dim, I.input_affine_dim, Ip, A);
    in1_b  = padded(format_name(TN_VAD_IN1, "bias"), I.input_affine_dim, 1, A, 1);
    in2_w  = padded(format_name(TN_VAD_IN2, "weight"), I.input_affine_dim, I.linear_dim, A, Lw);
    in2_b  = padded(format_name(TN_VAD_IN2, "bias"), I.linear_dim, 1, Lw, 1);
    out1_w = padded(format_name(TN_VAD_OUT1, "weight"), I.linear_dim, I.output_affine_dim, Lw, OA);
    out1_b = padded(format_name(TN_VAD_OUT1, "bias"), I.output_affine_dim, 1, OA, 1);
    out2_w = padded(format_name(TN_VAD_OUT2, "weight"), I.output_affine_dim, I.output_dim, OA, D);
    out2_b = padded(format_name(TN_VAD_OUT2, "bias"), I.output_dim, 1, D, 1);
    for (int l = 0; l < I.fsmn_layers; ++l) {
        layer L{};
        L.lin   = padded(format_name(TN_VAD_FSMN_LINEAR, l, "weight"), I.linear_dim, I.proj_dim, Lw, P);
        L.left  = padded(format_name(TN_VAD_FSMN_CONV_LEFT, l), I.proj_dim, I.lorder, P, I.lorder);
        L.right = I.rorder > 0 ? padded(format_name(TN_VAD_FSMN_CONV_RIGHT, l), I.proj_dim, I.rorder, P, I.rorder) : nullptr;
        L.aff_w = padded(format_name(TN_VAD_FSMN_AFFINE, l, "weight"), I.proj_dim, I.linear_dim, P, Lw);
        L.aff_b = padded(format_name(TN_VAD_FSMN_AFFINE, l, "bias"), I.linear_dim, 1, Lw, 1);
        layers.push_back(L);
    }
}

// the CPU backend with n_threads (<= 0: ggml's default) and its graph allocator
void model::impl::init_backend(int n_threads) {
    backend = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
    if (!backend) throw std::runtime_error("ggml has no CPU backend");
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(backend));
    auto set_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
    if (set_threads && n_threads > 0) set_threads(backend, n_threads);
    galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
}

model::model(const std::string & path, int n_threads) : p_(std::make_unique<impl>()) {
    impl & m = *p_;
    m.path = path;
    gguf_init_params gp{};
    gp.no_alloc = false;
    gp.ctx      = &m.wctx;
    m.gctx      = gguf_init_from_file(path.c_str(), gp);
    if (!m.gctx) throw std::runtime_error("cannot read the GGUF file " + path);
    check_architecture(m.gctx, path);
    info_.frontend = read_frontend(m.gctx, path);
    read_encoder(m.gctx, path, info_);
    info_.defaults = read_options(m.gctx, path, info_);
    m.prepare_weights(info_);
    // the graph uses only the prepared tensors
    ggml_free(m.wctx);
    m.wctx = nullptr;
    gguf_free(m.gctx);
    m.gctx = nullptr;

    try {
        m.frontend = std::make_unique<funasr_frontend>(info_.frontend);
    } catch (const std::invalid_argument & e) {
        throw std::runtime_error(path + ": " + e.what());
    }
    m.init_backend(n_threads);
}

model::~model() = default;

int64_t model::n_frames(size_t n_samples) const {
    return fbank_frames(n_samples, info_.frontend.frame_length, info_.frontend.frame_shift);
}

// features of frames [done, end), rows padded to the prepared input width: the frontend over the
// samples of fbank frames [done - pad, end + pad), clamped as the whole signal's LFR clamps
// (the samples from x0 on are at x)
void model::impl::chunk_features(const float * x, int64_t x0, int64_t done, int64_t end, int64_t n_frames,
                                 const model_info & I, std::vector<float> & feats) const {
    const funasr_frontend_params & fe = I.frontend;
    const int pad = (fe.lfr_m - 1) / 2;
    const int64_t T = end - done;
    const int64_t s0 = std::max<int64_t>(done - pad, 0), s1 = std::min<int64_t>(end + pad, n_frames);
    const size_t a = (size_t) s0 * fe.frame_shift, b = (size_t) (s1 - 1) * fe.frame_shift + fe.frame_length;
    std::vector<float> local;
    frontend->compute(x + (a - (size_t) x0), b - a, local);
    feats.assign((size_t) T * in_w, 0.0f);
    for (int64_t t = 0; t < T; ++t) {
        std::copy_n(local.begin() + (size_t) (done - s0 + t) * I.input_dim, I.input_dim, feats.begin() + (size_t) t * in_w);
    }
}

// the FSMN over T frames (encoder.py FSMN.forward with its cache): each layer's left memory is the
// previous call's last (lorder - 1) lstride projected frames
void model::impl::build_graph(int64_t T, const model_info & I, chunk_graph & g) const {
    const int C = (I.lorder - 1) * I.lstride;
    const int64_t P = proj_w;
    const size_t meta = ggml_tensor_overhead() * 1024 + ggml_graph_overhead();
    ggml_init_params ip{meta, nullptr, true};
    ggml_context * ctx = g.ctx = ggml_init(ip);
    g.gf = ggml_new_graph(ctx);
    g.feats = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, in_w, T);
    ggml_set_name(g.feats, "feats");
    ggml_set_input(g.feats);
    ggml_tensor * h = ggml_add(ctx, ggml_mul_mat(ctx, in1_w, g.feats), in1_b);
    h = ggml_relu(ctx, ggml_add(ctx, ggml_mul_mat(ctx, in2_w, h), in2_b));
    for (int l = 0; l < I.fsmn_layers; ++l) {
        const layer & L = layers[l];
        ggml_tensor * x1 = ggml_mul_mat(ctx, L.lin, h);  // [proj, T]
        ggml_tensor * mem = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, P, C);
        ggml_set_input(mem);
        g.mem_in.push_back(mem);
        ggml_tensor * xc = ggml_concat(ctx, mem, x1, 1);  // [proj, C + T]: the left memory, then the chunk
        // FSMNBlock: x + the depthwise left conv (lorder taps, dilation lstride) + the right one
        ggml_tensor * y = ggml_add(ctx, x1, depthwise_conv(ctx, xc, L.left, I.lstride));
        if (L.right) {  // y_right[t] = sum_k w[k] x[t + (k + 1) rstride], zeros past the chunk (as upstream)
            ggml_tensor * xr = ggml_pad(ctx, x1, 0, I.rorder * I.rstride, 0, 0);
            xr = ggml_view_2d(ctx, xr, P, T + (int64_t) (I.rorder - 1) * I.rstride, xr->nb[1], (size_t) I.rstride * xr->nb[1]);
            y = ggml_add(ctx, y, depthwise_conv(ctx, xr, L.right, I.rstride));
        }
        ggml_tensor * next = ggml_cont(ctx, ggml_view_2d(ctx, xc, P, C, xc->nb[1], (size_t) T * xc->nb[1]));
        ggml_set_output(next);
        g.mem_out.push_back(next);
        ggml_build_forward_expand(g.gf, next);
        h = ggml_relu(ctx, ggml_add(ctx, ggml_mul_mat(ctx, L.aff_w, y), L.aff_b));
    }
    h = ggml_add(ctx, ggml_mul_mat(ctx, out1_w, h), out1_b);
    h = ggml_add(ctx, ggml_mul_mat(ctx, out2_w, h), out2_b);
    if (I.use_softmax) h = ggml_soft_max(ctx, h);
    ggml_set_name(h, "posteriors");
    ggml_set_output(h);
    ggml_build_forward_expand(g.gf, h);
    g.posteriors = h;
}

// one forward call: posteriors [T, output_dim] of the chunk's features, memory carried in and out
void model::impl::forward(const std::vector<float> & feats, int64_t T, const model_info & I,
                          std::vector<std::vector<float>> & memory, std::vector<float> & post) {
    chunk_graph g;
    build_graph(T, I, g);
    if (!ggml_gallocr_alloc_graph(galloc, g.gf)) throw std::runtime_error("FSMN-VAD: cannot allocate the compute buffer");
    ggml_backend_tensor_set(g.feats, feats.data(), 0, feats.size() * sizeof(float));
    for (int l = 0; l < I.fsmn_layers; ++l) {
        ggml_backend_tensor_set(g.mem_in[l], memory[l].data(), 0, memory[l].size() * sizeof(float));
    }
    if (ggml_backend_graph_compute(backend, g.gf) != GGML_STATUS_SUCCESS) throw std::runtime_error("FSMN-VAD: graph compute failed");
    post.resize((size_t) T * I.output_dim);
    ggml_backend_tensor_get(g.posteriors, post.data(), 0, post.size() * sizeof(float));
    for (int l = 0; l < I.fsmn_layers; ++l) {
        ggml_backend_tensor_get(g.mem_out[l], memory[l].data(), 0, memory[l].size() * sizeof(float));
    }
}

void model::run(const float * x, size_t n, double chunk_size_ms, const std::function<void(int64_t)> & before_chunk,
                const chunk_fn & on_chunk) {
    const funasr_frontend_params & fe = info_.frontend;
    const int64_t stride = (int64_t) (chunk_size_ms * fe.sample_rate / 1000);
    if (stride <= 0) throw std::invalid_argument("chunk_size_ms must be positive");
    const int64_t n_chunks = (int64_t) n / stride + 1;  // inference(): the last, shorter one is final
    const int64_t F = n_frames(n);
    fsmn_memory memory = new_memory();

    std::vector<float> post, db;
    int64_t done = 0;  // frames emitted so far
    for (int64_t i = 0; i < n_chunks; ++i) {
        if (before_chunk) before_chunk(i);
        const bool final = i == n_chunks - 1;
        const int64_t end = frames_ready(fe, final ? n : (size_t) ((i + 1) * stride), final, done);
        const int64_t T = end - done;
        if (T <= 0) continue;
        forward_frames(x, 0, done, end, F, memory, post, db);
        on_chunk(done, T, post.data(), db.data(), final);
        done = end;
    }
}

model::fsmn_memory model::new_memory() const {
    const int C = (info_.lorder - 1) * info_.lstride;  // left memory per layer
    return fsmn_memory(info_.fsmn_layers, std::vector<float>((size_t) C * p_->proj_w, 0.0f));
}

void model::forward_frames(const float * x, int64_t x0, int64_t first, int64_t end, int64_t n_frames,
                           fsmn_memory & memory, std::vector<float> & post, std::vector<float> & db) {
    const int64_t T = end - first;
    p_->chunk_features(x, x0, first, end, n_frames, info_, p_->feats);
    decibels(x, x0, first, T, info_.frontend, db);
    p_->forward(p_->feats, T, info_, memory, post);
}

void segmenter::begin_chunk(double chunk_ms) {
    streaming_ = chunk_ms < streaming_below_ms;
    if (!o_.dynamic_silence) return;
    if (d_.in_speech_segment() || in_speech_) {
        accumulated_ += chunk_ms;
        in_speech_ = true;
    }
    for (const auto & [limit, silence] : o_.silence_schedule) {
        if (accumulated_ <= limit) {
            d_.set_thresholds(std::max(silence - o_.speech_to_sil_time_thres, 0.0), 0.5);
            break;
        }
    }
}

void segmenter::chunk(const float * post, int D, const float * db, int64_t T, bool final, std::vector<segment> & out) {
    sil_.resize((size_t) std::max<int64_t>(T, 0));
    for (int64_t t = 0; t < T; ++t) {
        double s = 0;  // scores[t][id].item(), or a Python sum of them
        for (int id : o_.sil_pdf_ids) s += post[(size_t) t * D + id];
        sil_[t] = s;
    }
    const size_t before = out.size();
    d_.run_chunk(sil_.data(), db, T, final, streaming_, out);
    if (out.size() > before && o_.dynamic_silence) {  // a segment (or, streaming, a change) came out: the schedule starts over
        accumulated_ = 0;
        in_speech_ = false;
    }
}

std::vector<segment> model::segments(const float * x, size_t n, const options & o) {
    const std::string bad = check_options(o, info_);
    if (!bad.empty()) throw std::invalid_argument(bad);
    segmenter seg(o);
    std::vector<segment> out;
    run(x, n, o.chunk_size_ms, [&](int64_t) { seg.begin_chunk(o.chunk_size_ms); },
        [&](int64_t, int64_t T, const float * post, const float * db, bool final) {
            seg.chunk(post, info_.output_dim, db, T, final, out);
        });
    return out;
}

const std::vector<number_option> & number_options() {
    static const std::vector<number_option> list = {
        {"max_end_silence_time", &options::max_end_silence_time},
        {"max_start_silence_time", &options::max_start_silence_time},
        {"window_size_ms", &options::window_size_ms},
        {"sil_to_speech_time_thres", &options::sil_to_speech_time_thres},
        {"speech_to_sil_time_thres", &options::speech_to_sil_time_thres},
        {"speech_2_noise_ratio", &options::speech_2_noise_ratio},
        {"lookback_time_start_point", &options::lookback_time_start_point},
        {"lookahead_time_end_point", &options::lookahead_time_end_point},
        {"max_single_segment_time", &options::max_single_segment_time},
        {"snr_thres", &options::snr_thres},
        {"decibel_thres", &options::decibel_thres},
        {"speech_noise_thres", &options::speech_noise_thres},
        {"fe_prior_thres", &options::fe_prior_thres},
    };
    return list;
}

std::string check_options(const options & o, const model_info & info) {
    if (!(o.frame_in_ms > 0)) return "frame_in_ms must be positive";
    if (!(o.window_size_ms >= o.frame_in_ms)) return "window_size_ms must be at least one frame (frame_in_ms)";
    if (o.noise_frame_num_used_for_snr < 1) return "noise_frame_num_used_for_snr must be >= 1";
    if (o.detect_mode != 0 && o.detect_mode != 1) return "detect_mode must be 0 (single utterance) or 1 (multiple)";
    if (o.sil_pdf_ids.empty()) return "sil_pdf_ids must name at least one pdf";
    for (int id : o.sil_pdf_ids) {
        if (id < 0 || id >= info.output_dim) return "sil_pdf_ids has an id outside the model's " + std::to_string(info.output_dim) + " pdfs";
    }
    if (!(o.chunk_size_ms >= 15000)) return "chunk_size_ms must be at least 15000 (shorter chunks are upstream's streaming mode)";
    if (!(o.max_single_segment_time > 0)) return "max_single_segment_time must be positive";
    return "";
}

}  // namespace funasr_vad
