"""Reading the files of a release folder: YAML and JSON configs, the Kaldi CMVN file, weight-file
digests, and a checkpoint's state_dict checked against the shapes its config implies."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .errors import ReleaseError
from .torch_zip import StoredTensor

FLOAT_DTYPES = ("f32", "f16", "bf16", "f64")


def load_yaml(path: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReleaseError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise ReleaseError(f"{path}: expected a mapping at the top level")
    return cfg


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReleaseError(f"{path}: not valid JSON ({exc})") from None


def config_section(cfg: dict, name: str, where: Path) -> dict:
    """cfg[name] as a mapping ({} when absent); anything else names the config file."""
    value = cfg.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ReleaseError(f"{where}: {name} must be a mapping")
    return value


def load_cmvn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Kaldi nnet-style am.mvn: <AddShift> then <Rescale>, each followed by
    `<LearnRateCoef> 0 [ v1 ... vn ]`. Returns (shift, scale); applied as (x + shift) * scale."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: dict[str, np.ndarray] = {}
    for i, line in enumerate(lines[:-1]):
        head = line.split()[:1]
        nxt = lines[i + 1].split()
        if head and head[0] in ("<AddShift>", "<Rescale>") and nxt[:1] == ["<LearnRateCoef>"]:
            found[head[0]] = np.array(nxt[3:-1], dtype=np.float32)
    if set(found) != {"<AddShift>", "<Rescale>"} or found["<AddShift>"].shape != found["<Rescale>"].shape:
        raise ReleaseError(f"{path}: not a CMVN file with matching <AddShift> and <Rescale> vectors")
    return found["<AddShift>"], found["<Rescale>"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def unwrap_state_dict(sd, path: Path) -> dict:
    """funasr's loader accepts {'state_dict'|'model_state_dict'|'model': ...} and 'module.' prefixes."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, StoredTensor) for v in sd.values()):
        raise ReleaseError(f"{path}: expected a state_dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def check_tensors(tensors: dict, expected: dict, where: Path, config_hint: str) -> None:
    """Every expected key is present, with the expected shape and a float dtype; the message names
    the tensor and the config (`config_hint`) that implies its shape."""
    for key, shape in expected.items():
        t = tensors.get(key)
        if t is None:
            raise ReleaseError(f"{where}: missing tensor {key} (expected by {config_hint})")
        if tuple(t.shape) != tuple(shape):
            raise ReleaseError(f"{where}: tensor {key} has shape {list(t.shape)}, "
                               f"{config_hint} implies {list(shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise ReleaseError(f"{where}: tensor {key} has non-float dtype {t.dtype}")


__all__ = ["check_tensors", "config_section", "load_cmvn", "load_json", "load_yaml", "sha256_file",
           "unwrap_state_dict"]
