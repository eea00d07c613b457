"""The native extension (`_core`), loaded and initialised the first time a module imports this one.

Modules that run the engine ask for it as ``from . import _core``, which the package's lazy
``__getattr__`` answers from here; nothing imports them until a public name that needs them is
used, so the converters, ``keys`` and ``prompt`` work without the extension. Initialising loads
ggml's backends from ``lib/``; a FUNASR_CPU_VARIANT pin this build cannot honour is an ImportError
that names the variants it has, raised again on every later try.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# imported by name, not `from . import _core`: that would ask the package's lazy __getattr__,
# which imports this module
_core = importlib.import_module("._core", __package__)

LIB_DIR = Path(__file__).resolve().parent / "lib"


def _check_pin_exists(pin: str, lib_dir: Path) -> None:
    variants = sorted(p.name[len("libggml-cpu-"):-3] for p in lib_dir.glob("libggml-cpu-*.so"))
    if pin not in variants:
        have = ("this build has: " + ", ".join(variants)) if variants else \
            "this build has no CPU variants (it is not a portable build: its CPU backend is compiled in)"
        raise ImportError(f"FUNASR_CPU_VARIANT={pin}: no such ggml CPU variant; {have}")


def _init(lib_dir: Path) -> None:
    pin = os.environ.get("FUNASR_CPU_VARIANT", "")
    if pin:
        _check_pin_exists(pin, lib_dir)
    _core.init(str(lib_dir))
    if pin and not any(v["loaded"] for v in _core.cpu_variants()):
        raise ImportError(f"FUNASR_CPU_VARIANT={pin}: this CPU lacks an instruction set that variant "
                          "needs (`funasr-cpp info` without the pin lists the scores)")


try:
    _init(LIB_DIR)
except ImportError:
    # importing _core set it on the package; take it off, so that `from funasr_cpp import _core`
    # fails again instead of returning an extension that was never initialised
    vars(sys.modules[__package__]).pop("_core", None)
    raise

__version__: str = _core.version_info()["funasr_cpp"]
LLAMA_CPP_BUILD: int = _core.LLAMA_CPP_BUILD
LLAMA_CPP_COMMIT: str = _core.LLAMA_CPP_COMMIT


def set_verbose(verbose: bool = True) -> None:
    """Print llama.cpp/ggml log messages to stderr (quiet by default)."""
    _core.set_verbose(bool(verbose))


__all__ = ["LIB_DIR", "LLAMA_CPP_BUILD", "LLAMA_CPP_COMMIT", "__version__", "_core", "set_verbose"]
