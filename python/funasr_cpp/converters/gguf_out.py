"""Streaming GGUF output: tensors are produced, converted and written one at a time.

The tensor directory is declared up front (names, shapes, types, byte sizes),
then each tensor is read from the memory-mapped checkpoint, converted and
written, so peak memory is about one tensor. The file is written under a
temporary name and renamed into place only when complete.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from tqdm import tqdm

# user-facing type names -> ggml types for matrix weights
WEIGHT_TYPES = {"f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0}
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


@dataclass
class Tensor:
    name: str                               # GGUF tensor name
    shape: tuple                            # numpy order (rows, cols)
    qtype: QT
    read: Callable[[], np.ndarray]          # -> float32 array of `shape`


def weight_type(type_name: str, shape: tuple) -> QT:
    """Type for a matrix weight; vectors stay F32, and a row length that is not a
    multiple of the quant block falls back to F16."""
    if len(shape) < 2:
        return QT.F32
    qt = WEIGHT_TYPES[type_name]
    block, _ = gguf.GGML_QUANT_SIZES[qt]
    return qt if shape[-1] % block == 0 else QT.F16


def _nbytes(shape: tuple, qt: QT) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qt]
    return int(np.prod(shape[:-1], dtype=np.int64)) * (shape[-1] // block) * size


def _encode(t: Tensor) -> np.ndarray:
    data = t.read()
    if tuple(data.shape) != tuple(t.shape):
        raise ValueError(f"{t.name}: produced shape {data.shape}, declared {t.shape}")
    if t.qtype == QT.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if t.qtype == QT.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), t.qtype)


def check_writable_dir(outdir: Path) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create output directory {outdir}: {exc.strerror}") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise PermissionError(f"output directory is not writable: {outdir}")


def write_gguf(path: Path, arch: str, add_metadata: Callable[[gguf.GGUFWriter], None],
               tensors: list[Tensor], label: str = "", progress: bool = True) -> Path:
    """Write a complete GGUF to `path` (atomically replaced)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(None, arch)
    try:
        add_metadata(writer)
        for t in tensors:
            nbytes = _nbytes(t.shape, t.qtype)
            if t.qtype in (QT.F32, QT.F16):
                writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32 if t.qtype == QT.F32 else np.float16),
                                       nbytes)
            else:
                byte_shape = gguf.quant_shape_to_byte_shape(t.shape, t.qtype)
                writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=t.qtype)
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(_nbytes(t.shape, t.qtype) for t in tensors)
        with tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                  disable=not progress) as bar:
            for t in tensors:
                data = _encode(t)
                writer.write_tensor_data(data)
                bar.update(data.nbytes)
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path
