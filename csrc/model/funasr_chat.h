// Fun-ASR's instruction for llama-server's /v1/audio/transcriptions, following funasr 1.4.16
// models/fun_asr_nano/model.py (FunASRNano.get_prompt, as python/funasr_cpp/prompt.py writes it into
// the template). The patched common_chat_get_asr_prompt (third_party/patches/0004) asks here first;
// compiled into libllama-common.
#pragma once

#include <string>

// When the chat template carries an ASR prompt block (our converter writes one into the LLM GGUF:
// python/funasr_cpp/converters/llm_gguf.py), the user instruction for `language` (an ISO code, one of the block's
// language names, or empty for none) goes into `user` and the answer is true; false for any other
// template. An unknown language throws std::invalid_argument (the server's 400) listing the known ones.
bool funasr_asr_prompt(const std::string & template_source, const std::string & language, std::string & user);
