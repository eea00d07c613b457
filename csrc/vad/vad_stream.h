// A streaming FSMN-VAD session, following funasr 1.4.16 FsmnVADStreaming.inference called chunk
// after chunk with one cache (funasr/models/fsmn_vad_streaming/model.py, is_final / chunk_size)
// and WavFrontendOnline's caches (funasr/frontends/wav_frontend.py).
#pragma once

#include "vad/fsmn_vad.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace funasr_vad {

// The state between calls: the FSMN memory, the decision logic, and the samples of the frames
// not yet emitted (with their LFR context); nothing else grows with the stream. The model is
// shared: the caller serializes the calls on one model (model is not thread-safe).
class stream {
public:
    stream(model & m, const options & o);

    // One generate(input=chunk, cache, is_final=final, chunk_size=its length in ms) call: appends
    // what it returns. An empty chunk that is not final returns nothing (as upstream); an empty
    // final one ends the stream as upstream's final step does (upstream ignores it instead).
    // Throws std::logic_error once the stream has ended.
    void feed(const float * x, size_t n, bool final, std::vector<segment> & out);

    bool finished() const { return finished_; }
    int64_t samples_fed() const { return total_; }
    // bytes held: the samples kept, the FSMN memory and the decision logic's output buffer
    size_t state_bytes() const;

private:
    void step(double chunk_ms, bool final, std::vector<segment> & out);

    model & m_;
    segmenter seg_;
    model::fsmn_memory memory_;
    std::vector<float> tail_;  // samples [tail0_, total_)
    int64_t tail0_ = 0, total_ = 0;
    int64_t done_ = 0;  // frames emitted
    bool finished_ = false;
    std::vector<float> post_, db_;
};

}  // namespace funasr_vad
