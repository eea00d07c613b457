"""How to load a model (:class:`LoadOptions`) and how to transcribe (:class:`TranscribeOptions`).

Every default lives here once: ``Model``, ``Model.transcribe``, the module-level ``transcribe()``,
the CLI and the server build these classes, and the native binding takes the values they hold
(it has no defaults of its own).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional

from .prompt import check_hotwords, normalize_language
from .types import Timings  # re-exported: its home before types.py

#: Runaway guard, token budget: BASE_TOKENS + max_tokens_per_second * seconds per segment.
BASE_TOKENS = 20
TOKENS_PER_SECOND = 15.0
#: ``TranscribeOptions.vad`` values, and their names on the command line and in the server's form
#: (``"none"`` for None).
VAD_MODES = ("auto", "fsmn", "energy", None)
VAD_NAMES = tuple("none" if m is None else m for m in VAD_MODES)


def vad_mode(name: str) -> Optional[str]:
    """The ``TranscribeOptions.vad`` value of a name in :data:`VAD_NAMES` (``"none"`` -> None);
    ValueError for any other name."""
    if name not in VAD_NAMES:
        raise ValueError(f"vad must be one of {', '.join(VAD_NAMES)}, got {name!r}")
    return None if name == "none" else name


def _check_names(cls: type, changes: dict, what: str) -> dict:
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(changes) - set(valid))
    if unknown:
        raise TypeError(f"unknown {what} option(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    return changes


@dataclass(frozen=True)
class LoadOptions:
    """How the native engine is loaded (``Model(llm, mmproj, options, **overrides)``; the values are
    checked by the engine when it loads).

    - ``n_threads``: CPU threads; None (or 0) = all cores.
    - ``device``: where the model runs, case-insensitive: ``"auto"`` (the first GPU device, else the
      CPU), ``"cpu"``, or a device of this build by its ggml name lowercased (``"vulkan0"``,
      ``"cuda0"``, ``"mtl0"`` or ``"metal0"``; ``funasr-cpp info`` lists them). The LLM (its layers
      and KV cache) and the encoder/adaptor/CTC graph run there; the FSMN-VAD stays on the CPU. A
      name that is no device here is a ValueError, when the model loads, listing the devices there are.
    - ``n_gpu_layers``: LLM layers on that device (-1 = all); none when it is the CPU.
    - ``use_gpu``: the encoder/adaptor/CTC graph on that device too (False: on the CPU).
    - ``n_ctx``: the LLM's KV cache cells; 0 (default) sizes it to the segments that run
      together, in multiples of 1024 grown when nothing runs; a fixed value caps it.
    - ``flash_attn``: ``"auto"``, ``"on"`` or ``"off"``.
    - ``n_batch``: llama.cpp's logical batch (prompt rows per decode call).
    - ``kv_type``: KV cache type (``"f16"``, ``"f32"`` for bit-level parity work, ``"bf16"``, ``"q8_0"``).
    - ``n_parallel``: segments decoded together in one batch.
    """
    n_threads: Optional[int] = None
    device: str = "auto"
    n_gpu_layers: int = -1
    use_gpu: bool = True
    n_ctx: int = 0
    flash_attn: str = "auto"
    n_batch: int = 512
    kv_type: str = "f16"
    n_parallel: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a str ('auto', 'cpu', 'vulkan0', ...), got {type(self.device).__name__}")
        if not self.device.strip():
            raise ValueError("device must be a device name ('auto', 'cpu', 'vulkan0', ...), got ''")
        object.__setattr__(self, "device", self.device.strip().lower())  # frozen: normalized once, here

    @classmethod
    def build(cls, options: Optional["LoadOptions"] = None, **overrides: Any) -> "LoadOptions":
        """``options`` (default: all defaults) with ``overrides`` applied (unknown names: TypeError)."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be a LoadOptions, got {type(options).__name__}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **_check_names(cls, overrides, "loading")) if overrides else base

    def engine_kwargs(self) -> dict:
        """The keywords of ``_core.AsrModel`` (every value given: the binding has no defaults)."""
        kw = dataclasses.asdict(self)
        kw["n_threads"] = 0 if self.n_threads is None else int(self.n_threads)
        return kw


@dataclass(frozen=True)
class TranscribeOptions:
    """Options of one transcription; checked when made (``ValueError`` / ``TypeError`` naming the
    option). ``options.replace(language="en")`` gives a checked copy with some values changed.

    - ``language``: None (automatic), an upstream name (中文, 英文, ...) or an ISO code (zh, en, ...);
      stored as the upstream name that goes into the prompt.
    - ``itn``: ask for inverse text normalization (upstream's default) or not.
    - ``hotwords``: a list or tuple of words for the prompt's context (stored as a tuple).
    - ``max_new_tokens``: generated-token limit per segment.
    - ``vad``: how long audio is cut into segments. ``"fsmn"``: upstream's FSMN-VAD (the model's
      ``vad_model``), segments of speech only, as upstream's ``AutoModel(..., vad_model="fsmn-vad")``;
      ``"energy"``: contiguous pieces cut at quiet points (no VAD model needed); None: consecutive
      windows of ``max_segment_seconds`` (one segment when the audio is no longer); ``"auto"``
      (default): ``"fsmn"`` when the model has a VAD model, else ``"energy"``.
    - ``vad_options``: :class:`funasr_cpp.vad.VadOptions` for ``"fsmn"`` (default: the checkpoint's
      values, with ``max_single_segment_time`` from ``max_segment_seconds``).
    - ``max_segment_seconds``: the longest segment, 1 to 180 s (FSMN-VAD's segments may run up to
      10 ms over it, as upstream's do).
    - ``max_tokens_per_second``: the runaway guard's token budget per segment is
      ``min(max_new_tokens, ceil(20 + max_tokens_per_second * seconds))``; None turns the scaling off.
    - ``repetition_guard``: cut a segment that used up its budget in a loop (see funasr_cpp.guard).
    - ``ignore_eos``: benchmarking, like llama.cpp's ``--ignore-eos``: every segment generates its
      whole token budget, end-of-turn tokens are skipped.
    - ``draft_max``: speculative decoding (with a draft source, see funasr_cpp.draft): draft tokens
      verified per decode step, 0 to 64 (0 = off).
    - ``word_timestamps``: ``Segment.words`` from the checkpoint's CTC head, upstream's timestamps
      (a model without the CTC head raises ValueError; see funasr_cpp.timestamps).
    - ``ctc_draft``: on a checkpoint with the CTC head, its greedy transcript is each segment's
      draft when no draft source gives one (the output is the same, decoding takes fewer steps).
    """
    language: Optional[str] = None
    itn: bool = True
    hotwords: tuple[str, ...] = ()
    max_new_tokens: int = 512
    vad: Optional[str] = "auto"
    vad_options: Any = None
    max_segment_seconds: float = 30.0
    max_tokens_per_second: Optional[float] = TOKENS_PER_SECOND
    repetition_guard: bool = True
    ignore_eos: bool = False
    draft_max: int = 8
    word_timestamps: bool = False
    ctc_draft: bool = True

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # frozen: values are normalized once, here

        put("language", normalize_language(self.language))
        put("hotwords", tuple(check_hotwords(self.hotwords)))
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {n!r}")
        put("max_new_tokens", int(n))
        if self.vad not in VAD_MODES:
            raise ValueError(f"vad must be 'auto', 'fsmn', 'energy' or None, got {self.vad!r}")
        if self.vad_options is not None:
            from .vad import VadOptions

            if not isinstance(self.vad_options, VadOptions):
                raise TypeError(f"vad_options must be a funasr_cpp.vad.VadOptions, got {type(self.vad_options).__name__}")
        s = self.max_segment_seconds
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 1.0 <= s <= 180.0:
            raise ValueError(f"max_segment_seconds must be a number in [1, 180], got {s!r}")
        put("max_segment_seconds", float(s))
        r = self.max_tokens_per_second
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 or math.isinf(r)):
            raise ValueError(f"max_tokens_per_second must be a positive number or None, got {r!r}")
        d = self.draft_max
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 0 <= d <= 64:
            raise ValueError(f"draft_max must be an int in [0, 64], got {d!r}")
        put("draft_max", int(d))
        for name in ("itn", "repetition_guard", "ignore_eos", "word_timestamps", "ctc_draft"):
            put(name, bool(getattr(self, name)))

    def replace(self, **changes: Any) -> "TranscribeOptions":
        """A checked copy with ``changes`` applied (unknown names: ``TypeError``)."""
        return dataclasses.replace(self, **self.check_names(changes))

    @classmethod
    def check_names(cls, changes: dict) -> dict:
        return _check_names(cls, changes, "transcription")

    @classmethod
    def build(cls, options: Optional["TranscribeOptions"] = None, **overrides: Any) -> "TranscribeOptions":
        """``options`` (default: all defaults) with ``overrides`` applied."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options must be a TranscribeOptions, got {type(options).__name__}")
        base = options if options is not None else cls()
        return base.replace(**overrides) if overrides else base

    def token_budget(self, seconds: float) -> int:
        """Generated-token limit for a segment of ``seconds``."""
        return token_budget(seconds, self.max_new_tokens, self.max_tokens_per_second)


def token_budget(seconds: float, max_new_tokens: int, tokens_per_second: Optional[float] = TOKENS_PER_SECOND) -> int:
    """``min(max_new_tokens, ceil(BASE_TOKENS + tokens_per_second * seconds))``, at least 1;
    just ``max_new_tokens`` when ``tokens_per_second`` is None."""
    if tokens_per_second is None:
        return int(max_new_tokens)
    return max(1, min(int(max_new_tokens), math.ceil(BASE_TOKENS + tokens_per_second * seconds)))


__all__ = ["BASE_TOKENS", "LoadOptions", "TOKENS_PER_SECOND", "Timings", "TranscribeOptions", "VAD_MODES",
           "VAD_NAMES", "token_budget", "vad_mode"]
