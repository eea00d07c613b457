// Text <-> token ids with the LLM's vocabulary, and the vocabulary's token types as the GGUF file
// writes them (for a detokenization that renders what Hugging Face renders).
#pragma once

#include "llama.h"

#include <cstdint>
#include <string>
#include <vector>

namespace funasr {

std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text, bool add_special,
                                  bool parse_special);

// The bytes of ids concatenated, like Hugging Face's decode: skip_special drops the tokens the
// GGUF file types CONTROL (HF's special tokens) and renders every other one, user-defined tokens
// included. llama.cpp's own attributes cannot say this: it re-types some non-special tokens as
// CONTROL when it loads a vocabulary (Qwen's <|fim_prefix|> and friends), which HF renders.
// file_types: tokenizer.ggml.token_type of the file (empty: llama.cpp's attributes are used).
std::string token_bytes(const llama_vocab * vocab, const std::vector<int32_t> & file_types,
                        const std::vector<llama_token> & ids, bool skip_special);

// tokenizer.ggml.token_type of a GGUF file ({} when it has none)
std::vector<int32_t> file_token_types(const std::string & path);

}  // namespace funasr
