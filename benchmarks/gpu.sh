#!/usr/bin/env bash
# funasr-cpp on an NVIDIA GPU, in one go: build with CUDA, run the parity tests on cuda0, then the
# headline benchmarks on cuda0 and, for scale, on the same machine's CPU (the GPU hidden), inside a
# time budget (default 600 s, every phase included).
#
#   bash benchmarks/gpu.sh              # from the repo root, on the GPU machine
#   bash benchmarks/gpu.sh --pack       # on a machine with network and a built checkout: put what an
#                                       # offline GPU machine lacks into .gpu-carry/ (see below)
#
# Results go to benchmarks/results/gpu/ (GPU_SH_RESULTS): summary.md (read this first), env.txt (GPU,
# toolchain, Python modules), device.txt, build.log, parity.log + parity.xml (JUnit), bench-cuda0/ and
# bench-cpu/ (bench.py's results.json, report.md, benchmarks.png), bench-*.log. When OUT is set (the
# lent device machine's folder that comes back, a few files at most) they are also packed there as
# gpu-results.tar.gz, beside a copy of summary.md, whenever the script ends.
#
# Phases and their share of the budget (GPU_SH_BUDGET seconds): preflight; llama.cpp source; CMake +
# Ninja build with -DGGML_CUDA=ON for this GPU's architecture only (the longest part: ggml-cuda's
# kernels); the device check (cuda0 exists and is what device "auto" picks); the parity tests
# (tests/test_{device,encoder,ctc,llm_parity,asr_parity,batching}.py: the tests load models with the
# default device "auto", i.e. cuda0, against the CPU parity oracles and tolerances); bench.py --only
# ours llama-bench on real-shape random weights (Fun-ASR-Nano-2512 shapes; the headline pair q8_0 LLM
# + f16 mmproj comes first, then the other GGUF types as time allows: bench.py writes results.json
# after each); the CPU baseline (CUDA_VISIBLE_DEVICES= , headline only). A phase that would not fit
# is skipped and summary.md says so; a rerun reuses the build (GPU_SH_BUILD_DIR) and the generated
# weights (GPU_SH_WORK).
#
# Knobs: GPU_SH_BUDGET (600), GPU_SH_BUILD_DIR (build/gpu-cuda), GPU_SH_STAGE (an existing stage dir:
# skip the build), GPU_SH_CUDA_ARCH (native), GPU_SH_CMAKE_ARGS (more CMake arguments),
# GPU_SH_WORK (/tmp/funasr-cpp-bench), GPU_SH_SECONDS ("10 30"), GPU_SH_RUNS (3), GPU_SH_JOBS (nproc),
# GPU_SH_BENCH_ARGS (more bench.py arguments, e.g. --tiny), GPU_SH_TESTS (the test files), GPU_SH_DEVICE (cuda0: the device that
# "auto" must pick; a dry run of the script's phases on a CPU build: GPU_SH_DEVICE=cpu
# GPU_SH_STAGE=build/stage GPU_SH_BENCH_ARGS=--tiny).
#
# Offline machines (the lent H100/H200 has no network; its python3 has torch, numpy, pybind11,
# pytest, cmake, ninja, nvcc): the llama.cpp source is normally fetched by pip into
# ~/.cache/funasr-cpp. `--pack` (run where the project has been built) writes .gpu-carry/: the
# patched llama.cpp tree as a tarball (used when FUNASR_CPP_CACHE has no tree) and wheels of the
# Python packages that image lacks (installed with --no-index into a private folder). Carry
# .gpu-carry with the working tree (64 MiB in all; the tree packs to ~9 MB; `du -sh .gpu-carry`).
# Pack after the last change to third_party/patches: a tree whose stamp names other patches is made
# anew from the sdist, which an offline machine cannot fetch.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
CARRY="$REPO/.gpu-carry"
TREE_NAME="llama.cpp-b11312"

# ----------------------------------------------------------------------------- --pack
# What the lent GPU image lacks for the runtime, the converters, the tests' oracles and speech.
# Best effort: --no-deps wheels for CPython 3.12 manylinux x86_64; check `du -sh .gpu-carry` and what
# env.txt says is missing on the GPU machine.
PACK_WHEELS=(
    gguf soundfile cffi pycparser soxr espeakng-loader kaldi-native-fbank
    funasr==1.4.16 hydra-core omegaconf antlr4-python3-runtime jaconv jamo kaldiio librosa audioread
    pooch rapidfuzz tensorboardX torch-complex umap-learn pynndescent modelscope oss2 crcmod
)

pack() {
    mkdir -p "$CARRY/wheels"
    grep -qx '/.gpu-carry/' .git/info/exclude 2>/dev/null || echo '/.gpu-carry/' >> .git/info/exclude
    local cache tree
    cache="$(python3 -c 'import sys; sys.path.insert(0, "third_party"); import llama_cpp_source as s; print(s.cache_root())')"
    tree="$cache/$TREE_NAME"
    if [ -f "$tree/.funasr-stamp.json" ]; then
        tar -C "$cache" -cJf "$CARRY/$TREE_NAME.tar.xz" "$TREE_NAME"
        echo "packed $tree"
    else
        echo "no patched llama.cpp tree in $cache: build the project once first" >&2
        return 1
    fi
    local w
    for w in "${PACK_WHEELS[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$CARRY/wheels" "$w" || echo "no wheel for $w (left out)" >&2
    done
    du -sh "$CARRY"
}

if [ "${1:-}" = "--pack" ]; then
    pack
    exit $?
fi

# ----------------------------------------------------------------------------- the run
BUDGET="${GPU_SH_BUDGET:-600}"
RES="${GPU_SH_RESULTS:-$REPO/benchmarks/results/gpu}"
BUILD="${GPU_SH_BUILD_DIR:-$REPO/build/gpu-cuda}"
STAGE="${GPU_SH_STAGE:-$BUILD-stage}"
PKG="$BUILD-pkg"
WORK="${GPU_SH_WORK:-/tmp/funasr-cpp-bench}"
JOBS="${GPU_SH_JOBS:-$(nproc)}"
read -r -a SECONDS_LIST <<< "${GPU_SH_SECONDS:-10 30}"
RUNS="${GPU_SH_RUNS:-3}"
DEVICE="${GPU_SH_DEVICE:-cuda0}"
read -r -a BENCH_ARGS <<< "${GPU_SH_BENCH_ARGS:-}"
PARITY_TESTS="tests/test_device.py tests/test_encoder.py tests/test_ctc.py tests/test_llm_parity.py
              tests/test_asr_parity.py tests/test_batching.py"
read -r -d "" -a TESTS <<< "${GPU_SH_TESTS:-$PARITY_TESTS}" || true  # every line
PY="${PYTHON:-python3}"
rm -rf "$RES" && mkdir -p "$RES"
SUMMARY="$RES/summary.md"
: > "$SUMMARY"
pack_results() {
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT" && cp "$SUMMARY" "$OUT/summary.md" && tar -C "$RES" -czf "$OUT/gpu-results.tar.gz" .
    fi
}
trap pack_results EXIT

left() { echo $((BUDGET - SECONDS)); }
note() { echo "$*" | tee -a "$SUMMARY"; }
phase() { echo; echo "== $* ($(left) s left)"; }

note "# funasr-cpp on an NVIDIA GPU ($(date -u +%Y-%m-%dT%H:%MZ))"
note ""

# ---- preflight
phase "preflight"
{
    echo "## GPU"; nvidia-smi -L 2>&1 || echo "nvidia-smi: not found"
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1 || true
    echo "## toolchain"; nvcc --version 2>&1 | tail -n 1 || echo "nvcc: not found"
    cmake --version 2>&1 | head -n 1; ninja --version 2>&1 || echo "ninja: not found"
    echo "cores: $(nproc)"; "$PY" -V 2>&1
} > "$RES/env.txt"
if [ -d "$CARRY/wheels" ] && compgen -G "$CARRY/wheels/*.whl" > /dev/null; then
    SITE=/tmp/funasr-gpu-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$CARRY"/wheels/*.whl >> "$RES/env.txt" 2>&1 && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - >> "$RES/env.txt" 2>&1 <<'EOF'
import importlib
need = {"runtime": ["numpy", "gguf", "yaml", "soundfile", "soxr", "safetensors", "ml_dtypes", "tqdm", "tiktoken"],
        "build": ["pybind11"],
        "tests": ["pytest", "torch", "funasr", "kaldi_native_fbank", "transformers", "tokenizers", "jinja2",
                  "scipy", "espeakng_loader"],
        "benchmarks": ["matplotlib"]}
for what, mods in need.items():
    missing = []
    for m in mods:
        try:
            importlib.import_module(m)
        except Exception as e:  # noqa: BLE001
            missing.append(f"{m} ({type(e).__name__})")
    print(f"python modules for {what}: " + ("all there" if not missing else "MISSING " + ", ".join(missing)))
EOF
grep "^python modules" "$RES/env.txt" | sed 's/^/- /' >> "$SUMMARY"
if [ "${DEVICE#cuda}" != "$DEVICE" ]; then
    if ! nvidia-smi -L > /dev/null 2>&1; then
        note "- no NVIDIA GPU here (nvidia-smi): stopping"
        exit 1
    fi
    note "- GPU: $(nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -n 1)"
fi

# ---- llama.cpp source (third_party/llama_cpp_source.py: fetched with pip where there is network)
phase "llama.cpp source"
cache_root="$("$PY" -c 'import sys; sys.path.insert(0, "third_party"); import llama_cpp_source as s; print(s.cache_root())')"
if [ ! -f "$cache_root/$TREE_NAME/.funasr-stamp.json" ] && [ -f "$CARRY/$TREE_NAME.tar.xz" ]; then
    export FUNASR_CPP_CACHE=/tmp/funasr-cpp-cache
    mkdir -p "$FUNASR_CPP_CACHE"
    tar -C "$FUNASR_CPP_CACHE" -xJf "$CARRY/$TREE_NAME.tar.xz"
    echo "unpacked the carried llama.cpp tree into $FUNASR_CPP_CACHE"
fi

# ---- build
export BUILD STAGE JOBS
built=0
if [ -n "${GPU_SH_STAGE:-}" ]; then
    phase "build: using the stage $STAGE"
    built=1
else
    phase "build (CUDA, -j$JOBS) into $BUILD"
    t0=$SECONDS
    cmake_args=(-S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON
                "-DCMAKE_CUDA_ARCHITECTURES=${GPU_SH_CUDA_ARCH:-native}" "-DPython_EXECUTABLE=$(command -v "$PY")")
    command -v ninja > /dev/null && cmake_args+=(-G Ninja)
    pybind_dir="$("$PY" -m pybind11 --cmakedir 2>/dev/null)" && cmake_args+=("-Dpybind11_DIR=$pybind_dir")
    command -v ccache > /dev/null && cmake_args+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
                                                  -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
    # shellcheck disable=SC2206  # GPU_SH_CMAKE_ARGS is a list of words on purpose
    cmake_args+=(${GPU_SH_CMAKE_ARGS:-})
    # shellcheck disable=SC2016  # the inner bash expands them (BUILD, JOBS, STAGE are exported)
    if timeout "$(( $(left) > 60 ? $(left) - 30 : 30 ))" bash -c '
            cmake "$@" && cmake --build "$BUILD" -j "$JOBS" && cmake --build "$BUILD" -j "$JOBS" --target llama-bench &&
            cmake --install "$BUILD" --component funasr --prefix "$STAGE"' _ "${cmake_args[@]}" \
            > "$RES/build.log" 2>&1; then
        built=1
        note "- build: $(( SECONDS - t0 )) s (CUDA arch ${GPU_SH_CUDA_ARCH:-native}, $JOBS jobs)"
    else
        note "- build FAILED or ran out of time after $(( SECONDS - t0 )) s: see build.log (its end:)"
        tail -n 15 "$RES/build.log" | sed 's/^/    /' >> "$SUMMARY"
    fi
fi
[ "$built" = 1 ] || exit 1

# the package: python/funasr_cpp's Python files beside the stage's native modules
rm -rf "$PKG" && mkdir -p "$PKG/funasr_cpp"
for f in "$REPO"/python/funasr_cpp/*; do
    case "$(basename "$f")" in _core*|_testing*|lib|__pycache__) ;; *) ln -s "$f" "$PKG/funasr_cpp/" ;; esac
done
for f in "$STAGE"/funasr_cpp/*; do
    case "$(basename "$f")" in
        _core*|_testing*|lib) ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$PKG/funasr_cpp/" ;;
    esac
done
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"

# ---- the device
phase "device check"
if "$PY" - "$DEVICE" > "$RES/device.txt" 2>&1 <<'EOF'
import sys
import funasr_cpp
from funasr_cpp import _core
info = funasr_cpp.system_info()
print("funasr_cpp from", funasr_cpp.__file__)
for d in info.devices:
    print(d)
print("auto:", info.auto_device)
want = sys.argv[1]
assert _core.resolve_device(want) == want, f"this build has no device {want}"
assert info.auto_device == want, f"device 'auto' is {info.auto_device}, not {want}"
EOF
then
    note "- device: $DEVICE is there and is what \"auto\" picks (device.txt)"
else
    note "- device check FAILED (device.txt):"
    tail -n 5 "$RES/device.txt" | sed 's/^/    /' >> "$SUMMARY"
    exit 1
fi

# ---- parity tests on cuda0
bench_reserve=200
t_tests=$(( $(left) - bench_reserve ))
if [ "$t_tests" -ge 60 ]; then
    phase "parity tests on $DEVICE (at most $t_tests s)"
    t0=$SECONDS
    TMPDIR="$(mktemp -d)" timeout "$t_tests" "$PY" -m pytest -ra -p no:cacheprovider --junitxml="$RES/parity.xml" \
        "${TESTS[@]}" > "$RES/parity.log" 2>&1
    rc=$?
    cut=""; [ "$rc" = 124 ] && cut=" (cut at the time limit)"
    note "- parity tests: exit $rc in $(( SECONDS - t0 )) s$cut: $(tail -n 1 "$RES/parity.log")"
else
    note "- parity tests: skipped, $(left) s left"
fi

# ---- benchmarks
run_bench() {  # name, seconds allowed, extra env, bench.py --only kinds...
    local name="$1" limit="$2" envs="$3"
    shift 3
    if [ "$limit" -lt 45 ]; then
        note "- bench $name: skipped, $(left) s left"
        return
    fi
    phase "bench $name (at most $limit s)"
    local t0=$SECONDS
    # shellcheck disable=SC2086  # envs: NAME=VALUE words
    env $envs timeout "$limit" "$PY" benchmarks/bench.py --only "$@" --threads "$(nproc)" \
        --seconds "${SECONDS_LIST[@]}" --runs "$RUNS" --work "$WORK" --out "$RES/bench-$name" \
        --llama-bench "$BUILD/bin/llama-bench" "${BENCH_ARGS[@]}" > "$RES/bench-$name.log" 2>&1
    local rc=$?
    if [ -f "$RES/bench-$name/results.json" ] && [ ! -f "$RES/bench-$name/report.md" ]; then
        "$PY" benchmarks/report.py "$RES/bench-$name" >> "$RES/bench-$name.log" 2>&1
    fi
    note "- bench $name: exit $rc in $(( SECONDS - t0 ))s$([ "$rc" = 124 ] && echo " (cut at the time limit: what finished is kept)")"
}
# the GPU run first (the weights are generated once, into $WORK), then the CPU of the same machine
run_bench "$DEVICE" $(( $(left) - 90 )) "" ours llama-bench
[ "$DEVICE" = cpu ] || run_bench cpu $(( $(left) - 10 )) "CUDA_VISIBLE_DEVICES=" ours

# ---- summary: the headline rows of each run
"$PY" - "$RES" "$DEVICE" >> "$SUMMARY" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
import report
res = Path(sys.argv[1])
print("\n## Headline (q8_0 LLM + f16 mmproj; medians; see bench-*/report.md)\n")
print("| device | audio s | tokens | RTF | encode ms | prefill ms | decode tok/s | load ms |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for name in dict.fromkeys((sys.argv[2], "cpu")):
    f = res / f"bench-{name}" / "results.json"
    if not f.is_file():
        print(f"| {name} | (no results) | | | | | | |")
        continue
    results = json.loads(f.read_text())
    jobs, tokens = results.get("jobs", {}), results.get("setup", {}).get("tokens")
    for job in sorted(jobs.values(), key=lambda j: float(j.get("seconds", 0))):
        if job.get("kind") != "ours" or job.get("llm") != "q8_0" or job.get("mmproj") != "f16":
            continue
        print(f"| {name} | {job['seconds']:g} | {tokens} | {report.rtf(job):.4f} | {report.med(job, 'encode_ms'):.1f} | "
              f"{report.med(job, 'prefill_ms'):.1f} | {report.decode_tps(job):.1f} | {job['load_ms']:.0f} |")
EOF
note ""
note "total: $SECONDS s of a $BUDGET s budget; results in $RES"
