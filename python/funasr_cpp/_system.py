"""What this build of funasr-cpp runs on, and what a GGUF model file holds."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import keys


@dataclass(frozen=True)
class SystemInfo:
    funasr_cpp: str
    llama_cpp: str                 # "b11312 (0c1e570)"
    backends: list = field(default_factory=list)  # [{name, features, devices}]
    summary: str = ""              # llama.cpp's one-line feature summary
    # portable builds: every CPU variant module with ggml's score for this CPU (0 = unsupported)
    # and whether it is the one loaded; empty when the CPU backend is compiled in
    cpu_variants: list = field(default_factory=list)  # [{name, file, score, loaded}]
    # every ggml device: [{name (what device= takes: ggml's name lowercased), ggml_name, backend, type
    # ("cpu", "gpu", "igpu", "accel"), description, memory_free, memory_total (bytes), selectable (a
    # device= name; accelerators that extend the CPU backend are not)}]
    devices: list = field(default_factory=list)
    auto_device: str = "cpu"       # the device device="auto" picks

    @property
    def backend_names(self) -> list:
        return [b["name"] for b in self.backends]

    @property
    def cpu_variant(self):
        """The CPU variant in use (e.g. "haswell"); None for a build without variants."""
        return next((v["name"] for v in self.cpu_variants if v["loaded"]), None)

    def cpu_variant_reason(self) -> str:
        """Why that variant: the pin, or the highest score among those this CPU runs."""
        if not self.cpu_variants:
            return "the CPU backend is built for one instruction set (not a portable build)"
        ok = sorted((v for v in self.cpu_variants if v["score"] > 0), key=lambda v: -v["score"])
        pin = os.environ.get("FUNASR_CPU_VARIANT")
        if pin and pin == self.cpu_variant:
            return f"pinned by FUNASR_CPU_VARIANT={pin}"
        others = ", ".join(f"{v['name']} {v['score']}" for v in ok if not v["loaded"])
        unsupported = [v["name"] for v in self.cpu_variants if v["score"] <= 0]
        why = (f"the highest score among the {len(ok)} of {len(self.cpu_variants)} variants this CPU "
               f"runs (others: {others or 'none'})")
        if unsupported:
            why += f"; not runnable here: {', '.join(unsupported)}"
        return why

    @property
    def device_names(self) -> list:
        """The names ``Model(device=...)`` and ``--device`` take, besides "auto"."""
        return [d["name"] for d in self.devices if d["selectable"]]

    def __str__(self) -> str:
        lines = [f"funasr-cpp {self.funasr_cpp}, llama.cpp {self.llama_cpp}"]
        for b in self.backends:
            feats = " ".join(f"{k}={v}" for k, v in b["features"].items())
            lines.append(f"backend {b['name']}" + (f": {feats}" if feats else ""))
            for d in self.devices:
                if d["backend"] == b["name"]:
                    lines.append("  " + _device_line(d))
        lines.append(f"device auto: {self.auto_device} (--device / Model(device=...) take: auto, "
                     f"{', '.join(self.device_names)})")
        if self.cpu_variants:
            loaded = next((v for v in self.cpu_variants if v["loaded"]), None)
            head = f"{loaded['name']} ({loaded['file']}, score {loaded['score']})" if loaded else "none loaded"
            lines.append(f"cpu variant {head}: {self.cpu_variant_reason()}")
        return "\n".join(lines)


def _device_line(d: dict) -> str:
    mib = 2**20
    mem = (f"{d['memory_free'] // mib} MiB free of {d['memory_total'] // mib} MiB" if d["memory_total"]
           else "memory not reported")
    role = "" if d["selectable"] else " (works beside the CPU backend, not a --device)"
    return f"device {d['name']} ({d['ggml_name']}, {d['type']}): {d['description']}, {mem}{role}"


def system_info() -> SystemInfo:
    """Versions, ggml backends with their devices (name, type, description, memory), the device
    ``device="auto"`` picks, and CPU features."""
    from . import _core

    v = _core.version_info()
    raw = _core.system_info()
    return SystemInfo(
        funasr_cpp=v["funasr_cpp"],
        llama_cpp=f"b{_core.LLAMA_CPP_BUILD} ({_core.LLAMA_CPP_COMMIT})",
        backends=raw["backends"],
        summary=raw["summary"].strip(),
        cpu_variants=_core.cpu_variants(),
        devices=raw["devices"],
        auto_device=raw["auto_device"],
    )


def model_info(path: str | os.PathLike) -> dict:
    """Architecture and sizes of a GGUF LLM (reads metadata and vocabulary only), or, for a
    funasr mmproj, its provenance and the frontend/encoder/adaptor settings it records, or, for
    an FSMN-VAD GGUF, its sizes and options.

    Raises FileNotFoundError for a missing file and ValueError for a file that
    is not a loadable GGUF model; both messages name the path.
    """
    path = os.fspath(path)
    info = _gguf_info(path)
    if info is not None:
        return info
    from . import _core

    return _core.model_info(path)


# mmproj keys `funasr-cpp info` shows, in this order (docs/ARCHITECTURE.md: the mmproj keys)
_MMPROJ_KEYS = (keys.KEY_GENERAL_NAME, keys.KEY_CLIP_PROJ_TYPE, keys.KEY_SOURCE_LAYOUT, keys.KEY_SOURCE_VARIANT,
                keys.KEY_SOURCE_RELEASE, keys.KEY_SOURCE_FILES, keys.KEY_CTC_STATUS, keys.KEY_CTC_MISSING,
                keys.KEY_ADP_LOW_FRAME_RATE, keys.KEY_ADP_DOWNSAMPLE,
                keys.KEY_FE_LFR_M, keys.KEY_FE_LFR_N, keys.KEY_FE_WINDOW,
                keys.KEY_FE_INPUT_SCALE, keys.KEY_ENC_NUM_BLOCKS, keys.KEY_ENC_TP_BLOCKS,
                keys.KEY_ENC_SANM_SHIFT, keys.KEY_CLIP_A_PROJ_DIM)


def _gguf_info(path: str):
    """What a funasr mmproj or an FSMN-VAD GGUF records, read in Python; None for any other
    file (left to _core, which reads LLMs and names the problem with the rest)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
        import gguf

        reader = gguf.GGUFReader(path)
    except Exception:  # missing, unreadable or not GGUF: _core names the problem
        return None
    arch = reader.get_field(keys.KEY_GENERAL_ARCH)
    arch = arch.contents() if arch is not None else None
    if arch == keys.ARCH_VAD:
        return _vad_info(reader)
    if arch == keys.ARCH_CLIP:
        return _mmproj_info(reader)
    return None


def _vad_info(reader) -> dict:
    """Every fsmn_vad.* key but the CMVN arrays, named without the prefix."""
    info = {"file": "fsmn-vad"}
    for field in reader.fields.values():
        if field.name.startswith(keys.KEY_PREFIX_VAD) and not field.name.startswith(keys.KEY_PREFIX_VAD_CMVN):
            info[field.name[len(keys.KEY_PREFIX_VAD):]] = field.contents()
    return info


def _mmproj_name(key: str) -> str:
    """How `info` names an mmproj key: funasr.* without the prefix, the others as they are."""
    return key[len(keys.KEY_PREFIX_FUNASR):] if key.startswith(keys.KEY_PREFIX_FUNASR) else key


def _mmproj_info(reader) -> dict:
    """The _MMPROJ_KEYS that the file has."""
    info = {"file": "mmproj"}
    for key in _MMPROJ_KEYS:
        field = reader.get_field(key)
        if field is not None:
            info[_mmproj_name(key)] = field.contents()
    if info.get(_mmproj_name(keys.KEY_CTC_STATUS)) in ("absent", "incomplete"):
        info["timestamps"] = "unavailable (no complete CTC branch)"
    return info
