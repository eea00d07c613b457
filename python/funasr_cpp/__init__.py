"""funasr-cpp: Fun-ASR-Nano speech recognition on llama.cpp/ggml.

The public names below are imported on first use (PEP 562), and the native extension is loaded
only by the names that run the engine (``_native``): ``funasr_cpp.converters``, ``funasr_cpp.keys``
and ``funasr_cpp.prompt`` work without it. ``from funasr_cpp import _core`` (and ``_testing``)
gives the extension initialised.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "__version__": "._native", "LLAMA_CPP_BUILD": "._native", "LLAMA_CPP_COMMIT": "._native",
    "set_verbose": "._native",
    "SystemInfo": "._system", "model_info": "._system", "system_info": "._system",
    "quantize": ".llm",
    "Model": ".model", "transcribe": ".model",
    "Segment": ".types", "Timings": ".types", "Transcription": ".types", "Word": ".types",
    "LoadOptions": ".options", "TranscribeOptions": ".options",
    "FsmnVad": ".vad", "VadOptions": ".vad", "VadStream": ".vad", "STREAMING_SILENCE_SCHEDULE": ".vad",
    "TranscriptionStream": ".streaming", "SpeechStarted": ".streaming", "PartialText": ".streaming",
    "FinalSegment": ".streaming", "SpeechStopped": ".streaming",
}

__all__ = sorted([*_EXPORTS, "draft", "formats"], key=str.lower)

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from . import draft, formats
    from ._native import LLAMA_CPP_BUILD, LLAMA_CPP_COMMIT, __version__, set_verbose
    from ._system import SystemInfo, model_info, system_info
    from .llm import quantize
    from .model import Model, transcribe
    from .options import LoadOptions, TranscribeOptions
    from .streaming import FinalSegment, PartialText, SpeechStarted, SpeechStopped, TranscriptionStream
    from .types import Segment, Timings, Transcription, Word
    from .vad import STREAMING_SILENCE_SCHEDULE, FsmnVad, VadOptions, VadStream


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in ("_core", "_testing"):  # the extensions, after _native has initialised them
        native = importlib.import_module("._native", __name__)
        value = native._core if name == "_core" else importlib.import_module("._testing", __name__)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module("." + name, __name__)  # a submodule: funasr_cpp.hub, ...
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
