"""Draft sources for speculative decoding.

A draft is what a segment's answer is expected to be, e.g. the transcript of a cheaper recognizer
(Fun-ASR's own CTC head). The engine verifies up to ``TranscribeOptions.draft_max`` draft
tokens in one decode step and keeps the longest prefix that greedy decoding would have produced,
plus the model's own next token; the output is exactly plain greedy decoding whatever the draft
is, only the number of decode steps changes. After a difference the engine finds its place in
the draft again from the last tokens it produced.

A :class:`DraftSource` is any callable ``source(segment) -> text | token ids | None`` taking a
:class:`DraftSegment`; text is tokenized with the LLM's tokenizer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

Draft = Union[str, Sequence[int], None]


@dataclass(frozen=True)
class DraftSegment:
    """The segment a draft is asked for: its index in the call, times in seconds from the start
    of the audio, and its 16 kHz samples."""
    index: int
    start: float
    end: float
    samples: np.ndarray


DraftSource = Callable[[DraftSegment], Draft]


class FixedDrafts:
    """Drafts known in advance, one per segment in order (text or token ids); segments past the
    end get none. Benchmarks use it with the model's own output (a perfect draft) or noise."""

    def __init__(self, drafts: Sequence[Draft]):
        self.drafts = list(drafts)

    def __call__(self, segment: DraftSegment) -> Draft:
        return self.drafts[segment.index] if segment.index < len(self.drafts) else None


def draft_tokens(asr: Any, source: Optional[DraftSource], index: int, start: float, end: float,
                 samples: np.ndarray) -> Optional[list[int]]:
    """The draft of one segment as LLM token ids (None: no draft)."""
    if source is None:
        return None
    draft = source(DraftSegment(index, start, end, samples))
    if draft is None:
        return None
    if isinstance(draft, str):
        return asr.tokenize(draft) if draft else None
    if isinstance(draft, (bytes, bytearray)) or not isinstance(draft, (Sequence, np.ndarray)):
        raise TypeError(f"a draft source must return text, a sequence of token ids or None, got {type(draft).__name__}")
    return [int(t) for t in draft]


__all__ = ["DraftSegment", "DraftSource", "FixedDrafts", "draft_tokens"]
