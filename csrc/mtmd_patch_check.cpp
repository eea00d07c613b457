// Compiled into libmtmd (target_sources from our CMakeLists.txt): proves at build
// time that the llama.cpp tree carries our patches, and tells _core which level.
#include "clip-impl.h"

#ifndef FUNASR_CPP_MTMD_PATCH
#error "llama.cpp tree is not patched for funasr-cpp: apply third_party/patches/*.patch"
#endif

extern "C" __attribute__((visibility("default"))) int funasr_mtmd_patch_level(void) {
    return FUNASR_CPP_MTMD_PATCH;
}
