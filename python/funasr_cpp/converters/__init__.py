"""Converters: a released Fun-ASR-Nano checkpoint folder -> qwen3 GGUF + funasr mmproj GGUF; an
FSMN-VAD release -> one fsmn_vad GGUF. Pure Python: converting never loads the native extension.

`funasr-cpp convert` or `python -m funasr_cpp.converters MODEL_DIR -o OUT`.
"""
from .convert import convert, main
from .errors import ReleaseError, ReleaseWarning
from .release import Release, open_release
from .vad_gguf import is_vad_release, write_vad_gguf

__all__ = ["Release", "ReleaseError", "ReleaseWarning", "convert", "main", "is_vad_release", "open_release",
           "write_vad_gguf"]
