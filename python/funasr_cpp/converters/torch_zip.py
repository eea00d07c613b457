"""Read a PyTorch `torch.save` checkpoint without torch, memory-mapped.

A checkpoint saved by torch >= 1.6 is a zip archive: `<name>/data.pkl` (a
pickle whose tensors refer to storages by key) and `<name>/data/<key>` (the
raw storage bytes, stored uncompressed). We unpickle with an allow-list of
globals and map each storage with numpy.memmap, so a 2 GB checkpoint costs
no memory until a tensor is read, and then only that tensor.
"""
from __future__ import annotations

import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# torch storage class -> (numpy dtype of the raw elements, our dtype name)
_STORAGES = {
    "FloatStorage": (np.float32, "f32"),
    "HalfStorage": (np.float16, "f16"),
    "BFloat16Storage": (np.uint16, "bf16"),  # raw bits; see StoredTensor.to_numpy
    "DoubleStorage": (np.float64, "f64"),
    "LongStorage": (np.int64, "i64"),
    "IntStorage": (np.int32, "i32"),
    "ShortStorage": (np.int16, "i16"),
    "CharStorage": (np.int8, "i8"),
    "ByteStorage": (np.uint8, "u8"),
    "BoolStorage": (np.bool_, "bool"),
}


class CheckpointError(ValueError):
    """The file is not a readable PyTorch checkpoint."""


@dataclass
class StoredTensor:
    """A tensor in the checkpoint: shape and dtype known, data read on demand."""
    dtype: str               # f32, f16, bf16, ...
    shape: tuple
    _storage: "_Storage"
    _offset: int             # in elements
    _stride: tuple

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def to_numpy(self, dtype=np.float32, rows: slice | None = None) -> np.ndarray:
        """The values (or a slice of rows) as a new array; bf16 is widened exactly to f32."""
        raw = self._storage.array()
        item = raw.itemsize
        view = np.lib.stride_tricks.as_strided(
            raw[self._offset:], shape=self.shape, strides=tuple(s * item for s in self._stride))
        if rows is not None:
            view = view[rows]
        if self.dtype == "bf16":
            return (view.astype(np.uint32) << 16).view(np.float32).astype(dtype, copy=False)
        return view.astype(dtype)


class _Storage:
    def __init__(self, archive: "TorchZip", key: str, np_dtype, dtype_name: str, numel: int):
        self.archive, self.key, self.numel = archive, key, numel
        self.np_dtype, self.dtype_name = np.dtype(np_dtype), dtype_name
        self._array = None

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self.archive.map_record(self.key, self.np_dtype, self.numel)
        return self._array


def _rebuild_tensor(storage, offset, size, stride, *_args):
    return StoredTensor(storage.dtype_name, tuple(size), storage, offset, tuple(stride))


def _rebuild_parameter(data, *_args):
    return data


class _Unpickler(pickle.Unpickler):
    """Allows only the globals a state_dict checkpoint needs."""

    def __init__(self, f, archive: "TorchZip"):
        super().__init__(f)
        self.archive = archive
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name in _STORAGES:
            return name
        raise CheckpointError(f"{self.archive.path}: unsupported object {module}.{name} in the "
                              "checkpoint (expected a plain state_dict of tensors)")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or storage_type not in _STORAGES:
            raise CheckpointError(f"{self.archive.path}: unsupported storage {pid[:2]}")
        if key not in self.storages:
            self.storages[key] = _Storage(self.archive, key, *_STORAGES[storage_type], numel)
        return self.storages[key]


class TorchZip:
    """An opened checkpoint; `load()` returns its (nested) dict of StoredTensors."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile:
            raise CheckpointError(f"{self.path}: not a PyTorch checkpoint or truncated "
                                  "(no zip directory; legacy pre-1.6 torch.save files are not supported)") from None
        names = self.zip.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointError(f"{self.path}: zip file without data.pkl, not a PyTorch checkpoint")
        self.prefix = pkl[0][: -len("data.pkl")]
        self._fh = open(self.path, "rb")

    def load(self):
        with self.zip.open(self.prefix + "data.pkl") as f:
            try:
                return _Unpickler(f, self).load()
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
                if isinstance(exc, CheckpointError):
                    raise
                raise CheckpointError(f"{self.path}: cannot read data.pkl ({exc})") from None

    def map_record(self, key: str, np_dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: storage {name} is missing (truncated file?)") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{self.path}: storage {name} is compressed; re-save with torch.save")
        self._fh.seek(info.header_offset)
        header = self._fh.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{self.path}: corrupt zip entry {name}")
        n_name, n_extra = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + n_name + n_extra
        nbytes = numel * np_dtype.itemsize
        if info.file_size < nbytes or start + nbytes > self.path.stat().st_size:
            raise CheckpointError(f"{self.path}: storage {name} is shorter than its tensor (truncated file?)")
        return np.memmap(self.path, dtype=np_dtype, mode="r", offset=start, shape=(numel,))

    def close(self) -> None:
        self.zip.close()
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
