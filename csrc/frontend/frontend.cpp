// funasr frontend, following funasr 1.4.16 funasr/frontends/wav_frontend.py (WavFrontend.forward,
// apply_lfr, apply_cmvn): Kaldi fbank with its window (hamming by default), DC removal,
// pre-emphasis, power spectrum, Kaldi mel bank, natural log floored at FLT_EPSILON, snip_edges,
// dither 0; then LFR and CMVN. The steps: fbank (framing, DC removal, pre-emphasis + window, FFT,
// power spectrum, mel + log, a batch of frames at a time), apply_lfr, apply_cmvn.
//
// Precision: the frame preparation (scale, DC removal, pre-emphasis, window) is done in
// float in Kaldi's order, like Kaldi and kaldi-native-fbank; the FFT, the power spectrum
// and the mel sums are done in double. A float FFT has an error floor relative to the
// strongest bin of the frame (~1e-7 in amplitude), which shows up as log errors of a few
// 1e-3 (~1e-2 with a plain radix-2 float FFT) in mel bands 80-100 dB below the frame's
// peak (lowest bands after pre-emphasis, pure tones).
//
// Speed: frames are processed kFrameLanes at a time in a structure-of-arrays layout
// (sample/bin index major, frame minor), so that every inner loop runs over the lanes
// with a fixed trip count and the compiler vectorizes it; the FFT is a 512-point real
// FFT computed as a 256-point complex radix-2 FFT plus the usual split step.
#include "frontend/frontend.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kFrameLanes = 8;  // frames per SIMD batch

int next_pow2(int n) {
    int p = 1;
    while (p < n) {
        p <<= 1;
    }
    return p;
}

double kaldi_mel(double hz) {
    return 1127.0 * std::log(1.0 + hz / 700.0);
}

#if defined(_MSC_VER) || defined(__GNUC__) || defined(__clang__)
#    define FUNASR_RESTRICT __restrict
#else
#    define FUNASR_RESTRICT
#endif

// lane kernels: fixed trip count kFrameLanes, no aliasing -> vectorized by the compiler

inline void lanes_preemph_window(double * FUNASR_RESTRICT dst, const float * FUNASR_RESTRICT cur,
                                 const float * FUNASR_RESTRICT prev, float preemph, float w) {
    for (int b = 0; b < kFrameLanes; ++b) {
        dst[b] = (double) ((cur[b] - preemph * prev[b]) * w);
    }
}

inline void lanes_butterfly(double * FUNASR_RESTRICT ur, double * FUNASR_RESTRICT ui, double * FUNASR_RESTRICT vr,
                            double * FUNASR_RESTRICT vi, double wr, double wi) {
    for (int b = 0; b < kFrameLanes; ++b) {
        const double tr = vr[b] * wr - vi[b] * wi;
        const double ti = vr[b] * wi + vi[b] * wr;
        vr[b] = ur[b] - tr;
        vi[b] = ui[b] - ti;
        ur[b] += tr;
        ui[b] += ti;
    }
}

// butterflies with twiddle 1 and -i (first two stages): additions only
inline void lanes_butterfly_1(double * FUNASR_RESTRICT ur, double * FUNASR_RESTRICT ui, double * FUNASR_RESTRICT vr,
                              double * FUNASR_RESTRICT vi) {
    for (int b = 0; b < kFrameLanes; ++b) {
        const double tr = vr[b];
        const double ti = vi[b];
        vr[b] = ur[b] - tr;
        vi[b] = ui[b] - ti;
        ur[b] += tr;
        ui[b] += ti;
    }
}

inline void lanes_butterfly_mi(double * FUNASR_RESTRICT ur, double * FUNASR_RESTRICT ui, double * FUNASR_RESTRICT vr,
                               double * FUNASR_RESTRICT vi) {
    for (int b = 0; b < kFrameLanes; ++b) {
        const double tr = vi[b];   // v * -i = (vi, -vr)
        const double ti = -vr[b];
        vr[b] = ur[b] - tr;
        vi[b] = ui[b] - ti;
        ur[b] += tr;
        ui[b] += ti;
    }
}

// real-FFT split step and power: X[k] = E[k] + W^k O[k] with E = (Z[k] + conj Z[-k]) / 2,
// O = (Z[k] - conj Z[-k]) / 2i (ar/ai = Z[k], cr/ci = Z[-k]; they may be the same, read only)
inline void lanes_split_power(double * FUNASR_RESTRICT pk, const double * ar, const double * ai, const double * cr,
                              const double * ci, double wr, double wi) {
    for (int b = 0; b < kFrameLanes; ++b) {
        const double er  = 0.5 * (ar[b] + cr[b]);
        const double ei  = 0.5 * (ai[b] - ci[b]);
        const double or_ = 0.5 * (ai[b] + ci[b]);
        const double oi  = -0.5 * (ar[b] - cr[b]);
        const double xr  = er + wr * or_ - wi * oi;
        const double xi  = ei + wr * oi + wi * or_;
        pk[b] = xr * xr + xi * xi;
    }
}

// log(max(x, FLT_EPSILON)) on all lanes: x = 2^e * m with m in [sqrt(1/2), sqrt(2)),
// log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172: series to s^11 (error < 1e-9,
// far below float rounding). Branch-free and vectorized, unlike calls to logf.
inline void lanes_log_floor(float * FUNASR_RESTRICT y, const double * FUNASR_RESTRICT x) {
    uint32_t bits[kFrameLanes];
    float    v[kFrameLanes];
    for (int b = 0; b < kFrameLanes; ++b) {
        const float e = (float) x[b];
        v[b] = e > FLT_EPSILON ? e : FLT_EPSILON;  // also maps NaN to the floor
    }
    std::memcpy(bits, v, sizeof(bits));
    int32_t e[kFrameLanes];
    for (int b = 0; b < kFrameLanes; ++b) {
        // subtracting the bits of sqrt(1/2) puts the mantissa range at [sqrt(1/2), sqrt(2))
        const uint32_t d = bits[b] - 0x3f3504f3u;
        e[b]    = (int32_t) d >> 23;
        bits[b] = (d & 0x007fffffu) + 0x3f3504f3u;
    }
    std::memcpy(v, bits, sizeof(v));
    for (int b = 0; b < kFrameLanes; ++b) {
        const float m  = v[b];
        const float s  = (m - 1.0f) / (m + 1.0f);
        const float s2 = s * s;
        const float p  = 1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11))));
        const float lm = 2.0f * s + 2.0f * s * s2 * p;
        y[b] = (float) e[b] * 0.693147180559945309f + lm;
    }
}

inline void lanes_axpy(double * FUNASR_RESTRICT acc, const double * FUNASR_RESTRICT x, double a) {
    for (int b = 0; b < kFrameLanes; ++b) {
        acc[b] += a * x[b];
    }
}

}  // namespace

// ----------------------------------------------------------------------------- tables

struct funasr_frontend::tables {
    int n_fft   = 0;  // real FFT size (power of two >= frame_length)
    int n_half  = 0;  // complex FFT size n_fft / 2
    int n_bins  = 0;  // power-spectrum bins used by the mel bank: n_fft / 2 (Nyquist bin has weight 0)
    int log2_half = 0;

    std::vector<float> window;     // [frame_length] symmetric Kaldi window
    std::vector<int>   bitrev;     // [n_half] bit reversal of the complex FFT index
    std::vector<double> tw_re;     // [n_half / 2] exp(-2 pi i k / n_half)
    std::vector<double> tw_im;
    std::vector<double> split_re;  // [n_bins] exp(-2 pi i k / n_fft), real-FFT split step
    std::vector<double> split_im;

    // sparse Kaldi mel bank: filter m covers bins [mel_begin[m], mel_begin[m] + mel_len[m])
    std::vector<int>   mel_begin;
    std::vector<int>   mel_len;
    std::vector<int>   mel_offset; // into mel_weight
    std::vector<double> mel_weight;

    // sample n of a frame -> position in the packed complex FFT input (bit-reversed):
    // n even -> real part, n odd -> imaginary part of element bitrev[n / 2]
    std::vector<int> sample_pos;
};

namespace {

using tables = funasr_frontend::tables;

// Kaldi's window functions (feature-window.cc), symmetric over n samples
std::vector<float> kaldi_window(const std::string & type, int n_samples) {
    std::vector<float> window(n_samples);
    const double a = 2.0 * kPi / (n_samples - 1);
    for (int n = 0; n < n_samples; ++n) {
        const double hann = 0.5 - 0.5 * std::cos(a * n);
        double w;
        if (type == "hamming") {
            w = 0.54 - 0.46 * std::cos(a * n);
        } else if (type == "hanning") {
            w = hann;
        } else if (type == "povey") {
            w = std::pow(hann, 0.85);
        } else if (type == "rectangular") {
            w = 1.0;
        } else if (type == "blackman") {
            w = 0.42 - 0.5 * std::cos(a * n) + 0.08 * std::cos(2.0 * a * n);
        } else {
            throw std::invalid_argument("funasr_frontend: unknown window type " + type);
        }
        window[n] = (float) w;
    }
    return window;
}

// sizes, bit reversal, twiddles and the real-FFT split step for frames of frame_length samples
void build_fft_tables(tables & t, int frame_length) {
    t.n_fft  = std::max(4, next_pow2(frame_length));
    t.n_half = t.n_fft / 2;
    t.n_bins = t.n_fft / 2;
    while ((1 << t.log2_half) < t.n_half) {
        t.log2_half++;
    }
    t.bitrev.resize(t.n_half);
    for (int i = 0; i < t.n_half; ++i) {
        int r = 0;
        for (int b = 0; b < t.log2_half; ++b) {
            r |= ((i >> b) & 1) << (t.log2_half - 1 - b);
        }
        t.bitrev[i] = r;
    }
    t.tw_re.resize(t.n_half / 2);
    t.tw_im.resize(t.n_half / 2);
    for (int k = 0; k < t.n_half / 2; ++k) {
        const double ang = -2.0 * kPi * k / t.n_half;
        t.tw_re[k] = std::cos(ang);
        t.tw_im[k] = std::sin(ang);
    }
    t.split_re.resize(t.n_bins);
    t.split_im.resize(t.n_bins);
    for (int k = 0; k < t.n_bins; ++k) {
        const double ang = -2.0 * kPi * k / t.n_fft;
        t.split_re[k] = std::cos(ang);
        t.split_im[k] = std::sin(ang);
    }
    t.sample_pos.resize(frame_length);
    for (int n = 0; n < frame_length; ++n) {
        t.sample_pos[n] = t.bitrev[n / 2];
    }
}

// Kaldi mel bank: n_mels + 2 points equally spaced in mel between low and high freq, each filter
// stored as its run of non-zero bin weights
void build_mel_bank(tables & t, const funasr_frontend_params & p) {
    const double nyquist   = 0.5 * p.sample_rate;
    const double high_freq = p.high_freq > 0.0f ? (double) p.high_freq : nyquist + p.high_freq;
    const double low_freq  = p.low_freq;
    if (low_freq < 0.0 || high_freq > nyquist || high_freq <= low_freq) {
        throw std::invalid_argument("funasr_frontend: invalid mel frequency range");
    }
    const double mel_low   = kaldi_mel(low_freq);
    const double mel_high  = kaldi_mel(high_freq);
    const double mel_delta = (mel_high - mel_low) / (p.n_mels + 1);
    const double bin_width = (double) p.sample_rate / t.n_fft;
    t.mel_begin.resize(p.n_mels);
    t.mel_len.resize(p.n_mels);
    t.mel_offset.resize(p.n_mels);
    for (int m = 0; m < p.n_mels; ++m) {
        const double left   = mel_low + m * mel_delta;
        const double center = mel_low + (m + 1) * mel_delta;
        const double right  = mel_low + (m + 2) * mel_delta;
        int first = -1, last = -1;
        std::vector<double> w;
        for (int k = 0; k < t.n_bins; ++k) {
            const double mel = kaldi_mel(bin_width * k);
            if (mel > left && mel < right) {
                const double weight = mel <= center ? (mel - left) / (center - left) : (right - mel) / (right - center);
                if (first < 0) {
                    first = k;
                }
                last = k;
                w.push_back(weight);
            }
        }
        if (first < 0) {
            first = 0;
            last  = -1;
        }
        t.mel_begin[m]  = first;
        t.mel_len[m]    = last - first + 1;
        t.mel_offset[m] = (int) t.mel_weight.size();
        t.mel_weight.insert(t.mel_weight.end(), w.begin(), w.end());
    }
}

// ----------------------------------------------------------------------------- fbank steps
// One batch of kFrameLanes frames in the SoA layout (index * kFrameLanes + lane); lanes past the
// last frame (nl < kFrameLanes) hold zeros and are never written out.

constexpr int L = kFrameLanes;

// per-call scratch for one batch
struct batch_scratch {
    std::vector<float> x;    // [frame_length * L] framed samples
    std::vector<double> re;  // [n_half * L]
    std::vector<double> im;  // [n_half * L]
    std::vector<double> pw;  // [n_bins * L] power spectrum
};

// framed, scaled samples of frames f0 .. f0 + nl - 1 (unused lanes are zero)
void load_frames(const float * samples, int64_t f0, int nl, int flen, int frame_shift, float scale, float * x) {
    if (nl == L) {
        const float * src = samples + (size_t) f0 * frame_shift;
        const size_t  hop = (size_t) frame_shift;
        for (int n = 0; n < flen; ++n) {
            float * xn = x + (size_t) n * L;
            for (int b = 0; b < L; ++b) {
                xn[b] = src[b * hop + n] * scale;
            }
        }
    } else {
        for (int b = 0; b < L; ++b) {
            const float * src = samples + (size_t) (f0 + b) * frame_shift;
            for (int n = 0; n < flen; ++n) {
                x[n * L + b] = b < nl ? src[n] * scale : 0.0f;
            }
        }
    }
}

// DC removal: each frame minus its mean
void remove_dc(float * x, int flen) {
    float sum[L] = {};
    for (int n = 0; n < flen; ++n) {
        for (int b = 0; b < L; ++b) {
            sum[b] += x[n * L + b];
        }
    }
    float mean[L];
    for (int b = 0; b < L; ++b) {
        mean[b] = sum[b] / (float) flen;
    }
    for (int n = 0; n < flen; ++n) {
        for (int b = 0; b < L; ++b) {
            x[n * L + b] -= mean[b];
        }
    }
}

// pre-emphasis (from the end, as Kaldi), window, scatter into the bit-reversed packed complex
// input: z[m] = y[2m] + i y[2m + 1]
void preemph_window_pack(const tables & t, const float * x, int flen, float preemph, batch_scratch & s) {
    const float * win = t.window.data();
    std::fill(s.re.begin(), s.re.end(), 0.0);
    std::fill(s.im.begin(), s.im.end(), 0.0);
    for (int n = flen - 1; n >= 0; --n) {
        const float w = win[n];
        double * dst = ((n & 1) ? s.im.data() : s.re.data()) + (size_t) t.sample_pos[n] * L;
        const float * xn = x + (size_t) n * L;
        const float * xp = n > 0 ? x + (size_t) (n - 1) * L : xn;
        lanes_preemph_window(dst, xn, xp, preemph, w);
    }
}

// radix-2 decimation-in-time complex FFT of size n_half, in place, all lanes at once
void fft(const tables & t, double * re, double * im) {
    const int nh = t.n_half;
    int len0 = 2;
    if (nh >= 4) {
        // stages 1 and 2 (twiddles 1 and -i)
        for (int blk = 0; blk < nh; blk += 2) {
            lanes_butterfly_1(re + (size_t) blk * L, im + (size_t) blk * L, re + (size_t) (blk + 1) * L,
                              im + (size_t) (blk + 1) * L);
        }
        for (int blk = 0; blk < nh; blk += 4) {
            lanes_butterfly_1(re + (size_t) blk * L, im + (size_t) blk * L, re + (size_t) (blk + 2) * L,
                              im + (size_t) (blk + 2) * L);
            lanes_butterfly_mi(re + (size_t) (blk + 1) * L, im + (size_t) (blk + 1) * L,
                               re + (size_t) (blk + 3) * L, im + (size_t) (blk + 3) * L);
        }
        len0 = 8;
    }
    for (int len = len0, tw_step = nh / len0; len <= nh; len <<= 1, tw_step >>= 1) {
        const int half = len >> 1;
        for (int blk = 0; blk < nh; blk += len) {
            for (int j = 0; j < half; ++j) {
                const double wr = t.tw_re[j * tw_step];
                const double wi = t.tw_im[j * tw_step];
                lanes_butterfly(re + (size_t) (blk + j) * L, im + (size_t) (blk + j) * L,
                                re + (size_t) (blk + j + half) * L, im + (size_t) (blk + j + half) * L, wr, wi);
            }
        }
    }
}

// split step of the real FFT and power |X[k]|^2 for k = 0 .. n_fft/2 - 1
void power_spectrum(const tables & t, const double * re, const double * im, double * pw) {
    const int nh = t.n_half;
    for (int k = 0; k < t.n_bins; ++k) {
        const int kc = (nh - k) & (nh - 1);
        lanes_split_power(pw + (size_t) k * L, re + (size_t) k * L, im + (size_t) k * L, re + (size_t) kc * L,
                          im + (size_t) kc * L, t.split_re[k], t.split_im[k]);
    }
}

// mel energies and their floored log, written to rows [n_mels] of the batch's nl frames
void mel_log(const tables & t, const double * pw, int n_mels, int nl, float * rows) {
    for (int m = 0; m < n_mels; ++m) {
        double acc[L] = {};
        const double * w  = t.mel_weight.data() + t.mel_offset[m];
        const double * pm = pw + (size_t) t.mel_begin[m] * L;
        for (int k = 0; k < t.mel_len[m]; ++k) {
            lanes_axpy(acc, pm + (size_t) k * L, w[k]);
        }
        float lg[L];
        lanes_log_floor(lg, acc);
        for (int b = 0; b < nl; ++b) {
            rows[(size_t) b * n_mels + m] = lg[b];
        }
    }
}

}  // namespace

// ----------------------------------------------------------------------------- funasr_frontend

funasr_frontend::funasr_frontend(const funasr_frontend_params & params) : params_(params) {
    const auto & p = params_;
    if (p.sample_rate <= 0 || p.n_mels <= 0 || p.frame_length < 2 || p.frame_shift <= 0 || p.lfr_m <= 0 ||
        p.lfr_n <= 0) {
        throw std::invalid_argument("funasr_frontend: invalid parameters");
    }
    const size_t n_feat = (size_t) p.n_mels * p.lfr_m;
    if (p.cmvn_shift.size() != p.cmvn_scale.size() || (!p.cmvn_shift.empty() && p.cmvn_shift.size() != n_feat)) {
        throw std::invalid_argument("funasr_frontend: CMVN vectors must both have n_mels * lfr_m values");
    }
    auto t = std::make_unique<tables>();
    build_fft_tables(*t, p.frame_length);
    t->window = kaldi_window(p.window, p.frame_length);
    build_mel_bank(*t, p);
    tables_ = std::move(t);
}

funasr_frontend::~funasr_frontend() = default;

int funasr_frontend::feature_dim() const {
    return params_.n_mels * params_.lfr_m;
}

int64_t funasr_frontend::n_fbank_frames(size_t n_samples) const {
    if (n_samples < (size_t) params_.frame_length) {
        return 0;
    }
    return 1 + (int64_t) ((n_samples - params_.frame_length) / params_.frame_shift);
}

int64_t funasr_frontend::n_lfr_frames(size_t n_samples) const {
    const int64_t t = n_fbank_frames(n_samples);
    return (t + params_.lfr_n - 1) / params_.lfr_n;
}

void funasr_frontend::compute(const float * samples, size_t n_samples, std::vector<float> & out) const {
    const int64_t n_frames = n_fbank_frames(n_samples);
    out.clear();
    if (n_frames <= 0) {
        return;
    }
    std::vector<float> fb;
    fbank(samples, n_frames, fb);
    apply_lfr(fb, n_frames, n_lfr_frames(n_samples), out);
    apply_cmvn(out);
}

// log mel fbank [n_frames, n_mels], kFrameLanes frames at a time
void funasr_frontend::fbank(const float * samples, int64_t n_frames, std::vector<float> & out) const {
    const auto & p = params_;
    const auto & t = *tables_;
    const int n_mels = p.n_mels;
    const int flen   = p.frame_length;
    out.resize((size_t) n_frames * n_mels);
    batch_scratch s;
    s.x.resize((size_t) flen * L);
    s.re.resize((size_t) t.n_half * L);
    s.im.resize((size_t) t.n_half * L);
    s.pw.resize((size_t) t.n_bins * L);
    for (int64_t f0 = 0; f0 < n_frames; f0 += L) {
        const int nl = (int) std::min<int64_t>(L, n_frames - f0);
        load_frames(samples, f0, nl, flen, p.frame_shift, p.input_scale, s.x.data());
        remove_dc(s.x.data(), flen);
        preemph_window_pack(t, s.x.data(), flen, p.preemph, s);
        fft(t, s.re.data(), s.im.data());
        power_spectrum(t, s.re.data(), s.im.data(), s.pw.data());
        mel_log(t, s.pw.data(), n_mels, nl, out.data() + (size_t) f0 * n_mels);
    }
}

// apply_lfr: row i = frames i lfr_n - (lfr_m - 1) / 2 .. + lfr_m - 1 (clamped to the signal), each
// n_mels wide
void funasr_frontend::apply_lfr(const std::vector<float> & fbank, int64_t n_frames, int64_t n_lfr,
                                std::vector<float> & out) const {
    const auto & p      = params_;
    const int    n_mels = p.n_mels;
    const int    n_feat = feature_dim();
    out.resize((size_t) n_lfr * n_feat);
    const int64_t pad = (p.lfr_m - 1) / 2;
    for (int64_t i = 0; i < n_lfr; ++i) {
        float * row = out.data() + (size_t) i * n_feat;
        for (int j = 0; j < p.lfr_m; ++j) {
            const int64_t src = std::min<int64_t>(std::max<int64_t>(i * p.lfr_n + j - pad, 0), n_frames - 1);
            std::copy_n(fbank.data() + (size_t) src * n_mels, n_mels, row + (size_t) j * n_mels);
        }
    }
}

// apply_cmvn: (x + shift) * scale per feature, when the model has CMVN
void funasr_frontend::apply_cmvn(std::vector<float> & feats) const {
    const auto & p = params_;
    if (p.cmvn_shift.empty()) {
        return;
    }
    const int     n_feat = feature_dim();
    const int64_t n_rows = (int64_t) feats.size() / n_feat;
    const float * sh = p.cmvn_shift.data();
    const float * sc = p.cmvn_scale.data();
    for (int64_t i = 0; i < n_rows; ++i) {
        float * row = feats.data() + (size_t) i * n_feat;
        for (int d = 0; d < n_feat; ++d) {
            row[d] = (row[d] + sh[d]) * sc[d];
        }
    }
}
