"""Audio input for Fun-ASR-Nano: decode, downmix, resample to 16 kHz, split long audio.

The model takes mono float32 samples in [-1, 1] at 16 kHz (upstream's WavFrontend scales them by
32768 itself: funasr/frontends/wav_frontend.py). ``load_audio`` turns a file, encoded bytes, a
binary file object or a numpy array into exactly that (cutting it into speech segments is
funasr_cpp.vad's job).

Decoding is done by ``soundfile`` (libsndfile: WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, ...);
resampling by ``soxr`` (high quality), else ``scipy.signal.resample_poly`` (imported only when
needed).

Memory: a file is decoded in blocks of ``_BLOCK_FRAMES`` frames straight into one float32 mono
buffer at the file's sample rate (multi-channel blocks are averaged as they come), then resampled
once. Peak memory is therefore about the mono signal at the source rate plus the 16 kHz result
(4 bytes per sample each) plus one block, never the decoded multi-channel signal in full. 16 kHz
mono input needs no resampling and costs only the one buffer (1 h = 230 MB).
"""
from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, Optional, Tuple, Union

import numpy as np

SAMPLE_RATE = 16000

AudioSource = Union[str, "os.PathLike[str]", bytes, bytearray, BinaryIO, np.ndarray]

# Frames decoded per block (1 M frames: 8 MB for float32 stereo).
_BLOCK_FRAMES = 1 << 20
# Arrays: [channels, samples] is recognised when the first axis has at most this many entries.
_MAX_CHANNELS_FIRST = 8



# --------------------------------------------------------------------------------------------
# loading

def _is_pathlike(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


def _source_label(source: Any) -> str:
    if _is_pathlike(source):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    name = getattr(source, "name", None)
    if isinstance(name, (str, bytes)) and name:
        return name if isinstance(name, str) else name.decode(errors="replace")
    return f"<{type(source).__name__}>"


def _check_path(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"audio file not found: {path}") from None
    if os.path.isdir(path):
        raise IsADirectoryError(f"audio path is a directory, not a file: {path}")
    if st.st_size == 0:
        raise ValueError(f"cannot read audio from {path}: empty file")


def _open_soundfile(source: Any, label: str):
    """A soundfile.SoundFile of a path, encoded bytes or a binary file object; a WAV whose
    header declares more data than it holds is an error (see _check_wav_length)."""
    import soundfile as sf

    source = _seekable(source, label)
    _check_wav_length(source, label)
    try:
        return sf.SoundFile(source)
    except (RuntimeError, EOFError, ValueError, TypeError) as e:  # LibsndfileError is a RuntimeError
        raise ValueError(f"cannot read audio from {label}: {_reason(e)}") from None


def _seekable(source: Any, label: str) -> Any:
    """A path, or a seekable binary file object (libsndfile needs to seek): bytes and pipes are
    read into memory."""
    if _is_pathlike(source):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError(f"cannot read audio from {label}: empty input")
        return io.BytesIO(bytes(source))
    if isinstance(source, io.TextIOBase):
        raise TypeError(f"audio file object must be opened in binary mode: {label}")
    if not hasattr(source, "read"):
        raise TypeError("audio source must be a path, bytes, a binary file object or a numpy "
                        f"array, not {type(source).__name__}")
    seekable = getattr(source, "seekable", None)
    if callable(seekable) and seekable():
        return source
    data = source.read()  # a pipe or socket
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"audio file object must be opened in binary mode: {label}")
    if not data:
        raise ValueError(f"cannot read audio from {label}: empty input")
    return io.BytesIO(data)


# --------------------------------------------------------------------------------------------
# WAV headers: libsndfile reads a WAV whose data chunk runs past the end of the file as the part
# that is there, without a word; the header says how much there should be.

# 32-bit data sizes from here up are the placeholders of writers that could not seek back to
# fill in the length (sox writes 0x7ffff000-ish, ffmpeg 0xffffffff to a pipe), not lengths.
_RIFF_PLACEHOLDER = 0x7FFFF000
_W64_RIFF = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
_PCM_TAGS = (1, 3, 6, 7, 0xFFFE)  # PCM, IEEE float, A-law, u-law, extensible: block_align = one frame
_MAX_CHUNKS = 64                   # a header walk gives up after this many chunks before the data


@dataclass(frozen=True)
class _WavData:
    """The data chunk of a WAV-family file: the bytes its header declares and the bytes there."""
    declared: int
    present: int
    frame_bytes: int   # bytes per sample frame; 0 for compressed data (ADPCM, GSM, ...)
    byte_rate: int

    def describe(self, n: int) -> str:
        amount = f"{n // self.frame_bytes} samples" if self.frame_bytes else f"{n} bytes"
        return amount + (f" ({n / self.byte_rate:.2f} s)" if self.byte_rate else "")


def _check_wav_length(source: Any, label: str) -> None:
    """ValueError naming both lengths when a RIFF / RIFX / RF64 / W64 file is cut short."""
    if _is_pathlike(source):
        with open(source, "rb") as f:
            data = _wav_data(f)
    else:
        pos = source.tell()
        try:
            data = _wav_data(source)
        finally:
            source.seek(pos)
    if data is not None and data.present < data.declared:
        raise ValueError(f"cannot read audio from {label}: truncated: its header declares "
                         f"{data.describe(data.declared)} of audio, the file holds "
                         f"{data.describe(data.present)}")


def _wav_data(f: BinaryIO) -> Optional[_WavData]:
    """The data chunk of the WAV-family file at f's position; None for other formats, a header
    that does not get as far as the data (libsndfile says what is wrong with it) and a
    placeholder length."""
    start = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(start)
    head = f.read(40)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        order = ">" if head[:4] == b"RIFX" else "<"
        chunks = _chunks(f, start + 12, end, order, wide=False)
    elif head[:16] == _W64_RIFF:
        order, chunks = "<", _chunks(f, start + 40, end, "<", wide=True)
    else:
        return None
    fmt, ds64_size = None, None
    for cid, size, body in chunks:
        if cid == b"fmt " and size >= 16:
            fmt = _read_struct(f, order + "HHIIH")
        elif cid == b"ds64" and size >= 16:  # RF64: the 64-bit sizes
            ds64_size = (_read_struct(f, "<8xQ") or (None,))[0]
        elif cid == b"data":
            if size == 0xFFFFFFFF and ds64_size is not None:
                size = ds64_size
            elif size >= _RIFF_PLACEHOLDER and head[:4] in (b"RIFF", b"RIFX"):
                return None
            if fmt is None:
                return None
            tag, _, _, byte_rate, block_align = fmt
            return _WavData(size, end - body, block_align if tag in _PCM_TAGS else 0, byte_rate)
    return None


def _read_struct(f: BinaryIO, layout: str) -> Optional[tuple]:
    raw = f.read(struct.calcsize(layout))
    return struct.unpack(layout, raw) if len(raw) == struct.calcsize(layout) else None


def _chunks(f: BinaryIO, pos: int, end: int, order: str, wide: bool) -> Iterator[Tuple[bytes, int, int]]:
    """(id, body size, body offset) of each chunk from pos, f positioned at the body. RIFF: 4-byte
    id and size, bodies padded to even sizes; W64: 16-byte GUID (its first 4 bytes name it) and a
    size counting the 24-byte header, chunks aligned to 8 bytes."""
    header = 24 if wide else 8
    for _ in range(_MAX_CHUNKS):
        if pos + header > end:
            return
        f.seek(pos)
        h = f.read(header)
        if wide:
            size = struct.unpack("<Q", h[16:24])[0] - header
            step = header + size + (-(header + size) % 8)
        else:
            size = struct.unpack(order + "I", h[4:8])[0]
            step = header + size + (size & 1)
        if size < 0:
            return
        yield h[:4], size, pos + header
        pos += step


def _reason(e: BaseException) -> str:
    """libsndfile's own message ("Format not recognised.") without soundfile's "Error opening
    <path>: " prefix, which repeats the path."""
    text = getattr(e, "error_string", None)
    if not isinstance(text, str) or not text.strip():
        text = str(e)
    return text.strip() or type(e).__name__


def _decode_mono(source: Any, label: str) -> Tuple[np.ndarray, int]:
    """Decode to float32 mono at the file's own rate, block by block (see module docstring)."""
    with _open_soundfile(source, label) as f:
        rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
        if rate <= 0 or channels <= 0:
            raise ValueError(f"cannot read audio from {label}: bad header "
                             f"(sample rate {rate}, {channels} channels)")
        # f.frames is exact for seekable inputs; grow the buffer if a decoder yields more.
        out = np.empty(max(0, min(frames, 1 << 40)), dtype=np.float32)
        pos = 0
        try:
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                k = len(block)
                if k == 0:
                    break
                if pos + k > len(out):
                    grown = np.empty(max(pos + k, 2 * len(out)), dtype=np.float32)
                    grown[:pos] = out[:pos]
                    out = grown
                if channels == 1:
                    out[pos:pos + k] = block[:, 0]
                else:
                    np.mean(block, axis=1, dtype=np.float32, out=out[pos:pos + k])
                pos += k
        except (RuntimeError, EOFError, ValueError) as e:
            raise ValueError(f"cannot read audio from {label}: {_reason(e)}") from None
    if pos == 0:  # a header and nothing else: an upload or a recording that went wrong
        raise ValueError(f"cannot read audio from {label}: no audio samples")
    return out[:pos], rate


def _array_to_mono(audio: np.ndarray) -> np.ndarray:
    """float32 mono from an array: integers scaled to [-1, 1), channels averaged.

    Layout rule for 2-D arrays: ``[samples, channels]`` (soundfile's layout), except that an
    array whose first axis has at most 8 entries and whose second axis is longer is read as
    ``[channels, samples]`` (torchaudio's layout). More channels than samples is an error.
    An array with no elements is empty audio.
    """
    a = np.asarray(audio)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer)
                                   or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"audio array must hold integers or floats, not {a.dtype}")
    if a.ndim in (1, 2) and a.size == 0:
        return np.zeros(0, dtype=np.float32)
    if a.ndim == 2:
        if 1 <= a.shape[0] <= _MAX_CHANNELS_FIRST and a.shape[1] > a.shape[0]:
            a = a.T  # [channels, samples]
        if a.shape[1] > a.shape[0]:
            raise ValueError(f"ambiguous audio array shape {tuple(audio.shape)}: expected "
                             "[samples, channels] or [channels<=8, samples]")
    elif a.ndim != 1:
        raise ValueError(f"audio array must be 1-D or 2-D, not shape {tuple(a.shape)}")

    if np.issubdtype(a.dtype, np.integer):
        bits = a.dtype.itemsize * 8
        half = float(2 ** (bits - 1))
        x = a.astype(np.float64 if bits > 16 else np.float32)
        if np.issubdtype(a.dtype, np.unsignedinteger):
            x -= half  # uint8 (8-bit WAV) and friends are centred on 2**(bits-1)
        x *= 1.0 / half
        x = x.astype(np.float32, copy=False)
    else:
        x = a.astype(np.float32, copy=False)

    if x.ndim == 2:
        x = x[:, 0].copy() if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def check_finite(x: np.ndarray, label: str = "array") -> None:
    """ValueError naming how many samples are NaN / Inf, for every way audio comes in (the one
    check: the engine takes the samples as they are)."""
    # A float32 sum of finite samples in a sane range is finite: count only when it is not.
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(x, dtype=np.float64)
    if np.isfinite(total):
        return
    n_nan = int(np.count_nonzero(np.isnan(x)))
    n_inf = int(np.count_nonzero(np.isinf(x)))
    if n_nan or n_inf:
        raise ValueError(f"audio from {label} has non-finite samples: {n_nan} NaN and "
                         f"{n_inf} Inf out of {len(x)}")


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or len(x) == 0:
        return x
    try:
        import soxr
    except ImportError:
        soxr = None
    if soxr is not None:
        y = soxr.resample(x, rate, target, quality="HQ")
    else:
        from scipy.signal import resample_poly

        g = math.gcd(int(rate), int(target))
        y = resample_poly(x, target // g, rate // g)
    return np.ascontiguousarray(y, dtype=np.float32)


def load_audio(source: AudioSource, sample_rate: Optional[int] = None) -> np.ndarray:
    """Load audio as float32 mono at 16 kHz (``SAMPLE_RATE``), the model's input.

    ``source`` is one of:

    - a path (``str`` / ``os.PathLike``) of anything libsndfile decodes: WAV (PCM, float,
      u-law, ...), FLAC, OGG Vorbis/Opus, MP3, AIFF, W64, ...;
    - the encoded file in ``bytes`` / ``bytearray``, or a binary file object (read from its
      current position; one that cannot seek, like a pipe, is read into memory first);
    - a numpy array of samples, with ``sample_rate`` (required, ``ValueError`` without it).
      1-D is mono; 2-D is ``[samples, channels]``, or ``[channels, samples]`` when the first
      axis has at most 8 entries and the second is longer. Integer arrays are scaled to
      [-1, 1): int16 / 32768, int32 / 2**31, uint8 centred on 128 (generally signed ints by
      2**(bits-1), unsigned ints centred first). Float arrays are taken as they are.

    For encoded input the sample rate comes from the file; a ``sample_rate`` given as well must
    match it. Channels are averaged; any rate is resampled to 16 kHz (soxr "HQ", else scipy's
    ``resample_poly``). Float data is not clipped (a float WAV may exceed ±1).

    Errors: ``FileNotFoundError`` (missing file), ``IsADirectoryError``, ``ValueError`` with
    "cannot read audio from PATH: <reason>" for an empty or non-audio file, a file with no
    audio samples ("no audio samples") and a WAV (RIFF, RIFX, RF64, W64) whose header declares
    more data than the file holds ("truncated", with both lengths), and ``ValueError`` naming
    how many samples are NaN / Inf. An array with no elements gives an empty array.
    """
    if sample_rate is not None:
        if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, not {sample_rate!r}")
        sample_rate = int(sample_rate)

    if isinstance(source, (np.ndarray, list, tuple)):
        if sample_rate is None:
            raise ValueError("sample_rate is required when audio is given as an array")
        label = "array"
        x = _array_to_mono(np.asarray(source))
        rate = sample_rate
    else:
        if _is_pathlike(source):
            path = os.fspath(source)
            _check_path(path)
            source = path
        label = _source_label(source)
        x, rate = _decode_mono(source, label)
        if sample_rate is not None and sample_rate != rate:
            raise ValueError(f"{label} has sample rate {rate} Hz but sample_rate={sample_rate} "
                             "was given")
    check_finite(x, label)
    return _resample(x, rate, SAMPLE_RATE)


def audio_duration(source: AudioSource, sample_rate: Optional[int] = None) -> float:
    """Duration in seconds without decoding (soundfile header; arrays need ``sample_rate``)."""
    if isinstance(source, (np.ndarray, list, tuple)):
        if sample_rate is None:
            raise ValueError("sample_rate is required when audio is given as an array")
        shape = np.shape(source)
        channels_first = (len(shape) == 2 and 1 <= shape[0] <= _MAX_CHANNELS_FIRST
                          and shape[1] > shape[0])
        n = 0 if not shape else shape[1] if channels_first else shape[0]
        return n / float(sample_rate)
    if _is_pathlike(source):
        path = os.fspath(source)
        _check_path(path)
        source = path
    label = _source_label(source)
    pos = None
    if not _is_pathlike(source) and hasattr(source, "tell"):
        try:
            pos = source.tell()
        except (OSError, ValueError):
            pos = None
    with _open_soundfile(source, label) as f:
        duration = f.frames / float(f.samplerate)
    if pos is not None:
        source.seek(pos)
    return duration


__all__ = ["SAMPLE_RATE", "audio_duration", "check_finite", "load_audio"]
