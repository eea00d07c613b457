"""What a transcription returns: :class:`Transcription` of :class:`Segment` s (with their
:class:`Word` s when word timestamps are asked for) and what it cost, :class:`Timings`.

Plain data with no dependency on the native extension: formats, the server, the Ray integration
and user code can build and read these without loading a model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Word:
    """A timed piece of text (faster-whisper's name): seconds from the start of the audio, and the
    highest per-frame probability of its frames (the mean over the pieces of a merged word)."""
    start: float
    end: float
    text: str
    probability: float


@dataclass
class Segment:
    """One utterance: times in seconds from the start of the audio."""
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    repetition_cut: bool = False
    words: list[Word] = field(default_factory=list)  # word_timestamps: one per CTC token (see funasr_cpp.timestamps)


@dataclass
class Timings:
    """What a transcription cost: stage times in milliseconds summed over its segments, token
    counts, and the rates derived from them (set by :meth:`finish`)."""
    load_ms: float = 0.0          # Model load (once per Model; repeated in every result)
    frontend_ms: float = 0.0      # fbank + LFR
    encode_ms: float = 0.0        # encoder + adaptor
    prefill_ms: float = 0.0       # prompt + audio rows through the LLM
    decode_ms: float = 0.0        # greedy decoding
    vad_ms: float = 0.0           # speech segments (FSMN-VAD or the energy splitter)
    timestamps_ms: float = 0.0    # CTC text + alignment on the host (the CTC head's graph is in encode_ms)
    total_ms: float = 0.0         # wall time of the whole call, audio decoding included
    n_prompt_tokens: int = 0
    n_cached_tokens: int = 0      # prompt tokens kept in the KV cache from the previous segment
    n_generated_tokens: int = 0
    n_decoded_tokens: int = 0     # decode steps (the first token comes from the prefill)
    n_draft_tokens: int = 0       # speculative decoding: draft tokens verified ...
    n_accepted_tokens: int = 0    # ... and taken
    tokens_per_s: float = 0.0             # tokens out of decode steps (steps + accepted drafts) / decode time
    prefill_tokens_per_s: float = 0.0     # (n_prompt_tokens - n_cached_tokens) / prefill time
    real_time_factor: float = 0.0         # total time / audio duration

    STAGES = ("frontend_ms", "encode_ms", "prefill_ms", "decode_ms")  # class constant, not a field

    def add(self, generation: Any) -> None:
        """Add one engine result (one segment): its stage times and token counts."""
        for k in self.STAGES:
            setattr(self, k, getattr(self, k) + float(getattr(generation, k)))
        self.n_prompt_tokens += int(generation.n_prompt_tokens)
        self.n_cached_tokens += int(generation.n_cached_tokens)
        self.n_generated_tokens += len(generation.tokens)
        self.n_decoded_tokens += int(generation.n_decoded_tokens)
        self.n_draft_tokens += int(generation.n_draft_tokens)
        self.n_accepted_tokens += int(generation.n_accepted_tokens)

    def finish(self, total_ms: float, duration: float) -> "Timings":
        self.total_ms = total_ms
        decoded = self.n_decoded_tokens + self.n_accepted_tokens
        self.tokens_per_s = decoded / (self.decode_ms / 1000.0) if self.decode_ms > 0 else 0.0
        prefilled = self.n_prompt_tokens - self.n_cached_tokens
        self.prefill_tokens_per_s = prefilled / (self.prefill_ms / 1000.0) if self.prefill_ms > 0 else 0.0
        self.real_time_factor = total_ms / 1000.0 / duration if duration > 0 else 0.0
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Transcription:
    """The result of one input: the segment texts joined, the segments in time order."""
    text: str
    segments: list[Segment]
    language: Optional[str]       # the requested language (upstream name), None = automatic
    duration: float               # seconds of audio
    timings: Timings = field(default_factory=Timings)
    ctc_text: Optional[str] = None  # the CTC head's greedy transcript, when it ran (timestamps, drafts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


__all__ = ["Segment", "Timings", "Transcription", "Word"]
