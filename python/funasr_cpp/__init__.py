"""funasr-cpp: Fun-ASR-Nano speech recognition on llama.cpp/ggml."""
from __future__ import annotations

import os
from pathlib import Path

from . import _core, draft, formats
from ._system import SystemInfo, model_info, system_info
from .llm import quantize
from .model import Model, Segment, Transcription, transcribe
from .options import Timings, TranscribeOptions
from .vad import FsmnVad, VadOptions


def _init_native(lib_dir: Path) -> None:
    """Load ggml's backends from lib_dir; a FUNASR_CPU_VARIANT pin this build cannot honour is an
    ImportError that names the variants it has."""
    pin = os.environ.get("FUNASR_CPU_VARIANT", "")
    variants = sorted(p.name[len("libggml-cpu-"):-3] for p in lib_dir.glob("libggml-cpu-*.so"))
    if pin and pin not in variants:
        have = ("this build has: " + ", ".join(variants)) if variants else \
            "this build has no CPU variants (it is not a portable build: its CPU backend is compiled in)"
        raise ImportError(f"FUNASR_CPU_VARIANT={pin}: no such ggml CPU variant; {have}")
    _core.init(str(lib_dir))
    if pin and not any(v["loaded"] for v in _core.cpu_variants()):
        raise ImportError(f"FUNASR_CPU_VARIANT={pin}: this CPU lacks an instruction set that variant "
                          "needs (`funasr-cpp info` without the pin lists the scores)")


_init_native(Path(__file__).resolve().parent / "lib")

__version__: str = _core.version_info()["funasr_cpp"]
LLAMA_CPP_BUILD: int = _core.LLAMA_CPP_BUILD
LLAMA_CPP_COMMIT: str = _core.LLAMA_CPP_COMMIT


def set_verbose(verbose: bool = True) -> None:
    """Print llama.cpp/ggml log messages to stderr (quiet by default)."""
    _core.set_verbose(bool(verbose))


__all__ = ["__version__", "LLAMA_CPP_BUILD", "LLAMA_CPP_COMMIT", "FsmnVad", "Model", "draft", "formats", "Segment", "SystemInfo", "Timings",
           "Transcription", "TranscribeOptions", "VadOptions", "model_info", "quantize", "set_verbose", "system_info", "transcribe"]
