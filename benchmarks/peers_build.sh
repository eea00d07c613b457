#!/usr/bin/env bash
# Build the two peer runtimes benchmarks/peers.py compares against, and convert the random-weight
# release with each peer's own exporter. Fetches nothing: the sources are local git snapshots.
#
#   bash benchmarks/peers_build.sh PEERS_DIR FUNASR_GIT_DIR TRANSCRIBE_GIT_DIR
#
#   PEERS_DIR           where everything goes (sources, build-funasr/, build-transcribe/, models/)
#   FUNASR_GIT_DIR      git dir of a modelscope/FunASR snapshot (runtime/llama.cpp is used)
#   TRANSCRIBE_GIT_DIR  git dir of a handy-computer/transcribe.cpp snapshot
# Environment (defaults):
#   RELEASE=/tmp/funasr-cpp-bench/fun-asr-nano-random   release folder (model.pt, Qwen3-0.6B/)
#   LLAMA_SDIST=<funasr-cpp cache>/llama_cpp_python-0.3.36.tar.gz   the llama.cpp the FunASR
#       runtime is built against (its own pin, 803b7fcae, is fetched by its CMake; we do not fetch)
#   FUNASR_REV=HEAD TRANSCRIBE_REV=HEAD   revisions inside the snapshots
#   PYTHON=python3 (needs torch, numpy, gguf, pyyaml: the project venv)   JOBS=2
#   FUNASR_ENC_TYPES="f16"   encoder GGUF types for the FunASR peer (f32 f16 q8_0)
#   TRANSCRIBE_QUANTS="Q8_0" transcribe.cpp quantizations made from its BF16 GGUF
#   PEERS_AMX=0              1: leave ggml's AMX kernels on (see below)
# Builds run under nice -n 19. Rerunning skips what exists.
set -euo pipefail

if [ $# -ne 3 ]; then sed -n 2,23p "$0"; exit 2; fi
P=$(realpath -m "$1"); FUNASR_GIT=$(realpath "$2"); TRANSCRIBE_GIT=$(realpath "$3")
REPO=$(cd "$(dirname "$0")/.." && pwd)
RELEASE=${RELEASE:-/tmp/funasr-cpp-bench/fun-asr-nano-random}
CACHE=${FUNASR_CPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/funasr-cpp}
LLAMA_SDIST=${LLAMA_SDIST:-$CACHE/llama_cpp_python-0.3.36.tar.gz}
FUNASR_REV=${FUNASR_REV:-HEAD}; TRANSCRIBE_REV=${TRANSCRIBE_REV:-HEAD}
PYTHON=${PYTHON:-python3}; JOBS=${JOBS:-2}
FUNASR_ENC_TYPES=${FUNASR_ENC_TYPES:-f16}; TRANSCRIBE_QUANTS=${TRANSCRIBE_QUANTS:-Q8_0}
mkdir -p "$P/models"
say() { echo "[peers_build] $*" >&2; }

# ---- sources
FUNASR_SHA=$(git --git-dir="$FUNASR_GIT" rev-parse "$FUNASR_REV")
TRANSCRIBE_SHA=$(git --git-dir="$TRANSCRIBE_GIT" rev-parse "$TRANSCRIBE_REV")
if [ ! -f "$P/funasr-runtime/CMakeLists.txt" ]; then
    say "FunASR runtime/llama.cpp @ $FUNASR_SHA"
    rm -rf "$P/funasr-runtime" "$P/.funasr-tmp"; mkdir -p "$P/.funasr-tmp"
    git --git-dir="$FUNASR_GIT" archive "$FUNASR_SHA" runtime/llama.cpp | tar -x -C "$P/.funasr-tmp"
    mv "$P/.funasr-tmp/runtime/llama.cpp" "$P/funasr-runtime"; rm -rf "$P/.funasr-tmp"
fi
if [ ! -f "$P/transcribe.cpp/CMakeLists.txt" ]; then
    say "transcribe.cpp @ $TRANSCRIBE_SHA (samples/ and reports/ left out: large files a snapshot may lack)"
    rm -rf "$P/transcribe.cpp"; mkdir -p "$P/transcribe.cpp"
    git --git-dir="$TRANSCRIBE_GIT" archive "$TRANSCRIBE_SHA" -- . ':(exclude)samples' ':(exclude)reports' \
        | tar -x -C "$P/transcribe.cpp"
fi
if [ ! -f "$P/llama.cpp/CMakeLists.txt" ]; then
    want=$(cd "$REPO/third_party" && "$PYTHON" -c "from llama_cpp_source import PIN; print(PIN.sha256)")
    have=$(sha256sum "$LLAMA_SDIST" | cut -d' ' -f1)
    [ "$want" = "$have" ] || { say "sha256 of $LLAMA_SDIST is $have, expected $want"; exit 1; }
    say "llama.cpp (clean, unpatched) from $LLAMA_SDIST"
    rm -rf "$P/.sdist-tmp"; mkdir -p "$P/.sdist-tmp"
    tar -xzf "$LLAMA_SDIST" -C "$P/.sdist-tmp" --wildcards '*/vendor/llama.cpp/*'
    mv "$P"/.sdist-tmp/*/vendor/llama.cpp "$P/llama.cpp"; rm -rf "$P/.sdist-tmp"
fi

# ---- compiler flags. The peers' ggml is unpatched: where -march=native turns AMX on, its AMX
# kernels as GCC builds them do not run (GCC's tile intrinsics under-declare the memory they read:
# our third_party/patches/0008; unpatched, llama-funasr-cli dies with SIGSEGV in
# ggml_backend_amx_mul_mat on an AMX VM with GCC 12). So the peers get ggml's AVX-512 kernels
# there, unless PEERS_AMX=1.
FLAGS=""
if [ "${PEERS_AMX:-0}" != 1 ] && gcc -march=native -dM -E -x c /dev/null | grep -q '__AMX_INT8__'; then
    FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    say "the compiler targets AMX here: building the peers with $FLAGS (PEERS_AMX=1 to keep it)"
fi

# ---- builds
if [ ! -x "$P/build-funasr/bin/llama-funasr-cli" ] || [ ! -x "$P/build-funasr/bin/llama-funasr-encoder" ]; then
    say "building the FunASR runtime (log: $P/build-funasr.log)"
    nice -n 19 cmake -S "$P/funasr-runtime" -B "$P/build-funasr" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DGGML_CCACHE=ON -DFETCHCONTENT_SOURCE_DIR_LLAMA="$P/llama.cpp" \
        -DFETCHCONTENT_FULLY_DISCONNECTED=ON "-DCMAKE_C_FLAGS=$FLAGS" "-DCMAKE_CXX_FLAGS=$FLAGS" \
        > "$P/build-funasr.log" 2>&1
    nice -n 19 cmake --build "$P/build-funasr" -j"$JOBS" --target llama-funasr-cli llama-funasr-encoder \
        >> "$P/build-funasr.log" 2>&1
fi
if [ ! -x "$P/build-transcribe/bin/transcribe-cli" ] || [ ! -x "$P/build-transcribe/bin/transcribe-quantize" ]; then
    say "building transcribe.cpp (log: $P/build-transcribe.log)"
    nice -n 19 cmake -S "$P/transcribe.cpp" -B "$P/build-transcribe" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DGGML_CCACHE=ON -DTRANSCRIBE_BUILD_TESTS=OFF -DTRANSCRIBE_BUILD_TOOLS=ON \
        "-DCMAKE_C_FLAGS=$FLAGS" "-DCMAKE_CXX_FLAGS=$FLAGS" > "$P/build-transcribe.log" 2>&1
    nice -n 19 cmake --build "$P/build-transcribe" -j"$JOBS" --target transcribe-cli transcribe-quantize \
        >> "$P/build-transcribe.log" 2>&1
fi

# ---- conversions, each peer with its own exporter
for t in $FUNASR_ENC_TYPES; do
    out="$P/models/funasr-encoder-random-$t.gguf"
    [ -f "$out" ] && continue
    say "FunASR export_encoder_gguf.py --wtype $t"
    nice -n 19 "$PYTHON" "$P/funasr-runtime/fun-asr-nano/export_encoder_gguf.py" \
        --model_pt "$RELEASE/model.pt" --out "$out" --wtype "$t"
done
bf16="$P/models/transcribe-fun-asr-nano-random-BF16.gguf"
if [ ! -f "$bf16" ]; then
    say "transcribe.cpp scripts/convert-funasr_nano.py"
    nice -n 19 "$PYTHON" "$P/transcribe.cpp/scripts/convert-funasr_nano.py" "$RELEASE" "$bf16" \
        --variant fun-asr-nano-2512
fi
for q in $TRANSCRIBE_QUANTS; do
    out="$P/models/transcribe-fun-asr-nano-random-$q.gguf"
    [ -f "$out" ] && continue
    say "transcribe-quantize --quant $q"
    nice -n 19 "$P/build-transcribe/bin/transcribe-quantize" "$bf16" "$out" --quant "$q"
done

cat > "$P/SNAPSHOTS.txt" <<EOF
modelscope/FunASR $FUNASR_SHA (runtime/llama.cpp)
handy-computer/transcribe.cpp $TRANSCRIBE_SHA
llama.cpp for the FunASR runtime: $(basename "$LLAMA_SDIST") vendor/llama.cpp (unpatched)
extra C/C++ flags: ${FLAGS:-none}
EOF
say "done: $P"; cat "$P/SNAPSHOTS.txt" >&2
