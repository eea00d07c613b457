"""The runaway guard's repetition cut: random or confused decoding can fall into a loop.

When a segment used up its whole token budget (no end-of-turn token) and its last tokens are a
loop (an n-gram of 1-8 tokens repeated at least 8 times at the end), the tokens are cut after the
loop's first occurrence and the segment is flagged ``repetition_cut=True``. A segment that ended
by itself is never cut. The budget itself is ``TranscribeOptions.token_budget`` (20 tokens + 15 per
second of audio by default: fast Mandarin is ~5-6 characters/s, English ~3-4 words/s, so real
speech stays far below it).
"""
from __future__ import annotations

from typing import Optional, Sequence

LOOP_MAX_NGRAM = 8
LOOP_MIN_REPEATS = 8


def find_loop(tokens: Sequence[int], max_ngram: int = LOOP_MAX_NGRAM,
              min_repeats: int = LOOP_MIN_REPEATS) -> Optional[int]:
    """If ``tokens`` ends in an n-gram (n <= max_ngram) repeated >= min_repeats times (a trailing
    partial repetition allowed), return the length to keep: up to the end of the loop's first
    occurrence. None when there is no such loop. The earliest-starting loop wins."""
    best: Optional[tuple[int, int]] = None  # (loop start, n)
    t = list(tokens)
    size = len(t)
    for n in range(1, max_ngram + 1):
        if size < n * min_repeats:
            break
        run = 0  # positions i (from the end) with t[i] == t[i - n]
        i = size - 1
        while i - n >= 0 and t[i] == t[i - n]:
            run += 1
            i -= 1
        periodic = run + n          # length of the periodic tail
        if periodic // n >= min_repeats:
            start = size - periodic
            if best is None or start < best[0]:
                best = (start, n)
    if best is None:
        return None
    return best[0] + best[1]


def cut_repetition(tokens: list[int], budget: int) -> tuple[list[int], bool]:
    """(tokens, False), or the tokens cut after a trailing loop's first occurrence and True when
    they used up the whole budget in one."""
    if len(tokens) >= budget:
        keep = find_loop(tokens)
        if keep is not None:
            return tokens[:keep], True
    return tokens, False


__all__ = ["LOOP_MAX_NGRAM", "LOOP_MIN_REPEATS", "cut_repetition", "find_loop"]
