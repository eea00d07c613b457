"""funasr-cpp: Fun-ASR-Nano speech recognition on llama.cpp/ggml."""
from __future__ import annotations

from pathlib import Path

from . import _core, draft, formats
from ._system import SystemInfo, model_info, system_info
from .llm import quantize
from .model import Model, Segment, Transcription, transcribe
from .options import Timings, TranscribeOptions
from .vad import FsmnVad, VadOptions

_core.init(str(Path(__file__).resolve().parent / "lib"))

__version__: str = _core.version_info()["funasr_cpp"]
LLAMA_CPP_BUILD: int = _core.LLAMA_CPP_BUILD
LLAMA_CPP_COMMIT: str = _core.LLAMA_CPP_COMMIT


def set_verbose(verbose: bool = True) -> None:
    """Print llama.cpp/ggml log messages to stderr (quiet by default)."""
    _core.set_verbose(bool(verbose))


__all__ = ["__version__", "LLAMA_CPP_BUILD", "LLAMA_CPP_COMMIT", "FsmnVad", "Model", "draft", "formats", "Segment", "SystemInfo", "Timings",
           "Transcription", "TranscribeOptions", "VadOptions", "model_info", "quantize", "set_verbose", "system_info", "transcribe"]
