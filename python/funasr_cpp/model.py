"""High-level speech recognition API: :class:`Model`, :func:`transcribe`.

>>> import funasr_cpp
>>> model = funasr_cpp.Model.from_pretrained("Fun-ASR-Nano-2512/")   # converted once, then cached
>>> result = model.transcribe("speech.wav", language="zh")
>>> result.text, result.segments[0].start, result.timings["real_time_factor"]

Long audio is split into utterances of at most ``max_segment_seconds`` (silence-aware by
default); each utterance gets its own prompt with a cleared KV cache, as upstream's VAD path.

Runaway-generation guard (applies per segment):

* token budget: ``min(max_new_tokens, ceil(BASE_TOKENS + max_tokens_per_second * seconds))``,
  i.e. 20 tokens + 15 per second of audio by default (fast Mandarin is ~5-6 characters/s,
  English ~3-4 words/s, so real speech stays far below it); ``max_tokens_per_second=None``
  turns the scaling off.
* repetition cut: when a segment used up its whole budget (no end-of-turn token) and its
  last tokens are a loop (an n-gram of 1-8 tokens repeated at least 8 times at the end),
  the tokens are cut after the first occurrence of the loop and the segment is flagged
  ``repetition_cut=True``. A segment that ended by itself is never cut.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from . import _core
from .prompt import _check_hotwords, build_prompt, normalize_language, postprocess

SAMPLE_RATE = 16000
MIN_SAMPLES = 400                 # 25 ms: one fbank frame; shorter audio gives no audio rows
BASE_TOKENS = 20
TOKENS_PER_SECOND = 15.0
LOOP_MAX_NGRAM = 8
LOOP_MIN_REPEATS = 8
DEFAULT_MODEL = "FunAudioLLM/Fun-ASR-Nano-2512"
SEGMENT_MODES = ("silence", "fixed")

AudioInput = Union[str, os.PathLike, bytes, bytearray, np.ndarray]


@dataclass
class Segment:
    """One utterance: times in seconds from the start of the audio."""
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    repetition_cut: bool = False


@dataclass
class Transcription:
    text: str
    segments: list[Segment]
    language: Optional[str]       # the requested language (upstream name), None = automatic
    duration: float               # seconds of audio
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# helpers

def token_budget(seconds: float, max_new_tokens: int, tokens_per_second: Optional[float] = TOKENS_PER_SECOND) -> int:
    """Generated-token limit for a segment of ``seconds`` (see the module docstring)."""
    if tokens_per_second is None:
        return int(max_new_tokens)
    return max(1, min(int(max_new_tokens), math.ceil(BASE_TOKENS + tokens_per_second * seconds)))


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


def _join_texts(texts: Iterable[str]) -> str:
    return re.sub(r"\s+", " ", " ".join(texts))


def _check_options(language, itn, hotwords, max_new_tokens, segment, max_segment_seconds):
    name = normalize_language(language)
    words = _check_hotwords(hotwords)
    if not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if segment is not None and segment not in SEGMENT_MODES:
        raise ValueError(f"segment must be None, 'silence' or 'fixed', got {segment!r}")
    if not (isinstance(max_segment_seconds, (int, float)) and 1.0 <= max_segment_seconds <= 180.0):
        raise ValueError(f"max_segment_seconds must be a number in [1, 180], got {max_segment_seconds!r}")
    return name, bool(itn), words


# ---------------------------------------------------------------------------------------------
# Model

class Model:
    """A loaded Fun-ASR-Nano model (LLM GGUF + mmproj GGUF). Reusable and thread-safe (calls
    into the native model are serialized); ``close()`` or use as a context manager.

    ``n_ctx=0`` (default) sizes the LLM's KV cache to the input: 1024 tokens (a 30 s segment and
    its answer), grown in steps of 1024 when a longer segment comes; a fixed ``n_ctx`` caps it."""

    def __init__(self, llm_gguf: Union[str, os.PathLike], mmproj_gguf: Union[str, os.PathLike], *,
                 n_threads: Optional[int] = None, n_gpu_layers: int = -1, use_gpu: bool = True,
                 n_ctx: int = 0, flash_attn: str = "auto", n_batch: int = 512, kv_type: str = "f16"):
        t0 = time.perf_counter()
        self._asr = _core.AsrModel(os.fspath(llm_gguf), os.fspath(mmproj_gguf),
                                   n_threads=0 if n_threads is None else int(n_threads),
                                   n_gpu_layers=n_gpu_layers, use_gpu=use_gpu, n_ctx=n_ctx,
                                   n_batch=n_batch, flash_attn=flash_attn, kv_type=kv_type)
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        self.llm_path = Path(llm_gguf)
        self.mmproj_path = Path(mmproj_gguf)
        self._lock = threading.RLock()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, source: Union[str, os.PathLike], *, cache_dir: Union[str, os.PathLike, None] = None,
                        llm_type: str = "q8_0", mmproj_type: str = "f16", hub: str = "huggingface",
                        **kwargs: Any) -> "Model":
        """Load from a released checkpoint folder (funasr's layout, or the Transformers ``-hf``
        one; converted once into
        ``cache_dir or ~/.cache/funasr-cpp/models/<name>-<hash>/`` and reused), a folder with
        one LLM GGUF and one ``mmproj-*.gguf``, or a hub id such as
        ``FunAudioLLM/Fun-ASR-Nano-2512`` (``hub="huggingface"`` or ``"modelscope"``; downloaded,
        then converted and cached). ``kwargs`` go to :class:`Model`."""
        llm, mmproj = resolve_model(source, cache_dir=cache_dir, llm_type=llm_type,
                                    mmproj_type=mmproj_type, hub=hub)
        return cls(llm, mmproj, **kwargs)

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._asr.close()

    @property
    def closed(self) -> bool:
        return self._asr.closed

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model(llm={str(self.llm_path)!r}, mmproj={str(self.mmproj_path)!r}" + \
            (", closed)" if self.closed else ")")

    # -- inference -------------------------------------------------------------------------
    def transcribe(self, audio: AudioInput, *, sample_rate: Optional[int] = None, language: Optional[str] = None,
                   itn: bool = True, hotwords: Optional[Sequence[str]] = None, max_new_tokens: int = 512,
                   segment: Optional[str] = None, max_segment_seconds: float = 30.0,
                   max_tokens_per_second: Optional[float] = TOKENS_PER_SECOND, repetition_guard: bool = True,
                   progress: Optional[Callable[[float, float], Any]] = None, ignore_eos: bool = False) -> Transcription:
        """Transcribe a path (WAV/FLAC/OGG/MP3), bytes of such a file, or a numpy array
        plus its ``sample_rate`` (any rate, any channel count; resampled to 16 kHz mono).

        ``segment``: None = one segment when the audio is at most ``max_segment_seconds``,
        else silence-aware splitting; ``"silence"`` / ``"fixed"`` always split that way.
        ``progress(done_seconds, total_seconds)`` is called after each segment.
        ``max_tokens_per_second`` (None: off) and ``repetition_guard``: see the module docstring.
        ``ignore_eos`` (benchmarking, like llama.cpp's ``--ignore-eos``): every segment generates its
        whole token budget, end-of-turn tokens are skipped."""
        name, itn, words = _check_options(language, itn, hotwords, max_new_tokens, segment, max_segment_seconds)
        if self.closed:
            raise RuntimeError("the model is closed")
        wall0 = time.perf_counter()
        from .audio import load_audio, split_utterances

        x = load_audio(audio, sample_rate=sample_rate)
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        if x.size and not np.isfinite(x).all():
            raise ValueError("audio contains NaN or infinite samples")
        total = x.size / SAMPLE_RATE
        if x.size < MIN_SAMPLES:
            spans: list[tuple[int, int]] = []
        elif segment is None and total <= max_segment_seconds:
            spans = [(0, x.size)]
        else:
            spans = [(int(a), int(b)) for a, b in
                     split_utterances(x, max_seconds=max_segment_seconds, mode=segment or "silence")]
        prompt = build_prompt(name, itn, words)
        timings = {"load_ms": self.load_ms, "frontend_ms": 0.0, "encode_ms": 0.0, "prefill_ms": 0.0, "decode_ms": 0.0,
                   "n_prompt_tokens": 0, "n_cached_tokens": 0, "n_generated_tokens": 0, "n_decoded_tokens": 0}
        segments: list[Segment] = []
        done = -1.0
        for a, b in spans:
            if b - a < MIN_SAMPLES:
                continue
            seconds = (b - a) / SAMPLE_RATE
            budget = token_budget(seconds, max_new_tokens, max_tokens_per_second)
            with self._lock:
                res = self._asr.generate(x[a:b], prompt, max_new_tokens=budget, ignore_eos=ignore_eos)
                tokens = list(res["tokens"])
                cut = False
                if repetition_guard and len(tokens) >= budget:  # ran out of budget: maybe a runaway loop
                    keep = find_loop(tokens)
                    if keep is not None:
                        tokens, cut = tokens[:keep], True
                text = postprocess(self._asr.detokenize(tokens))
            for k in ("frontend_ms", "encode_ms", "prefill_ms", "decode_ms"):
                timings[k] += float(res[k])
            timings["n_generated_tokens"] += len(res["tokens"])
            timings["n_prompt_tokens"] += int(res["n_prompt_tokens"])
            timings["n_cached_tokens"] += int(res["n_cached_tokens"])
            timings["n_decoded_tokens"] += int(res["n_decoded_tokens"])
            segments.append(Segment(a / SAMPLE_RATE, b / SAMPLE_RATE, text, tokens, cut))
            if progress is not None:
                done = b / SAMPLE_RATE
                progress(done, total)
        if progress is not None and done < total:
            progress(total, total)
        wall = time.perf_counter() - wall0
        timings["total_ms"] = wall * 1000.0
        # the first token of a segment comes from the prefill's logits: decode speed counts llama_decode calls
        timings["tokens_per_s"] = (timings["n_decoded_tokens"] / (timings["decode_ms"] / 1000.0)
                                   if timings["decode_ms"] > 0 else 0.0)
        # prompt tokens kept in the KV cache from the previous call (same instruction) are not prefilled
        timings["prefill_tokens_per_s"] = ((timings["n_prompt_tokens"] - timings["n_cached_tokens"])
                                           / (timings["prefill_ms"] / 1000.0)
                                           if timings["prefill_ms"] > 0 else 0.0)
        timings["real_time_factor"] = wall / total if total > 0 else 0.0
        return Transcription(_join_texts(s.text for s in segments), segments, name, total, timings)

    def transcribe_batch(self, items: Iterable[AudioInput], **options: Any) -> list[Transcription]:
        """Transcribe several inputs one after the other with this model (same options for all)."""
        items = list(items)
        _check_options(options.get("language"), options.get("itn", True), options.get("hotwords"),
                       options.get("max_new_tokens", 512), options.get("segment"),
                       options.get("max_segment_seconds", 30.0))
        return [self.transcribe(item, **options) for item in items]


# ---------------------------------------------------------------------------------------------
# model resolution (folders, cache, hub)

def default_cache_dir() -> Path:
    root = os.environ.get("FUNASR_CPP_CACHE")
    if root:
        return Path(root).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "funasr-cpp" / "models"


def _release_files(folder: Path) -> list:
    """The files that identify a checkpoint folder (funasr's layout or the Transformers -hf one);
    empty when `folder` is neither."""
    if (folder / "model.pt").is_file() and (folder / "config.yaml").is_file():
        return [folder / "model.pt", folder / "config.yaml"]
    config = folder / "config.json"
    if config.is_file() and not (folder / "config.yaml").exists():
        try:
            if json.loads(config.read_text(encoding="utf-8")).get("model_type") == "fun_asr_nano":
                return [config] + sorted(folder.glob("*.safetensors"))
        except (ValueError, OSError):
            pass  # not ours; the GGUF-folder path reports what is there
    return []


def _is_release(folder: Path) -> bool:
    return bool(_release_files(folder))


def _gguf_pair(folder: Path, llm_type: Optional[str] = None, mmproj_type: Optional[str] = None):
    """(llm, mmproj) of a folder with exactly one LLM GGUF and one mmproj-*.gguf, or None if
    types are given and missing; ValueError when ambiguous."""
    ggufs = sorted(p for p in folder.glob("*.gguf") if p.is_file())
    mm = [p for p in ggufs if p.name.startswith("mmproj")]
    llm = [p for p in ggufs if not p.name.startswith("mmproj")]
    if llm_type is not None:
        llm = [p for p in llm if p.name.endswith(f"-{llm_type}.gguf")]
        mm = [p for p in mm if p.name.endswith(f"-{mmproj_type}.gguf")]
        return (llm[0], mm[0]) if len(llm) == 1 and len(mm) == 1 else None
    if len(llm) != 1 or len(mm) != 1:
        raise ValueError(f"{folder}: expected one LLM GGUF and one mmproj-*.gguf, found "
                         f"{len(llm)} LLM GGUF(s) {[p.name for p in llm]} and {len(mm)} mmproj GGUF(s) "
                         f"{[p.name for p in mm]}; a released checkpoint folder needs model.pt and config.yaml")
    return llm[0], mm[0]


def _release_cache_dir(folder: Path, cache_dir) -> Path:
    folder = folder.resolve()
    h = hashlib.sha256(str(folder).encode())
    for f in _release_files(folder):
        st = f.stat()
        h.update(f"|{f.name}:{st.st_mtime_ns}:{st.st_size}".encode())
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{folder.name}-{h.hexdigest()[:12]}"


def _convert_cached(folder: Path, cache_dir, llm_type: str, mmproj_type: str) -> tuple[Path, Path]:
    out = _release_cache_dir(folder, cache_dir)
    pair = _gguf_pair(out, llm_type, mmproj_type) if out.is_dir() else None
    if pair:
        return pair
    from .converters import convert

    out.mkdir(parents=True, exist_ok=True)
    lock_path = out / ".lock"
    with open(lock_path, "w") as lock:
        try:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        pair = _gguf_pair(out, llm_type, mmproj_type)  # converted meanwhile by another process
        if pair:
            return pair
        return convert(folder, out, llm_type=llm_type, mmproj_type=mmproj_type, progress=False)


def _looks_like_hub_id(s: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", s)) and not s.startswith((".", "~"))


_CONVERT_HINT = ("download the release folder yourself and pass its path to from_pretrained(), or convert "
                 "it once with `funasr-cpp convert DIR -o OUT` and load OUT")
_HUB_FILES = ["model.pt", "config.yaml", "configuration.json", "multilingual.tiktoken", "am.mvn",
              "Qwen3-0.6B/*",
              # the Transformers layout (FunAudioLLM/Fun-ASR-Nano-2512-hf)
              "config.json", "*.safetensors", "model.safetensors.index.json", "preprocessor_config.json",
              "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"]


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FUNASR_CPP_OFFLINE"))


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host opens within ``timeout`` (a quick network check,
    so that a machine without network fails in seconds rather than after the hub's retries)."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    if not u.hostname:
        return True
    try:
        with socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False


def _download(repo_id: str, hub: str, cache_dir) -> Path:
    hub = hub.lower()
    if hub in ("huggingface", "hf"):
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise ImportError(f"downloading {repo_id!r} needs huggingface_hub (`pip install huggingface_hub`); "
                              f"or {_CONVERT_HINT}") from None
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        local_only = _offline() or not _reachable(endpoint)
        try:
            return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES, local_files_only=local_only))
        except Exception as exc:  # network errors, offline mode without a cached copy, unknown repo
            if _offline():
                why = "offline mode (HF_HUB_OFFLINE) and no cached copy"
            elif local_only:
                why = f"no network: cannot reach {endpoint}, and no cached copy"
            else:
                why = f"{type(exc).__name__}: {exc}"
            raise ConnectionError(f"cannot download {repo_id!r} from Hugging Face ({why}); {_CONVERT_HINT}") from exc
    if hub in ("modelscope", "ms"):
        if _offline():
            raise ConnectionError(f"cannot download {repo_id!r} from ModelScope (offline mode); {_CONVERT_HINT}")
        try:
            from modelscope import snapshot_download as ms_download
        except ImportError:
            raise ImportError(f"downloading {repo_id!r} from ModelScope needs modelscope (`pip install modelscope`); "
                              f"or {_CONVERT_HINT}") from None
        if not _reachable(os.environ.get("MODELSCOPE_DOMAIN") or "https://www.modelscope.cn"):
            raise ConnectionError(f"cannot download {repo_id!r} from ModelScope (no network); {_CONVERT_HINT}")
        try:
            return Path(ms_download(repo_id, allow_patterns=_HUB_FILES))
        except Exception as exc:
            raise ConnectionError(f"cannot download {repo_id!r} from ModelScope ({type(exc).__name__}: {exc}); "
                                  f"{_CONVERT_HINT}") from exc
    raise ValueError(f"hub must be 'huggingface' or 'modelscope', got {hub!r}")


def resolve_model(source: Union[str, os.PathLike], *, cache_dir=None, llm_type: str = "q8_0",
                  mmproj_type: str = "f16", hub: str = "huggingface") -> tuple[Path, Path]:
    """``from_pretrained``'s source -> (llm_gguf, mmproj_gguf), converting/downloading as needed."""
    path = Path(source).expanduser()
    if path.is_dir():
        if _is_release(path):
            return _convert_cached(path, cache_dir, llm_type, mmproj_type)
        return _gguf_pair(path)
    if path.exists():
        raise ValueError(f"{source}: expected a folder (a released checkpoint or one with two GGUF files), "
                         "not a file; for two GGUF files use Model(llm_gguf, mmproj_gguf)")
    if isinstance(source, str) and _looks_like_hub_id(source):
        folder = _download(source, hub, cache_dir)
        if not _is_release(folder):
            raise ValueError(f"{source}: the downloaded snapshot {folder} is not a checkpoint folder (no model.pt + "
                             "config.yaml, no Transformers config.json of model_type fun_asr_nano)")
        return _convert_cached(folder, cache_dir, llm_type, mmproj_type)
    raise FileNotFoundError(f"{source}: no such folder (and not a hub id like {DEFAULT_MODEL!r})")


# ---------------------------------------------------------------------------------------------
# module-level transcribe

_MODEL_KEYS = ("cache_dir", "llm_type", "mmproj_type", "hub", "n_threads", "n_gpu_layers", "use_gpu", "n_ctx",
               "flash_attn", "n_batch", "kv_type")
_MODELS: dict = {}
_MODELS_LOCK = threading.Lock()


def get_model(source: Union[str, os.PathLike] = DEFAULT_MODEL, **kwargs: Any) -> Model:
    """A Model per (source, options), loaded once per process and kept."""
    key = (os.fspath(source), tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None or model.closed:
            model = _MODELS[key] = Model.from_pretrained(source, **kwargs)
        return model


def transcribe(audio: AudioInput, model: Union[Model, str, os.PathLike] = DEFAULT_MODEL,
               **options: Any) -> Transcription:
    """``Model.transcribe`` with ``model`` a :class:`Model` or a ``from_pretrained`` source
    (loaded once and cached in this process; loading options such as ``n_threads`` or
    ``llm_type`` may be passed along with the transcription options)."""
    load = {k: options.pop(k) for k in _MODEL_KEYS if k in options}
    if isinstance(model, Model):
        if load:
            raise TypeError(f"loading options {sorted(load)} need a model source, not a loaded Model")
        m = model
    else:
        _check_options(options.get("language"), options.get("itn", True), options.get("hotwords"),
                       options.get("max_new_tokens", 512), options.get("segment"),
                       options.get("max_segment_seconds", 30.0))
        m = get_model(model, **load)
    return m.transcribe(audio, **options)


__all__ = ["Model", "Segment", "Transcription", "find_loop", "get_model", "resolve_model", "token_budget",
           "transcribe"]
