"""Converters: a released Fun-ASR-Nano checkpoint folder -> qwen3 GGUF + funasr mmproj GGUF.

Installed as `funasr_cpp.converters`; in a checkout also `python -m converters`.
"""
from .convert import convert, main
from .release import Release, ReleaseError, open_release

__all__ = ["Release", "ReleaseError", "convert", "main", "open_release"]
