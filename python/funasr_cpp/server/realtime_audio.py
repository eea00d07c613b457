"""The input audio formats of a Realtime transcription session (OpenAI's ``audio/pcm`` at 24 kHz,
``audio/pcmu``, ``audio/pcma``; 16 kHz PCM as our extension) and the decoding of an ``append``'s
base64 payload to int16 samples at the format's rate. The stream resamples them to 16 kHz."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from .realtime_errors import RealtimeError

PCM_RATES = (24000, 16000)     # OpenAI's one rate, and the model's (no resampling)
G711_RATE = 8000
LEGACY_NAMES = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}


@dataclass(frozen=True)
class AudioFormat:
    type: str      # audio/pcm | audio/pcmu | audio/pcma
    rate: int

    @property
    def sample_bytes(self) -> int:
        return 2 if self.type == "audio/pcm" else 1

    def spec(self) -> dict:
        """The format as the session object reports it."""
        return {"type": self.type, "rate": self.rate} if self.type == "audio/pcm" else {"type": self.type}

    def legacy_name(self) -> str:
        return {v: k for k, v in LEGACY_NAMES.items()}[self.type]

    def decode(self, payload: Any) -> np.ndarray:
        """int16 samples of a base64 ``append`` payload, or RealtimeError naming what is wrong."""
        if not isinstance(payload, str):
            raise RealtimeError("invalid_audio", f"audio must be a base64 string, got {type(payload).__name__}",
                                param="audio")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise RealtimeError("invalid_audio", f"audio is not valid base64: {e}", param="audio") from None
        if len(data) % self.sample_bytes:
            raise RealtimeError("invalid_audio", f"{self.type} is 16-bit samples: {len(data)} bytes is not a whole "
                                "number of them (the append was dropped)", param="audio")
        if self.type == "audio/pcm":
            return np.frombuffer(data, "<i2").astype(np.int16)
        table = _ULAW if self.type == "audio/pcmu" else _ALAW
        return table[np.frombuffer(data, np.uint8)]


PCM24 = AudioFormat("audio/pcm", 24000)


def parse_format(spec: Any, param: str) -> AudioFormat:
    """The session.update shape: ``{"type": "audio/pcm", "rate": 24000}``, ``{"type": "audio/pcmu"}``, ..."""
    if not isinstance(spec, dict):
        raise RealtimeError("invalid_value", f"format must be an object like {{'type': 'audio/pcm', 'rate': 24000}}, "
                            f"got {spec!r}", param=param)
    kind = spec.get("type", "audio/pcm")
    if kind == "audio/pcm":
        rate = spec.get("rate", 24000)
        if rate not in PCM_RATES or isinstance(rate, bool):
            raise RealtimeError("unsupported_format", f"audio/pcm at {rate!r} Hz is not supported: rate 24000 "
                                "(OpenAI's) or 16000", param=param + ".rate")
        return AudioFormat(kind, int(rate))
    if kind in ("audio/pcmu", "audio/pcma"):
        return AudioFormat(kind, G711_RATE)
    raise RealtimeError("unsupported_format", f"format type {kind!r} is not supported: audio/pcm (16-bit, 24000 or "
                        "16000 Hz), audio/pcmu or audio/pcma", param=param + ".type")


def parse_legacy_format(name: Any, param: str) -> AudioFormat:
    """The older transcription_session.update shape: ``"pcm16"`` (24 kHz), ``"g711_ulaw"``, ``"g711_alaw"``."""
    if name not in LEGACY_NAMES:
        raise RealtimeError("unsupported_format", f"input_audio_format must be pcm16, g711_ulaw or g711_alaw, "
                            f"got {name!r}", param=param)
    kind = LEGACY_NAMES[name]
    return AudioFormat(kind, 24000 if kind == "audio/pcm" else G711_RATE)


def _ulaw_table() -> np.ndarray:
    """G.711 mu-law: the complemented byte holds sign, a 3-bit exponent and a 4-bit mantissa over a bias of 132."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    """G.711 A-law: the byte with its even bits inverted holds sign (1 = positive), exponent and mantissa."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


_ULAW = _ulaw_table()
_ALAW = _alaw_table()
