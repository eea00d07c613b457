"""A Realtime transcription session's configuration: what ``session.update`` (and the older
``transcription_session.update``) may set, checked as a whole (a bad update changes nothing), how
the session object reports it, and the stream options it gives."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Tuple

from ..options import TranscribeOptions
from .realtime_audio import PCM24, AudioFormat, parse_format, parse_legacy_format
from .realtime_errors import RealtimeError

# server_vad's fields: the two FSMN-VAD takes (OpenAI's name -> VadOptions'), and those reported
# back but not used (threshold: FSMN-VAD's speech/noise decision has no such knob; the rest are
# about responses, which a transcription session has none of)
VAD_FIELDS = {"silence_duration_ms": "max_end_silence_time", "prefix_padding_ms": "lookback_time_start_point"}
VAD_IGNORED = ("threshold", "create_response", "interrupt_response", "idle_timeout_ms")


@dataclass(frozen=True)
class SessionConfig:
    format: AudioFormat = PCM24
    model: str = ""
    language: Optional[str] = None
    prompt: str = ""
    keywords: Tuple[str, ...] = ()
    turn_detection: Optional[dict] = None     # {"type": "server_vad", ...} or None (commit only)

    @classmethod
    def initial(cls, model_name: str, has_vad: bool) -> "SessionConfig":
        """OpenAI's default turn detection (server_vad) when the server has a VAD model, else none."""
        return cls(model=model_name, turn_detection=_server_vad({}) if has_vad else None)

    # -- updates ---------------------------------------------------------------------------
    def update(self, session: Any, has_vad: bool) -> "SessionConfig":
        """``session.update``'s session object over this config (RealtimeError: nothing changes)."""
        if not isinstance(session, dict):
            raise RealtimeError("invalid_value", "session must be an object", param="session")
        kind = session.get("type", "transcription")
        if kind != "transcription":
            raise RealtimeError("invalid_value", f"session.type {kind!r}: this server runs transcription sessions "
                                "only (connect with ?intent=transcription and send session.type 'transcription')",
                                param="session.type")
        _check_include(session.get("include"), "session.include")
        audio = _object(session.get("audio", {}), "session.audio")
        return self._fields(_object(audio.get("input", {}), "session.audio.input"), "session.audio.input.",
                            ("format", "transcription", "turn_detection", "noise_reduction"), parse_format, has_vad)

    def update_legacy(self, session: Any, has_vad: bool) -> "SessionConfig":
        """The older ``transcription_session.update``'s session object over this config."""
        if not isinstance(session, dict):
            raise RealtimeError("invalid_value", "session must be an object", param="session")
        _check_include(session.get("include"), "session.include")
        return self._fields(session, "session.", ("input_audio_format", "input_audio_transcription", "turn_detection",
                                                  "input_audio_noise_reduction"), parse_legacy_format, has_vad)

    def _fields(self, fields: dict, prefix: str, names: tuple, parse: Any, has_vad: bool) -> "SessionConfig":
        """The four fields both shapes have (``names``: their names there), over this config."""
        fmt, transcription, turn, noise = names
        out = self
        if fmt in fields:
            out = replace(out, format=parse(fields[fmt], prefix + fmt))
        if transcription in fields:
            out = out._transcription(fields[transcription], prefix + transcription)
        if turn in fields:
            out = replace(out, turn_detection=_turn_detection(fields[turn], has_vad, prefix + turn))
        if noise in fields:
            _check_noise_reduction(fields[noise], prefix + noise)
        return out

    def _transcription(self, t: Any, param: str) -> "SessionConfig":
        if t is None:
            return replace(self, language=None, prompt="", keywords=())
        t = _object(t, param)
        language = t.get("language", self.language)
        if language is not None and not isinstance(language, str):
            raise RealtimeError("invalid_value", f"language must be a string, got {language!r}", param=param + ".language")
        if language is not None and language.strip().lower() in ("", "auto"):
            language = None
        try:
            TranscribeOptions(language=language)
        except (ValueError, TypeError) as e:
            raise RealtimeError("invalid_value", str(e), param=param + ".language") from None
        prompt = t.get("prompt", self.prompt)
        if prompt is None:
            prompt = ""
        if not isinstance(prompt, str):
            raise RealtimeError("invalid_value", f"prompt must be a string, got {prompt!r}", param=param + ".prompt")
        keywords = t.get("keywords", list(self.keywords))
        if keywords is None:
            keywords = []
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            raise RealtimeError("invalid_value", "keywords must be a list of strings", param=param + ".keywords")
        model = t.get("model", self.model)
        if not isinstance(model, str):
            raise RealtimeError("invalid_value", f"model must be a string, got {model!r}", param=param + ".model")
        return replace(self, model=model, language=language, prompt=prompt, keywords=tuple(keywords))

    # -- what it gives ---------------------------------------------------------------------
    def stream_options(self, base: TranscribeOptions) -> TranscribeOptions:
        """The server's options with this session's language (None: the server's), hotwords (none:
        the server's) and segmentation."""
        hotwords = [w.strip() for w in self.prompt.split(",") if w.strip()] + [k.strip() for k in self.keywords
                                                                               if k.strip()]
        language = self.language if self.language is not None else base.language  # None: the server's
        td = self.turn_detection
        if td is None:
            return base.replace(language=language, hotwords=hotwords or base.hotwords, vad=None)
        from ..vad import VadOptions

        given = {VAD_FIELDS[k]: float(v) for k, v in td.items() if k in VAD_FIELDS and v is not None}
        vad_options = (base.vad_options or VadOptions()).replace(**given)
        return base.replace(language=language, hotwords=hotwords or base.hotwords, vad="fsmn",
                            vad_options=vad_options)

    def changes_stream(self, other: "SessionConfig") -> bool:
        """Whether a stream made for ``other`` decodes differently (the format alone does not)."""
        return (self.language, self.prompt, self.keywords, self.turn_detection) != \
               (other.language, other.prompt, other.keywords, other.turn_detection)

    def _transcription_object(self) -> dict:
        return {"model": self.model, "language": self.language, "prompt": self.prompt,
                **({"keywords": list(self.keywords)} if self.keywords else {})}

    def session_object(self, session_id: str) -> dict:
        """The session as session.created / session.updated report it."""
        return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
                "audio": {"input": {"format": self.format.spec(), "transcription": self._transcription_object(),
                                    "turn_detection": self.turn_detection, "noise_reduction": None}},
                "include": []}

    def legacy_session_object(self, session_id: str) -> dict:
        """The session in the older shape (transcription_session.updated)."""
        return {"id": session_id, "object": "realtime.transcription_session", "modalities": ["text"],
                "input_audio_format": self.format.legacy_name(),
                "input_audio_transcription": self._transcription_object(),
                "turn_detection": self.turn_detection, "input_audio_noise_reduction": None, "include": []}


def _object(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise RealtimeError("invalid_value", f"{param} must be an object, got {value!r}", param=param)
    return value


def _check_include(include: Any, param: str) -> None:
    if include:
        raise RealtimeError("unsupported_value", f"include {include!r} is not supported (no log-probabilities: "
                            "decoding is greedy and they are not kept)", param=param)


def _check_noise_reduction(value: Any, param: str) -> None:
    if value is not None:
        raise RealtimeError("unsupported_value", "noise reduction is not supported: send null or leave it out "
                            "(Fun-ASR-Nano takes the audio as it is)", param=param)


def _turn_detection(td: Any, has_vad: bool, param: str) -> Optional[dict]:
    if td is None:
        return None
    td = _object(td, param)
    kind = td.get("type", "server_vad")
    if kind != "server_vad":
        raise RealtimeError("unsupported_value", f"turn_detection type {kind!r} is not supported: server_vad (the "
                            "FSMN-VAD) or null (items end at input_audio_buffer.commit)", param=param + ".type")
    if not has_vad:
        raise RealtimeError("unsupported_value", "server_vad needs a VAD model and this server has none: start it "
                            "with --vad-model fsmn-vad (or a FSMN-VAD GGUF/release folder), or send "
                            "turn_detection null and commit the audio yourself", param=param)
    for name in VAD_FIELDS:
        v = td.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise RealtimeError("invalid_value", f"{name} must be a number of ms >= 0, got {v!r}",
                                param=f"{param}.{name}")
    return _server_vad(td)


def _server_vad(td: dict) -> dict:
    """server_vad as reported: the fields given (None: the VAD checkpoint's own setting)."""
    return {"type": "server_vad", **{k: td.get(k) for k in (*VAD_FIELDS, "threshold")}}
