"""Converters: a released Fun-ASR-Nano checkpoint folder -> qwen3 GGUF + funasr mmproj GGUF; an
FSMN-VAD release -> one fsmn_vad GGUF.

Installed as `funasr_cpp.converters`; in a checkout also `python -m converters`.
"""
from .convert import convert, main
from .release import Release, ReleaseError, open_release
from .vad_gguf import is_vad_release, write_vad_gguf

__all__ = ["Release", "ReleaseError", "convert", "main", "is_vad_release", "open_release", "write_vad_gguf"]
