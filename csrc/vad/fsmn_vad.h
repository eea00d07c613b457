// FSMN-VAD, following funasr 1.4.16 funasr/models/fsmn_vad_streaming/ (encoder.py: FSMN;
// model.py: FsmnVADStreaming.inference and its decision logic) and WavFrontendOnline
// (funasr/frontends/wav_frontend.py). The network runs as a ggml graph on the CPU backend, straight
// from its own GGUF (python/funasr_cpp/converters/vad_gguf.py): it is not an LLM input, so mtmd has
// no part in it.
#pragma once

#include "frontend/frontend.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace funasr_vad {

// VADXOptions as upstream uses them (ms unless said), plus what FsmnVADStreaming.inference takes
// per call. Times are doubles because upstream compares them as Python numbers.
struct options {
    int detect_mode = 1;                    // 0 single utterance, 1 multiple
    double max_end_silence_time = 800;      // the end silence when dynamic_silence is off
    double max_start_silence_time = 3000;   // single-utterance mode only
    double window_size_ms = 200;
    double sil_to_speech_time_thres = 150;
    double speech_to_sil_time_thres = 150;
    double speech_2_noise_ratio = 1.0;
    bool do_extend = true;
    double lookback_time_start_point = 200;
    double lookahead_time_end_point = 100;
    double max_single_segment_time = 60000;
    double snr_thres = -100;
    int noise_frame_num_used_for_snr = 100;
    double decibel_thres = -100;
    double speech_noise_thres = 0.6;
    double fe_prior_thres = 1e-4;
    std::vector<int> sil_pdf_ids = {0};
    double frame_in_ms = 10;
    // inference(): the dynamic end-silence schedule ((accumulated speech ms, end silence ms), the
    // last limit infinite) replaces max_end_silence_time and sets speech_noise_thres to 0.5 at the
    // start of every chunk; chunk_size_ms is the audio per forward call (>= 15000: offline output)
    bool dynamic_silence = true;
    std::vector<std::pair<double, double>> silence_schedule = {
        {10000, 2000}, {20000, 1000}, {30000, 800}, {40000, 600}, {50000, 400}, {60000, 200}, {1e300, 100}};
    double chunk_size_ms = 60000;
};

struct segment {
    int64_t start_ms, end_ms;
};

// Upstream's decision logic over one stream, chunk after chunk: the window detector, the E2E VAD
// state machine and the output buffer of FsmnVADStreaming (DetectCommonFrames/DetectLastFrames
// and forward's collection of finished segments), with the same arithmetic.
class decider {
public:
    explicit decider(const options & o);
    // The frames of one forward call: sil[i] = the frame's silence posterior (summed over
    // sil_pdf_ids), db[i] = its decibel. Appends what forward returns for the call: the segments
    // finished in it ([start, end]; at the final call the open one too), or with streaming
    // (upstream's is_streaming_input) the changes: [start, -1] when a segment starts, [-1, end] when
    // it ends, [start, end] both.
    void run_chunk(const double * sil, const float * db, int64_t n, bool final, bool streaming, std::vector<segment> & out);
    // bytes of the buffers held (bounded: the output buffer lets the emitted segments go)
    size_t state_bytes() const { return out_buf_.capacity() * sizeof(buffered) + win_.capacity() * sizeof(int); }
    bool in_speech_segment() const { return state_ == state::in_speech; }
    // what inference's dynamic schedule sets before a chunk
    void set_thresholds(double max_end_sil_ms, double speech_noise_thres) {
        max_end_sil_ = max_end_sil_ms;
        speech_noise_thres_ = speech_noise_thres;
    }

private:
    enum class state { start_not_detected, in_speech, end_detected };
    enum class change { speech2speech, speech2sil, sil2sil, sil2speech, invalid };
    struct buffered {
        int64_t start_ms = 0, end_ms = 0;
        bool has_start = false, has_end = false;
    };

    bool frame_is_speech(double sil, float db);
    change window_detect(bool speech);
    void detect_frame(bool speech, int64_t t, bool final_frame);
    void pop_till(int64_t frame);
    void pop_to_output(int64_t start, int64_t count, bool first_is_start, bool last_is_end);
    void on_silence(int64_t t);
    void on_voice(int64_t t);
    void on_voice_start(int64_t t, bool fake);
    void on_voice_end(int64_t t, bool fake, bool last);
    int64_t latency_frames() const;
    void reset_detection();

    options o_;
    // window detector
    int win_size_ = 0, win_sum_ = 0, win_pos_ = 0, sil2speech_frames_ = 0, speech2sil_frames_ = 0;
    std::vector<int> win_;
    bool win_speech_ = false;
    // stats
    int64_t frm_cnt_ = 0, data_buf_start_ = 0, latest_speech_ = 0, latest_silence_ = -1, silence_run_ = 0;
    int64_t confirmed_start_ = -1, confirmed_end_ = -1, n_end_detected_ = 0;
    state state_ = state::start_not_detected;
    double noise_db_ = -100.0, max_end_sil_ = 0, speech_noise_thres_ = 0;
    std::vector<buffered> out_buf_;
    size_t out_offset_ = 0;
    bool next_seg_ = true;  // Stats.next_seg: the streaming output's "a start is still to be reported"
};

// inference() cuts a call's audio in chunks of its chunk_size (ms); below this size it runs as a
// stream (is_streaming_input) and returns the streaming form of the segments
constexpr double streaming_below_ms = 15000;

// inference()'s loop around the decider: the dynamic end-silence schedule before each chunk
class segmenter {
public:
    explicit segmenter(const options & o) : o_(o), d_(o) {}
    // before a chunk of the call's chunk_size chunk_ms: the schedule, and the output form
    void begin_chunk(double chunk_ms);
    // one chunk's frames: posteriors [n, n_pdfs] (the silence ones are summed), decibels [n]
    void chunk(const float * posteriors, int n_pdfs, const float * db, int64_t n, bool final, std::vector<segment> & out);
    const decider & decisions() const { return d_; }

private:
    options o_;
    decider d_;
    double accumulated_ = 0;
    bool in_speech_ = false;
    bool streaming_ = false;
    std::vector<double> sil_;
};

// The numeric options by their upstream names (the GGUF's fsmn_vad.options.<name> keys and
// VadOptions' fields): the one list the loader, the binding's overrides and its dict go through.
struct number_option {
    const char * name;
    double options::* field;
};
const std::vector<number_option> & number_options();

struct model_info {
    funasr_frontend_params frontend;  // fbank + LFR + CMVN, as the GGUF records them
    // encoder
    int input_dim = 400, input_affine_dim = 140, fsmn_layers = 4, linear_dim = 250, proj_dim = 128;
    int lorder = 20, rorder = 0, lstride = 1, rstride = 0, output_affine_dim = 140, output_dim = 248;
    bool use_softmax = true;
    options defaults;  // the checkpoint's model_conf
};

// The model of one GGUF. Not thread-safe: one call at a time (the caller locks).
class model {
public:
    // throws std::runtime_error naming the file and what is wrong with it
    model(const std::string & path, int n_threads);
    ~model();
    model(const model &) = delete;
    model & operator=(const model &) = delete;

    const model_info & info() const { return info_; }
    int64_t n_frames(size_t n_samples) const;  // fbank frames = VAD frames

    // Each FSMN layer's left memory (the streaming cache), zero at the start of a stream.
    using fsmn_memory = std::vector<std::vector<float>>;
    fsmn_memory new_memory() const;
    // One forward call over VAD frames [first, end) of a signal of n_frames frames whose samples
    // from sample x0 on are at x (those of frames first - (lfr_m - 1) / 2 on must be there):
    // posteriors [end - first, output_dim] and decibels, the memory carried in and out.
    void forward_frames(const float * x, int64_t x0, int64_t first, int64_t end, int64_t n_frames, fsmn_memory & memory,
                        std::vector<float> & post, std::vector<float> & db);

    // Upstream's inference over a whole signal (16 kHz mono in [-1, 1]) in its chunks of
    // chunk_size_ms: features, posteriors and decibels computed chunk by chunk (memory bounded by
    // a chunk), the FSMN memory carried from chunk to chunk. on_chunk(first frame, n frames,
    // posteriors [n, output_dim], decibels [n], final) is called once per forward call;
    // before_chunk(i) before each chunk's features (where inference applies its schedule).
    using chunk_fn = std::function<void(int64_t, int64_t, const float *, const float *, bool)>;
    void run(const float * x, size_t n, double chunk_size_ms, const std::function<void(int64_t)> & before_chunk,
             const chunk_fn & on_chunk);

    // speech segments [start_ms, end_ms] as FsmnVADStreaming.inference returns them
    std::vector<segment> segments(const float * x, size_t n, const options & o);

private:
    struct impl;
    std::unique_ptr<impl> p_;
    model_info info_;
};

// options checks shared by the binding: "" or what is wrong
std::string check_options(const options & o, const model_info & info);

// The frames WavFrontendOnline has emitted once n_samples have arrived: all but the last
// (lfr_m - 1) / 2 (their LFR window is not complete yet), never fewer than done; at the final call all.
int64_t frames_ready(const funasr_frontend_params & fe, size_t n_samples, bool final, int64_t done);

}  // namespace funasr_vad
