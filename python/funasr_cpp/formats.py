"""A transcription as text: plain text, JSON, SubRip (SRT) and WebVTT, and a safe file writer.

>>> from funasr_cpp import formats
>>> print(formats.render(result, "srt"))
>>> formats.write(result, "out/talk.srt")         # never replaces an existing file unless overwrite=True
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Union

FORMATS = ("txt", "json", "srt", "vtt")


def timestamp(seconds: float, sep: str = ",") -> str:
    """``HH:MM:SS<sep>mmm`` (SRT uses ``,``, WebVTT ``.``), rounded to the millisecond."""
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_txt(result) -> str:
    return result.text.strip() + "\n"


def to_json(result, source: Optional[str] = None) -> str:
    """One line of JSON: ``{"file": source, ...result.to_dict()}`` (``file`` only with a source)."""
    d = ({"file": source} if source is not None else {}) | result.to_dict()
    return json.dumps(d, ensure_ascii=False) + "\n"


def cues(result, max_chars: Optional[int] = None, max_seconds: Optional[float] = None) -> list[tuple]:
    """(start, end, text) of the subtitle cues: one per segment, or, for a segment with word times
    (``Segment.words``) and a limit, its words packed into cues of at most ``max_chars``
    characters and ``max_seconds`` seconds (a single longer word gets a cue of its own)."""
    out = []
    for seg in result.segments:
        if not seg.text.strip():
            continue
        words = [w for w in getattr(seg, "words", None) or [] if w.text.strip()]
        if not words or (max_chars is None and max_seconds is None):
            out.append((seg.start, seg.end, seg.text.strip()))
            continue
        cur: list = []
        for w in words:
            text = "".join(x.text for x in cur + [w]).strip()
            too_long = (max_chars is not None and len(text) > max_chars) or \
                (max_seconds is not None and cur and w.end - cur[0].start > max_seconds)
            if cur and too_long:
                out.append((cur[0].start, cur[-1].end, "".join(x.text for x in cur).strip()))
                cur = []
            cur.append(w)
        out.append((cur[0].start, cur[-1].end, "".join(x.text for x in cur).strip()))
    return out


def to_srt(result, max_chars: Optional[int] = None, max_seconds: Optional[float] = None) -> str:
    blocks = []
    for i, (a, b, text) in enumerate(cues(result, max_chars, max_seconds), 1):
        blocks.append(f"{i}\n{timestamp(a, ',')} --> {timestamp(b, ',')}\n{text}\n")
    return "\n".join(blocks)


def to_vtt(result, max_chars: Optional[int] = None, max_seconds: Optional[float] = None) -> str:
    blocks = ["WEBVTT\n"]
    for a, b, text in cues(result, max_chars, max_seconds):
        blocks.append(f"{timestamp(a, '.')} --> {timestamp(b, '.')}\n{text}\n")
    return "\n".join(blocks)


def render(result, fmt: str, source: Optional[str] = None, *, max_chars: Optional[int] = None,
           max_seconds: Optional[float] = None) -> str:
    """``result`` in format ``fmt`` (one of :data:`FORMATS`); ``source`` names the input in JSON;
    ``max_chars`` / ``max_seconds`` cut SRT/WebVTT cues at word times (see :func:`cues`)."""
    if fmt == "txt":
        return to_txt(result)
    if fmt == "json":
        return to_json(result, source)
    if fmt == "srt":
        return to_srt(result, max_chars, max_seconds)
    if fmt == "vtt":
        return to_vtt(result, max_chars, max_seconds)
    raise ValueError(f"unknown output format {fmt!r}; valid: {', '.join(FORMATS)}")


def write_text(path: Union[str, os.PathLike], text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so that an
    interrupted write leaves no partial file. An existing ``path`` raises ``FileExistsError``
    unless ``overwrite`` (then it is replaced atomically)."""
    dst = Path(path)
    if not overwrite and dst.exists():
        raise FileExistsError(f"{dst} exists (not overwritten)")
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if overwrite:
            os.replace(tmp, dst)
        else:
            try:
                os.link(tmp, dst)  # fails if dst appeared meanwhile: never replaces a file
            except FileExistsError:
                raise FileExistsError(f"{dst} exists (not overwritten)") from None
            except OSError:  # a file system without hard links
                if dst.exists():
                    raise FileExistsError(f"{dst} exists (not overwritten)") from None
                os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def write(result, path: Union[str, os.PathLike], fmt: Optional[str] = None, *, source: Optional[str] = None,
          overwrite: bool = False) -> Path:
    """``render(result, fmt)`` written with :func:`write_text`; ``fmt`` defaults to the suffix of ``path``."""
    fmt = fmt or Path(path).suffix.lstrip(".").lower()
    return write_text(path, render(result, fmt, source), overwrite=overwrite)


__all__ = ["FORMATS", "cues", "render", "timestamp", "to_json", "to_srt", "to_txt", "to_vtt", "write", "write_text"]
