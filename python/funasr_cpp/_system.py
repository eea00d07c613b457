"""What this build of funasr-cpp runs on, and what a GGUF model file holds."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import _core


@dataclass(frozen=True)
class SystemInfo:
    funasr_cpp: str
    llama_cpp: str                 # "b11312 (0c1e570)"
    backends: list = field(default_factory=list)  # [{name, features, devices}]
    summary: str = ""              # llama.cpp's one-line feature summary

    @property
    def backend_names(self) -> list:
        return [b["name"] for b in self.backends]

    def __str__(self) -> str:
        lines = [f"funasr-cpp {self.funasr_cpp}, llama.cpp {self.llama_cpp}"]
        for b in self.backends:
            feats = " ".join(f"{k}={v}" for k, v in b["features"].items())
            lines.append(f"backend {b['name']}" + (f": {feats}" if feats else ""))
            for d in b["devices"]:
                mem = f", {d['memory_total'] / 2**30:.1f} GiB" if d["memory_total"] else ""
                lines.append(f"  device {d['name']} ({d['type']}): {d['description']}{mem}")
        return "\n".join(lines)


def system_info() -> SystemInfo:
    """Versions, ggml backends with their devices, and CPU features."""
    v = _core.version_info()
    raw = _core.system_info()
    return SystemInfo(
        funasr_cpp=v["funasr_cpp"],
        llama_cpp=f"b{_core.LLAMA_CPP_BUILD} ({_core.LLAMA_CPP_COMMIT})",
        backends=raw["backends"],
        summary=raw["summary"].strip(),
    )


def model_info(path: str | os.PathLike) -> dict:
    """Architecture and sizes of a GGUF LLM (reads metadata and vocabulary only).

    Raises FileNotFoundError for a missing file and ValueError for a file that
    is not a loadable GGUF model; both messages name the path.
    """
    return _core.model_info(os.fspath(path))
