// funasr-cpp: whether weights may use the CPU backend's extra buffer types (AMX tiles, repacked
// quant layouts) — the LLM's (llama_model_params.use_extra_bufts, engine/handles.cpp) and the
// projector's (funasr_weights.cpp). On by default; FUNASR_NO_EXTRA_BUFTS=1 keeps every weight in
// the plain CPU buffer: for A/B measurements and as a way around a misbehaving kernel.
#pragma once

#include <cstdlib>
#include <cstring>

inline bool funasr_use_extra_bufts() {
    const char * v = std::getenv("FUNASR_NO_EXTRA_BUFTS");
    return !(v && *v && std::strcmp(v, "0") != 0);
}
