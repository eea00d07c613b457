// The host side of the CTC branch (the graph part is in csrc/model/funasr_graph.cpp, build_ctc): what
// the encoder pass leaves per CTC frame (decoder output + log-softmax normalizer, greedy token)
// turned into log-probabilities of any tokens, and the greedy transcript's bytes for drafts.
#pragma once

#include "engine/gguf_rows.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace funasr {

class CtcHead {
public:
    // nullptr when the mmproj has no complete CTC branch (funasr.ctc.status); throws
    // std::runtime_error when it claims one that cannot be read
    static std::unique_ptr<CtcHead> load(const std::string & mmproj_path);

    int32_t n_vocab() const { return n_vocab_; }
    int32_t blank() const { return blank_; }
    int64_t width() const { return width_; }  // floats per frame in the encoder's output: decoder width + 1
    const std::vector<std::string> & ranks() const { return ranks_; }  // tiktoken rank -> bytes; empty: none

    // The greedy CTC transcript as bytes: runs of one id merged, blanks dropped, every id that is
    // not a tiktoken rank (SenseVoice's special tokens) dropped. "" without the tokenizer ranks.
    std::string greedy_bytes(const std::vector<int32_t> & best) const;

    // log_softmax(ctc.out(h))[t, ids[j]] into out[t * ids.size() + j] for the frames of feats
    // ([n_frames, width()] as the encoder left them); ids outside the vocabulary: out_of_range.
    // Takes the head's own mutex (for its row cache), never the engine's: word timestamps ask
    // for the ids only Python's CTC tokenizer makes, after the job is done, while other jobs decode.
    void log_probs(const float * feats, int64_t n_frames, const std::vector<int32_t> & ids, float * out);

private:
    CtcHead(const std::string & path, int32_t n_vocab, int32_t blank, std::vector<std::string> ranks);
    const std::vector<float> & row(int32_t id);  // ctc.out.weight row id (cached), under mu_

    GgufRows weight_;
    std::vector<float> bias_;
    int32_t n_vocab_, blank_;
    int64_t width_;
    std::vector<std::string> ranks_;  // tiktoken rank -> bytes
    std::mutex mu_;
    std::unordered_map<int32_t, std::vector<float>> rows_;
};

}  // namespace funasr
