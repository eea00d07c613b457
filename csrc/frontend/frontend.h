// funasr frontend, following funasr 1.4.16 funasr/frontends/wav_frontend.py (WavFrontend.forward,
// apply_lfr, apply_cmvn) over Kaldi's fbank as torchaudio.compliance.kaldi.fbank computes it:
// 16 kHz mono in [-1, 1] -> x input_scale -> Kaldi fbank (window, DC removal, pre-emphasis, power
// spectrum, Kaldi mel bank, natural log floored at FLT_EPSILON, snip_edges, no dither) -> LFR (m, n)
// -> optional CMVN. Plain C++: no ggml, clip or mtmd; the mmproj's preprocessor (model/funasr.h) and
// the FSMN-VAD both run it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

// The one description of a frontend. The defaults are upstream's code defaults (WavFrontend's
// keyword defaults and Kaldi fbank's options); a model's own values come from its GGUF
// (funasr_load_hparams for the mmproj, the FSMN-VAD loader for the VAD).
struct funasr_frontend_params {
    std::string window       = "hamming";  // Kaldi window_type: hamming, hanning, povey, rectangular, blackman
    int         sample_rate  = 16000;      // Hz
    int         n_mels       = 80;
    int         frame_length = 400;        // samples (25 ms at 16 kHz)
    int         frame_shift  = 160;        // samples (10 ms at 16 kHz)
    int         lfr_m        = 1;          // LFR: stack lfr_m frames ...
    int         lfr_n        = 1;          // ... every lfr_n frames
    float       preemph      = 0.97f;
    float       low_freq     = 20.0f;      // Hz
    float       high_freq    = 0.0f;       // Hz; <= 0: relative to Nyquist
    float       input_scale  = 32768.0f;   // upsacle_samples: [-1, 1] -> int16 range
    std::vector<float> cmvn_shift;         // empty, or n_mels * lfr_m values: x = (x + shift) * scale
    std::vector<float> cmvn_scale;
};

class funasr_frontend {
public:
    // throws std::invalid_argument for parameters it cannot run
    explicit funasr_frontend(const funasr_frontend_params & params);
    ~funasr_frontend();
    funasr_frontend(const funasr_frontend &) = delete;
    funasr_frontend & operator=(const funasr_frontend &) = delete;

    int feature_dim() const;                        // n_mels * lfr_m
    int64_t n_fbank_frames(size_t n_samples) const; // 0 below one frame
    int64_t n_lfr_frames(size_t n_samples) const;

    // LFR features, row-major [n_lfr_frames, feature_dim]; empty for < one frame.
    // Thread-safe: all scratch is per call.
    void compute(const float * samples, size_t n_samples, std::vector<float> & out) const;

    const funasr_frontend_params & params() const { return params_; }

    struct tables;  // window, FFT and mel-bank tables (frontend.cpp)

private:
    void fbank(const float * samples, int64_t n_frames, std::vector<float> & out) const;
    void apply_lfr(const std::vector<float> & fbank, int64_t n_frames, int64_t n_lfr, std::vector<float> & out) const;
    void apply_cmvn(std::vector<float> & feats) const;

    funasr_frontend_params params_;
    std::unique_ptr<const tables> tables_;
};
