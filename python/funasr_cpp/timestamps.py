"""CTC timestamps as upstream computes them: the tokenizer, the alignment, the words.

The CTC head's tokenizer is SenseVoice's (funasr/models/sense_voice/whisper_lib/tokenizer.py,
``get_encoding`` / ``Tokenizer``): tiktoken over the release's ``multilingual.tiktoken`` ranks
(our mmproj keeps them in ``funasr.ctc.tiktoken_ranks``), followed by SenseVoice's special
tokens; encoding treats special-token strings as text, decoding drops ids from ``<|0.00|>`` on.

Upstream (funasr/models/fun_asr_nano/model.py, ``FunASRNano.inference_llm``, and
``tools/utils.py``, ``forced_align``): the CTC head's log-probabilities over 60 ms frames give
a greedy transcript (argmax, consecutive repeats merged, blanks dropped), and the Viterbi
alignment (torchaudio's ``forced_align``) of a token sequence to those frames gives, per token,
its first frame, its end frame and its score, the highest per-frame probability of its frames.
An alignment that cannot be made (no tokens, more tokens + repeats than frames, a blank or an
out-of-range id among them) gives no timestamps, as upstream's ``except Exception: pass`` does.

The CTC head itself runs in the encoder's graph (csrc/model/funasr_graph.cpp, in the same pass); the
engine hands back each frame's greedy token and, for any tokens asked for, their log-probabilities
(``_core.AsrModel.ctc_log_probs``): :func:`segment_ctc` needs only the columns of the tokens it aligns.

The Viterbi keeps torchaudio's tie rules, so equal scores pick the same path: the skip over a
blank wins only when strictly better than both other predecessors, the previous state only when
strictly better than staying, and the path ends in the final blank only when that is strictly
better than ending on the last token.
"""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from itertools import groupby
from typing import Callable, Optional, Sequence, Union

import numpy as np

from . import keys
from .types import Word  # re-exported: its home before types.py

#: one CTC frame in ms: 6 LFR-stacked 10 ms fbank frames
FRAME_MS = 6 * 10
#: one CTC frame in seconds
FRAME_SECONDS = FRAME_MS / 1000


# SenseVoice's special tokens after the ranks, in id order (upstream's tokenizer tables)
_LANGUAGES = ("en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur "
              "hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km "
              "sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw "
              "su yue minnan wuyu dialect zh/en en/zh").split()
_AUDIO_EVENTS = ("ASR", "AED", "SER", "Speech", "/Speech", "BGM", "/BGM", "Laughter", "/Laughter", "Applause",
                 "/Applause")
_EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL")
# tiktoken's pre-tokenizer pattern of the SenseVoice encoding (GPT-2's)
_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def special_tokens(num_languages: int = 8749) -> list[str]:
    """SenseVoice's special tokens in id order (``num_languages``: the config's, 8749 = all)."""
    return ["<|endoftext|>", "<|startoftranscript|>",
            *[f"<|{x}|>" for x in _LANGUAGES[:num_languages]],
            *[f"<|{x}|>" for x in _AUDIO_EVENTS], *[f"<|{x}|>" for x in _EMOTIONS],
            "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
            "<|notimestamps|>", *[f"<|SPECIAL_TOKEN_{i}|>" for i in range(1, 51)],
            *[f"<|{i * 0.02:.2f}|>" for i in range(1501)]]


class CtcTokenizer:
    """The CTC head's tokenizer, identical to upstream's ``SenseVoiceTokenizer``."""

    def __init__(self, ranks: Sequence[bytes], num_languages: int = 8749):
        import tiktoken

        mergeable = {bytes(b): i for i, b in enumerate(ranks)}
        if len(mergeable) != len(ranks):
            raise ValueError("the CTC tokenizer's ranks contain duplicate tokens")
        specials = {t: len(mergeable) + i for i, t in enumerate(special_tokens(num_languages))}
        self.timestamp_begin = specials["<|0.00|>"]
        self.n_vocab = len(mergeable) + len(specials)
        self._enc = tiktoken.Encoding(name="funasr-ctc", pat_str=_PATTERN, mergeable_ranks=mergeable,
                                      special_tokens=specials, explicit_n_vocab=self.n_vocab)

    @classmethod
    def from_mmproj(cls, path: Union[str, os.PathLike], num_languages: int = 8749) -> "CtcTokenizer":
        """From our mmproj's ``funasr.ctc.tiktoken_ranks`` (ValueError naming the file without them)."""
        from gguf import GGUFReader

        field = GGUFReader(os.fspath(path)).get_field(keys.KEY_CTC_TIKTOKEN_RANKS)
        if field is None:
            raise ValueError(f"{os.fspath(path)} has no CTC tokenizer ({keys.KEY_CTC_TIKTOKEN_RANKS}): "
                             "convert a release that has multilingual.tiktoken")
        return cls([base64.b64decode(bytes(field.parts[i])) for i in field.data], num_languages)

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike], num_languages: int = 8749) -> "CtcTokenizer":
        """From a ``multilingual.tiktoken`` file ("base64 rank" per line)."""
        ranks: dict[int, bytes] = {}
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.strip():
                    token, rank = line.split()
                    ranks[int(rank)] = base64.b64decode(token)
        if sorted(ranks) != list(range(len(ranks))):
            raise ValueError(f"{os.fspath(path)}: the ranks are not 0..{len(ranks) - 1}")
        return cls([ranks[i] for i in range(len(ranks))], num_languages)

    def encode(self, text: str) -> list[int]:
        """Text -> ids; special-token strings in the text are encoded as text (upstream's choice)."""
        return self._enc.encode(text, allowed_special=set(), disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; timestamp tokens are dropped, a cut UTF-8 sequence becomes U+FFFD."""
        return self._enc.decode([int(t) for t in ids if t < self.timestamp_begin])


@dataclass(frozen=True)
class TokenSpan:
    """One aligned token: frames [start, end) and its score (max per-frame probability)."""
    token: int
    start: int
    end: int
    score: float


def ctc_greedy(log_probs: np.ndarray, blank: int) -> list[int]:
    """The greedy CTC transcript of log_probs [T, C]: argmax per frame (first maximum), runs of
    the same id merged, blanks dropped."""
    best = np.asarray(log_probs).argmax(axis=-1)
    return [int(t) for t, _ in groupby(best.tolist()) if t != blank]


def viterbi(log_probs: np.ndarray, targets: Sequence[int], blank: int) -> np.ndarray | None:
    """The best CTC path of targets through log_probs [T, C] (float32, torchaudio's tie rules):
    the label of every frame, or None when there is no path."""
    lp = np.ascontiguousarray(log_probs, dtype=np.float32)
    T, C = lp.shape
    y = np.asarray(targets, dtype=np.int64)
    L = y.size
    if L == 0 or (y == blank).any() or (y < 0).any() or (y >= C).any():
        return None
    repeats = int((y[1:] == y[:-1]).sum())
    if T < L + repeats:
        return None
    S = 2 * L + 1
    labels = np.full(S, blank, np.int64)
    labels[1::2] = y
    # a token state may come from two states back (skipping the blank) unless it repeats the token before it
    skip = np.zeros(S, bool)
    skip[3::2] = y[1:] != y[:-1]
    neg = np.float32(-np.inf)
    alpha = np.full(S, neg, np.float32)
    alpha[:2] = lp[0, labels[:2]]
    if T - (L + repeats) == 0:
        alpha[0] = neg  # a leading blank leaves no room for the tokens and their separators
    back = np.zeros((T, S), np.int8)
    for t in range(1, T):
        stay = alpha
        step = np.concatenate(([neg], alpha[:-1]))
        jump = np.where(skip, np.concatenate(([neg, neg], alpha[:-2])), neg)
        choice = np.where((jump > step) & (jump > stay), 2, np.where(step > stay, 1, 0)).astype(np.int8)
        best = np.where(choice == 2, jump, np.where(choice == 1, step, stay))
        alpha = (best + lp[t, labels]).astype(np.float32)
        back[t] = choice
    s = S - 1 if alpha[S - 1] > alpha[S - 2] else S - 2
    path = np.empty(T, np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = labels[s]
        s -= int(back[t, s])  # a Python int: s passes int8 range
    return path


def align(log_probs: np.ndarray, targets: Sequence[int], blank: int) -> list[TokenSpan]:
    """Upstream's ``forced_align``: the tokens of the best path with their frames and scores
    (rounded to 3 digits), or [] when no alignment can be made."""
    lp = np.asarray(log_probs, dtype=np.float32)
    path = viterbi(lp, targets, blank)
    if path is None:
        return []
    prob = np.exp(lp[np.arange(lp.shape[0]), path])
    spans = []
    t = 0
    for token, run in groupby(path.tolist()):
        n = len(list(run))
        if token != blank:
            spans.append(TokenSpan(int(token), t, t + n, round(float(prob[t:t + n].max()), 3)))
        t += n
    return spans


@dataclass(frozen=True)
class CtcResult:
    """What upstream's ``inference_llm`` adds to a result from the CTC head (one segment):
    ``ctc_text``, and in CTC frames ``ctc_spans`` (its ``ctc_timestamps``: the CTC text aligned)
    and ``spans`` (its ``timestamps``: the LLM's text aligned)."""
    ctc_text: str
    ctc_spans: list[TokenSpan]
    spans: list[TokenSpan]


LogProbColumns = Callable[[list[int]], np.ndarray]  # ids -> float32 [frames, len(ids)]


def align_columns(log_probs: LogProbColumns, targets: Sequence[int], blank: int, n_vocab: int) -> list[TokenSpan]:
    """:func:`align` of targets given only a way to fetch columns of the log-prob matrix (the
    targets' and the blank's, the only ones a CTC path visits); [] where upstream's gives []."""
    y = [int(t) for t in targets]
    if not y or any(t < 0 or t >= n_vocab or t == blank for t in y):
        return []
    cols = sorted(set(y) | {blank})
    index = {t: i for i, t in enumerate(cols)}
    spans = align(log_probs(cols), [index[t] for t in y], index[blank])
    return [TokenSpan(cols[s.token], s.start, s.end, s.score) for s in spans]


def segment_ctc(text: str, best: Sequence[int], log_probs: Optional[LogProbColumns], tokenizer: CtcTokenizer,
                blank: int, n_vocab: int) -> CtcResult:
    """Upstream's CTC results for one segment: the greedy text of the per-frame best tokens
    (``<|nospeech|>`` removed), and, with ``log_probs``, the alignments of that text and of the
    LLM's ``text`` (both re-encoded with the CTC tokenizer); without, no spans."""
    ctc_text = tokenizer.decode([t for t, _ in groupby(int(b) for b in best) if t != blank])
    ctc_text = ctc_text.replace("<|nospeech|>", "")
    if log_probs is None:
        return CtcResult(ctc_text, [], [])
    return CtcResult(ctc_text, align_columns(log_probs, tokenizer.encode(ctc_text), blank, n_vocab),
                     align_columns(log_probs, tokenizer.encode(text), blank, n_vocab))


def words_from_spans(spans: Sequence[TokenSpan], tokenizer: CtcTokenizer, offset: float = 0.0) -> list[Word]:
    """One Word per aligned CTC token, as upstream reports its timestamps (the token decoded alone,
    frame x 6 x 10 / 1000 s), moved by ``offset`` seconds (the segment's start)."""
    return [Word(offset + frame_seconds(s.start), offset + frame_seconds(s.end), tokenizer.decode([s.token]), s.score)
            for s in spans]


def frame_seconds(frame: int) -> float:
    """The time of a CTC frame as upstream computes it, frame * 6 * 10 / 1000: the integer product
    first, so the float is the same as upstream's (frame * FRAME_SECONDS can differ in the last bit)."""
    return frame * FRAME_MS / 1000


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF
            or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F)


def merge_words(words: Sequence[Word]) -> list[Word]:
    """Latin-script pieces joined into whitespace-delimited words for display: a piece that starts
    with a space, or follows or is a CJK character, starts a new word; CJK characters stay one word
    each. Times span the pieces, the probability is their mean; text keeps its leading space."""
    out: list[Word] = []
    n = 0
    for w in words:
        if not w.text:
            continue
        starts = (not out or w.text[0].isspace() or _is_cjk(w.text[0]) or _is_cjk(out[-1].text[-1]))
        if starts:
            out.append(Word(w.start, w.end, w.text, w.probability))
            n = 1
        else:
            last = out[-1]
            n += 1
            out[-1] = Word(last.start, w.end, last.text + w.text, last.probability + (w.probability - last.probability) / n)
    return out


__all__ = ["FRAME_MS", "FRAME_SECONDS", "CtcResult", "CtcTokenizer", "TokenSpan", "Word", "align", "align_columns",
           "ctc_greedy", "frame_seconds", "merge_words", "segment_ctc", "special_tokens", "viterbi",
           "words_from_spans"]
