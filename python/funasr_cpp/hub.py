"""Where a model comes from: folders, the conversion cache, Hugging Face and ModelScope.

:func:`resolve_model` turns ``Model.from_pretrained``'s source into an (LLM GGUF, mmproj GGUF) pair:

- a released checkpoint folder (funasr's ``model.pt`` + ``config.yaml`` layout, or the Transformers
  ``-hf`` one) is converted once into ``<cache>/<name>-<hash>/`` (the hash covers the folder's path
  and its files' sizes and times) under a file lock, then reused;
- a folder with one LLM GGUF and one ``mmproj-*.gguf`` is used as it is;
- a hub id (``FunAudioLLM/Fun-ASR-Nano-2512``) is downloaded (``huggingface_hub`` or ``modelscope``)
  and then converted and cached like a folder. Without network (or with ``HF_HUB_OFFLINE=1``) this
  fails in seconds with a ``ConnectionError`` that says how to convert a local copy instead.

The cache root is ``$FUNASR_CPP_CACHE/models``, else ``$XDG_CACHE_HOME/funasr-cpp/models``, else
``~/.cache/funasr-cpp/models``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional, Union

DEFAULT_MODEL = "FunAudioLLM/Fun-ASR-Nano-2512"
#: the FSMN-VAD upstream pairs with Fun-ASR (``vad_model="fsmn-vad"``), on either hub
VAD_ALIASES = {"fsmn-vad": {"huggingface": "funasr/fsmn-vad", "modelscope": "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch"}}
VAD_GGUF_PREFIX = "fsmn-vad"   # a folder may hold the ASR pair and the VAD GGUF side by side


def default_cache_dir() -> Path:
    root = os.environ.get("FUNASR_CPP_CACHE")
    if root:
        return Path(root).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "funasr-cpp" / "models"


def _release_files(folder: Path) -> list:
    """The files that identify a checkpoint folder (funasr's layout or the Transformers -hf one);
    empty when `folder` is neither."""
    if (folder / "model.pt").is_file() and (folder / "config.yaml").is_file():
        return [folder / "model.pt", folder / "config.yaml"]
    config = folder / "config.json"
    if config.is_file() and not (folder / "config.yaml").exists():
        try:
            if json.loads(config.read_text(encoding="utf-8")).get("model_type") == "fun_asr_nano":
                return [config] + sorted(folder.glob("*.safetensors"))
        except (ValueError, OSError):
            pass  # not ours; the GGUF-folder path reports what is there
    return []


def _is_release(folder: Path) -> bool:
    return bool(_release_files(folder))


def _gguf_pair(folder: Path, llm_type: Optional[str] = None, mmproj_type: Optional[str] = None):
    """(llm, mmproj) of a folder with exactly one LLM GGUF and one mmproj-*.gguf, or None if
    types are given and missing; ValueError when ambiguous."""
    ggufs = sorted(p for p in folder.glob("*.gguf") if p.is_file() and not p.name.startswith(VAD_GGUF_PREFIX))
    mm = [p for p in ggufs if p.name.startswith("mmproj")]
    llm = [p for p in ggufs if not p.name.startswith("mmproj")]
    if llm_type is not None:
        llm = [p for p in llm if p.name.endswith(f"-{llm_type}.gguf")]
        mm = [p for p in mm if p.name.endswith(f"-{mmproj_type}.gguf")]
        return (llm[0], mm[0]) if len(llm) == 1 and len(mm) == 1 else None
    if len(llm) != 1 or len(mm) != 1:
        raise ValueError(f"{folder}: expected one LLM GGUF and one mmproj-*.gguf, found "
                         f"{len(llm)} LLM GGUF(s) {[p.name for p in llm]} and {len(mm)} mmproj GGUF(s) "
                         f"{[p.name for p in mm]}; a released checkpoint folder needs model.pt and config.yaml")
    return llm[0], mm[0]


def _release_cache_dir(folder: Path, cache_dir) -> Path:
    folder = folder.resolve()
    h = hashlib.sha256(str(folder).encode())
    for f in _release_files(folder):
        st = f.stat()
        h.update(f"|{f.name}:{st.st_mtime_ns}:{st.st_size}".encode())
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{folder.name}-{h.hexdigest()[:12]}"


def _cached(folder: Path, cache_dir, find, make):
    """find(out) if the folder's conversion is in the cache, else make(out) under a file lock (a
    process that waited for the lock finds what the other one made)."""
    out = _release_cache_dir(folder, cache_dir)
    found = find(out) if out.is_dir() else None
    if found:
        return found
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        try:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        return find(out) or make(out)


def _convert_cached(folder: Path, cache_dir, llm_type: str, mmproj_type: str) -> tuple[Path, Path]:
    from .converters import convert

    return _cached(folder, cache_dir, lambda out: _gguf_pair(out, llm_type, mmproj_type),
                   lambda out: convert(folder, out, llm_type=llm_type, mmproj_type=mmproj_type, progress=False))


def _looks_like_hub_id(s: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", s)) and not s.startswith((".", "~"))


_CONVERT_HINT = ("download the release folder yourself and pass its path to from_pretrained(), or convert "
                 "it once with `funasr-cpp convert DIR -o OUT` and load OUT")
_HUB_FILES = ["model.pt", "config.yaml", "configuration.json", "multilingual.tiktoken", "am.mvn",
              "Qwen3-0.6B/*",
              # the Transformers layout (FunAudioLLM/Fun-ASR-Nano-2512-hf)
              "config.json", "*.safetensors", "model.safetensors.index.json", "preprocessor_config.json",
              "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"]


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FUNASR_CPP_OFFLINE"))


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host opens within ``timeout`` (a quick network check,
    so that a machine without network fails in seconds rather than after the hub's retries)."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    if not u.hostname:
        return True
    try:
        with socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False


def _download(repo_id: str, hub: str, cache_dir) -> Path:
    hub = hub.lower()
    if hub in ("huggingface", "hf"):
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise ImportError(f"downloading {repo_id!r} needs huggingface_hub (`pip install huggingface_hub`); "
                              f"or {_CONVERT_HINT}") from None
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        local_only = _offline() or not _reachable(endpoint)
        try:
            return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES, local_files_only=local_only))
        except Exception as exc:  # network errors, offline mode without a cached copy, unknown repo
            if _offline():
                why = "offline mode (HF_HUB_OFFLINE) and no cached copy"
            elif local_only:
                why = f"no network: cannot reach {endpoint}, and no cached copy"
            else:
                why = f"{type(exc).__name__}: {exc}"
            raise ConnectionError(f"cannot download {repo_id!r} from Hugging Face ({why}); {_CONVERT_HINT}") from exc
    if hub in ("modelscope", "ms"):
        if _offline():
            raise ConnectionError(f"cannot download {repo_id!r} from ModelScope (offline mode); {_CONVERT_HINT}")
        try:
            from modelscope import snapshot_download as ms_download
        except ImportError:
            raise ImportError(f"downloading {repo_id!r} from ModelScope needs modelscope (`pip install modelscope`); "
                              f"or {_CONVERT_HINT}") from None
        if not _reachable(os.environ.get("MODELSCOPE_DOMAIN") or "https://www.modelscope.cn"):
            raise ConnectionError(f"cannot download {repo_id!r} from ModelScope (no network); {_CONVERT_HINT}")
        try:
            return Path(ms_download(repo_id, allow_patterns=_HUB_FILES))
        except Exception as exc:
            raise ConnectionError(f"cannot download {repo_id!r} from ModelScope ({type(exc).__name__}: {exc}); "
                                  f"{_CONVERT_HINT}") from exc
    raise ValueError(f"hub must be 'huggingface' or 'modelscope', got {hub!r}")


def default_mmproj_type() -> str:
    """The mmproj type ``mmproj_type="auto"`` converts to on this machine, the fastest encoder by
    measurement (benchmarks/mmproj_types.py, BENCHMARKS.md): f16 where a GPU backend is present;
    on the CPU, q8_0 where ggml's CPU backend runs AMX (its int8 tile kernels take the encoder's
    products: about twice as fast as f32 there), else f32 (faster than f16, bf16 and q8_0 on the
    AVX-512 and AVX2 CPUs measured; never a type slower than f32)."""
    from . import _core

    backends = _core.system_info()["backends"]
    if any(d["type"] in ("gpu", "igpu") for b in backends for d in b["devices"]):
        return "f16"
    cpu = next((b for b in backends if b["name"] == "CPU"), {"features": {}})
    return "q8_0" if cpu["features"].get("AMX_INT8") == "1" else "f32"


def resolve_model(source: Union[str, os.PathLike], *, cache_dir=None, llm_type: str = "q8_0",
                  mmproj_type: str = "auto", hub: str = "huggingface") -> tuple[Path, Path]:
    """``from_pretrained``'s source -> (llm_gguf, mmproj_gguf), converting/downloading as needed.
    ``mmproj_type="auto"``: :func:`default_mmproj_type`."""
    if mmproj_type == "auto":
        mmproj_type = default_mmproj_type()
    path = Path(source).expanduser()
    if path.is_dir():
        if _is_vad_release(path):
            raise ValueError(f"{source} is an FSMN-VAD model, not an ASR checkpoint: pass it as the VAD model "
                             "(vad_model= / --vad-model)")
        if _is_release(path):
            return _convert_cached(path, cache_dir, llm_type, mmproj_type)
        return _gguf_pair(path)
    if path.exists():
        raise ValueError(f"{source}: expected a folder (a released checkpoint or one with two GGUF files), "
                         "not a file; for two GGUF files use Model(llm_gguf, mmproj_gguf)")
    if isinstance(source, str) and _looks_like_hub_id(source):
        folder = _download(source, hub, cache_dir)
        if not _is_release(folder):
            raise ValueError(f"{source}: the downloaded snapshot {folder} is not a checkpoint folder (no model.pt + "
                             "config.yaml, no Transformers config.json of model_type fun_asr_nano)")
        return _convert_cached(folder, cache_dir, llm_type, mmproj_type)
    raise FileNotFoundError(f"{source}: no such folder (and not a hub id like {DEFAULT_MODEL!r})")


def _is_vad_release(folder: Path) -> bool:
    from .converters import is_vad_release

    return is_vad_release(folder)


def _hub_key(hub: str) -> str:
    h = hub.lower()
    if h in ("huggingface", "hf"):
        return "huggingface"
    if h in ("modelscope", "ms"):
        return "modelscope"
    raise ValueError(f"hub must be 'huggingface' or 'modelscope', got {hub!r}")


def resolve_vad_model(source: Union[str, os.PathLike] = "fsmn-vad", *, cache_dir=None,
                      hub: str = "huggingface") -> Path:
    """A VAD model source -> its fsmn_vad GGUF: ``"fsmn-vad"`` (upstream's, from ``hub``), a hub id,
    an FSMN-VAD release folder (converted once into the cache, like an ASR checkpoint), a folder
    with one ``fsmn-vad*.gguf``, or that file itself. An ASR checkpoint here is a ValueError."""
    if isinstance(source, str) and source in VAD_ALIASES:
        source = VAD_ALIASES[source][_hub_key(hub)]
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{source}: a VAD model is an FSMN-VAD release folder or its .gguf, not this file")
        return path  # its architecture is checked when it is loaded
    if path.is_dir():
        if _is_vad_release(path):
            return _convert_vad_cached(path, cache_dir)
        if _is_release(path):
            raise ValueError(f"{source} is a Fun-ASR-Nano ASR checkpoint, not a VAD model: give it as the model "
                             "and an FSMN-VAD release (\"fsmn-vad\") as the VAD model")
        ggufs = sorted(path.glob(f"{VAD_GGUF_PREFIX}*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
        raise ValueError(f"{source}: not an FSMN-VAD release folder (model.pt + config.yaml with model "
                         f"FsmnVADStreaming) and no single {VAD_GGUF_PREFIX}*.gguf in it (found {len(ggufs)})")
    if isinstance(source, str) and _looks_like_hub_id(source):
        folder = _download(source, hub, cache_dir)
        if not _is_vad_release(folder):
            raise ValueError(f"{source}: the downloaded snapshot {folder} is not an FSMN-VAD release")
        return _convert_vad_cached(folder, cache_dir)
    raise FileNotFoundError(f"{source}: no such folder or file (and not a hub id like 'funasr/fsmn-vad')")


def _convert_vad_cached(folder: Path, cache_dir) -> Path:
    from .converters import write_vad_gguf
    from .converters.vad_gguf import GGUF_NAME

    return _cached(folder, cache_dir, lambda out: out / GGUF_NAME if (out / GGUF_NAME).is_file() else None,
                   lambda out: write_vad_gguf(folder, out))


__all__ = ["DEFAULT_MODEL", "VAD_ALIASES", "resolve_vad_model", "default_cache_dir", "default_mmproj_type", "resolve_model"]
