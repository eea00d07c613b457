// A streaming FSMN-VAD session, following funasr 1.4.16 FsmnVADStreaming.inference with a cache
// (funasr/models/fsmn_vad_streaming/model.py) and WavFrontendOnline (funasr/frontends/wav_frontend.py).
#include "vad/vad_stream.h"

#include <algorithm>
#include <stdexcept>

namespace funasr_vad {

stream::stream(model & m, const options & o) : m_(m), seg_(o), memory_(m.new_memory()) {
    const std::string bad = check_options(o, m.info());
    if (!bad.empty()) throw std::invalid_argument(bad);
}

// inference() with chunk_size = the chunk's length: the call's audio is one chunk (nothing is held
// back in prev_samples), and a final call adds an empty final chunk that flushes the frontend
void stream::feed(const float * x, size_t n, bool final, std::vector<segment> & out) {
    if (finished_) throw std::logic_error("the VAD stream has ended (a chunk was fed with final=True)");
    const double rate = m_.info().frontend.sample_rate;
    const double chunk_ms = (double) n * 1000.0 / rate;  // the caller's chunk_size (n / 16 exactly at 16 kHz)
    if (n > 0) {
        tail_.insert(tail_.end(), x, x + n);
        total_ += (int64_t) n;
        step(chunk_ms, false, out);
    } else if (!final) {
        return;
    }
    if (final) {
        step(chunk_ms, true, out);
        finished_ = true;
        tail_.clear();
        tail_.shrink_to_fit();
    }
}

// one forward call: the frames the frontend emits now, then the samples no later frame needs are let go
void stream::step(double chunk_ms, bool final, std::vector<segment> & out) {
    const funasr_frontend_params & fe = m_.info().frontend;
    seg_.begin_chunk(chunk_ms);
    const int64_t end = frames_ready(fe, (size_t) total_, final, done_);
    const int64_t T = end - done_;
    if (T > 0) {
        m_.forward_frames(tail_.data(), tail0_, done_, end, m_.n_frames((size_t) total_), memory_, post_, db_);
        seg_.chunk(post_.data(), m_.info().output_dim, db_.data(), T, final, out);
        done_ = end;
    }
    // the next call's features start at the LFR context of frame done_
    const int64_t keep = std::max<int64_t>(0, done_ - (fe.lfr_m - 1) / 2) * fe.frame_shift;
    if (keep > tail0_) {
        const int64_t drop = std::min<int64_t>(keep - tail0_, (int64_t) tail_.size());
        tail_.erase(tail_.begin(), tail_.begin() + (std::ptrdiff_t) drop);
        tail0_ += drop;
    }
}

size_t stream::state_bytes() const {
    size_t bytes = tail_.capacity() * sizeof(float) + (post_.capacity() + db_.capacity()) * sizeof(float);
    for (const auto & layer : memory_) bytes += layer.capacity() * sizeof(float);
    return bytes + seg_.decisions().state_bytes();
}

}  // namespace funasr_vad
