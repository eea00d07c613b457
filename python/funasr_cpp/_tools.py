"""Console entry points for the llama.cpp tools shipped in funasr_cpp/lib.

The binaries live beside their shared libraries (RPATH $ORIGIN); these shims
put them on PATH after `pip install` and replace themselves with the binary.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LIB_DIR = Path(__file__).resolve().parent / "lib"


def tool_path(name: str) -> Path:
    exe = LIB_DIR / (name + (".exe" if os.name == "nt" else ""))
    if not exe.exists():
        raise FileNotFoundError(f"{name} is not part of this funasr-cpp installation ({exe} missing)")
    return exe


def _exec(name: str) -> None:
    try:
        exe = tool_path(name)
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")
    argv = [str(exe), *sys.argv[1:]]
    if os.name == "nt":  # no exec on Windows: forward the exit code
        sys.exit(subprocess.call(argv))
    os.execv(argv[0], argv)


def llama_mtmd_cli() -> None:
    _exec("llama-mtmd-cli")


def llama_server() -> None:
    _exec("llama-server")
