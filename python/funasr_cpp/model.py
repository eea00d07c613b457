"""High-level speech recognition API: :class:`Model`, :func:`transcribe`.

>>> import funasr_cpp
>>> model = funasr_cpp.Model.from_pretrained("Fun-ASR-Nano-2512/")   # converted once, then cached
>>> result = model.transcribe("speech.wav", language="zh")
>>> result.text, result.segments[0].start, result.timings.real_time_factor

The steps of one call: ``audio.load_audio`` (decode, downmix, resample to 16 kHz) →
speech segments of at most ``max_segment_seconds`` (``vad.FsmnVad``, upstream's FSMN-VAD, when the
model has a VAD model; else ``vad.split_utterances``, cuts at quiet points) → every segment submitted to the native batched engine, ``_core.AsrModel.submit`` (fbank + LFR
frontend, encoder + adaptor, prefill; up to ``n_parallel`` segments decoded together, greedy, the
system turn and instruction prefilled once and shared; on a checkpoint with the CTC head, the
head in the same encoder pass, its greedy transcript the draft for speculative decoding) →
``guard.cut_repetition`` → ``prompt.postprocess`` → with ``word_timestamps``, the text aligned
to the CTC frames (``timestamps.segment_ctc``) as ``Segment.words``. Segments of other calls, from other threads or from ``transcribe_batch``,
share the same batches.
Options and their defaults: :class:`funasr_cpp.TranscribeOptions`; where models come from:
:mod:`funasr_cpp.hub`; output formats: :mod:`funasr_cpp.formats`.
"""
from __future__ import annotations

import inspect
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from . import _core, keys
from .draft import DraftSource, draft_tokens
from .guard import cut_repetition
from .hub import DEFAULT_MODEL, resolve_model, resolve_vad_model
from .audio import SAMPLE_RATE, load_audio
from .options import LoadOptions, TranscribeOptions
from .prompt import build_prompt, postprocess
from .timestamps import CtcTokenizer, segment_ctc, words_from_spans
from .types import Segment, Timings, Transcription, Word  # Segment, Transcription, Word re-exported
from .vad import FsmnVad, VadOptions, split_utterances

if TYPE_CHECKING:
    from .streaming import TranscriptionStream

MIN_SAMPLES = 400                 # 25 ms: one fbank frame; shorter audio gives no audio rows

AudioInput = Union[str, os.PathLike, bytes, bytearray, np.ndarray]
ProgressCallback = Callable[[float, float], Any]


def _join_texts(texts: Iterable[str]) -> str:
    """Segment texts in time order, as upstream's inference_with_vad joins them (one space each)."""
    return " ".join(texts)


@dataclass
class _Pending:
    """A segment submitted to the engine."""
    job: Any
    start: int
    end: int
    budget: int


@dataclass
class _Call:
    """One input on its way through the engine: its segments are submitted a window at a time
    (``submit_more``), so a long file holds the samples of a few segments in the engine, not a
    second copy of the whole recording. It carries what its :class:`PendingTranscription` needs
    from the Model (the engine, the CTC tokenizer, the load time)."""
    options: TranscribeOptions
    total: float
    wall0: float
    asr: Any                                       # the engine, _core.AsrModel
    ctc_tokenizer: Callable[[], Optional[CtcTokenizer]]  # loaded on first use
    window: int                                    # segments kept submitted beyond those collected
    load_ms: float = 0.0
    vad_ms: float = 0.0
    pending: list = field(default_factory=list)    # submitted, in time order
    todo: deque = field(default_factory=deque)     # (index, start, end) still to submit
    submit: Any = None                             # (index, start, end) -> _Pending

    def submit_more(self, waited: int) -> None:
        """Keep up to `window` segments submitted beyond the `waited` ones already collected."""
        while self.todo and len(self.pending) - waited < self.window:
            self.pending.append(self.submit(*self.todo.popleft()))
        if not self.todo:
            self.submit = None  # drops the samples


class Model:
    """A loaded Fun-ASR-Nano model (LLM GGUF + mmproj GGUF). Reusable and thread-safe: calls from
    several threads are decoded together; ``close()`` or use as a context manager.

    ``n_parallel`` segments (of one call or of several) are decoded together in one batch.
    ``n_ctx=0`` (default) sizes the LLM's KV cache to the segments that run together: multiples
    of 1024 cells, grown when nothing runs (a 30 s segment and its answer need ~1000 at most);
    a fixed ``n_ctx`` caps it. Every loading option and its default: :class:`LoadOptions`."""

    def __init__(self, llm_gguf: Union[str, os.PathLike], mmproj_gguf: Union[str, os.PathLike],
                 options: Optional[LoadOptions] = None, *,
                 vad_model: Union["FsmnVad", str, os.PathLike, None] = None, **overrides: Any):
        """``options``: a :class:`funasr_cpp.options.LoadOptions` (default: its defaults);
        ``overrides`` change single fields of it (``n_threads=4``, ``n_parallel=2``, ...).
        ``vad_model``: an :class:`funasr_cpp.vad.FsmnVad`, or its GGUF; with one, ``vad="auto"``
        segments with it."""
        t0 = time.perf_counter()
        self.load_options = LoadOptions.build(options, **overrides)
        if vad_model is not None and not isinstance(vad_model, FsmnVad):
            vad_model = FsmnVad(vad_model, n_threads=self.load_options.n_threads)
        self._asr = _core.AsrModel(os.fspath(llm_gguf), os.fspath(mmproj_gguf), **self.load_options.engine_kwargs())
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        self.llm_path = Path(llm_gguf)
        self.mmproj_path = Path(mmproj_gguf)
        self.vad: Optional[FsmnVad] = vad_model
        self._ctc_tok: Any = None   # CtcTokenizer, loaded on first use; False: the mmproj has none
        self._ctc_lock = threading.Lock()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, source: Union[str, os.PathLike], *, cache_dir: Union[str, os.PathLike, None] = None,
                        llm_type: Optional[str] = None, mmproj_type: Optional[str] = None, hub: Optional[str] = None,
                        vad_model: Union[str, os.PathLike, None] = None, **kwargs: Any) -> "Model":
        """Load from a released checkpoint folder (funasr's layout, or the Transformers ``-hf``
        one; converted once into ``cache_dir or ~/.cache/funasr-cpp/models/<name>-<hash>/`` and
        reused), a folder with one LLM GGUF and one ``mmproj-*.gguf``, or a hub id such as
        ``FunAudioLLM/Fun-ASR-Nano-2512`` (``hub="huggingface"`` or ``"modelscope"``; downloaded,
        then converted and cached): see :mod:`funasr_cpp.hub`. ``vad_model``: ``"fsmn-vad"``
        (upstream's FSMN-VAD from the same hub), a VAD hub id, release folder or GGUF, resolved the
        same way (:func:`funasr_cpp.hub.resolve_vad_model`). ``llm_type``, ``mmproj_type`` and
        ``hub`` left as None take :func:`funasr_cpp.hub.resolve_model`'s defaults. ``kwargs`` go to
        :class:`Model`."""
        where = {"hub": hub} if hub is not None else {}
        if vad_model is not None:
            vad_model = resolve_vad_model(vad_model, cache_dir=cache_dir, **where)
        types = {k: v for k, v in (("llm_type", llm_type), ("mmproj_type", mmproj_type)) if v is not None}
        llm, mmproj = resolve_model(source, cache_dir=cache_dir, **types, **where)
        return cls(llm, mmproj, vad_model=vad_model, **kwargs)

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Free the native model; running transcriptions end with RuntimeError."""
        self._asr.close()

    @property
    def closed(self) -> bool:
        return self._asr.closed

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        vad = f", vad={str(self.vad.path)!r}" if self.vad is not None else ""
        return f"Model(llm={str(self.llm_path)!r}, mmproj={str(self.mmproj_path)!r}{vad}" + \
            (", closed)" if self.closed else ")")

    @property
    def n_parallel(self) -> int:
        return self._asr.n_parallel

    @property
    def device(self) -> str:
        """The device the model runs on, by the name ``device=`` takes (``"cpu"``, ``"vulkan0"``, ...):
        what ``LoadOptions.device`` picked (``"auto"``: the first GPU, else the CPU). With
        ``use_gpu=False`` the encoder runs on the CPU (``encoder_device``)."""
        return self._asr.device

    @property
    def encoder_device(self) -> str:
        """The device of the encoder/adaptor/CTC graph: ``device``, or ``"cpu"`` with ``use_gpu=False``."""
        return self._asr.encoder_device

    @property
    def has_ctc(self) -> bool:
        """The checkpoint has the CTC head (word timestamps, CTC drafts): ModelScope's
        Fun-ASR-Nano-2512 model.pt has it; the Hugging Face ``-hf`` copy and MLT do not."""
        return self._asr.has_ctc

    def _ctc_tokenizer(self) -> Optional[CtcTokenizer]:
        with self._ctc_lock:
            if self._ctc_tok is None:  # the ranks the native side read with the mmproj
                ranks = self._asr.ctc_ranks  # [] when converted from a release without multilingual.tiktoken
                self._ctc_tok = CtcTokenizer(ranks) if ranks else False
            return self._ctc_tok or None

    def check_word_timestamps(self) -> None:
        """ValueError saying why this model cannot give word timestamps (no CTC head or tokenizer)."""
        if not self.has_ctc:
            raise ValueError(f"word_timestamps=True needs the checkpoint's CTC head, and {self.mmproj_path} has none: "
                             "the Hugging Face (-hf) and MLT releases ship without ctc_decoder / ctc.ctc_lo; "
                             "convert ModelScope's Fun-ASR-Nano-2512 (model.pt with the CTC tensors) for word times. "
                             "Segment start/end times work without it.")
        if self._ctc_tokenizer() is None:
            raise ValueError(f"word_timestamps=True needs the CTC tokenizer, and {self.mmproj_path} has none "
                             f"({keys.KEY_CTC_TIKTOKEN_RANKS}): convert a release that has multilingual.tiktoken")

    # -- inference -------------------------------------------------------------------------
    def transcribe(self, audio: AudioInput, options: Optional[TranscribeOptions] = None, *,
                   sample_rate: Optional[int] = None, progress: Optional[ProgressCallback] = None,
                   draft: Optional[DraftSource] = None, **overrides: Any) -> Transcription:
        """Transcribe a path (WAV/FLAC/OGG/MP3), bytes of such a file, or a numpy array
        plus its ``sample_rate`` (any rate, any channel count; resampled to 16 kHz mono).

        ``options``: a :class:`TranscribeOptions` (default: its defaults); ``overrides`` change
        single fields of it (``language="en"``, ``hotwords=[...]``, ...).
        ``progress(done_seconds, total_seconds)`` is called after each segment.
        ``draft``: a :class:`funasr_cpp.draft.DraftSource` giving each segment's expected text
        for speculative decoding (the result is the same; only the speed changes)."""
        opts = TranscribeOptions.build(options, **overrides)
        self._check_open()
        return self._finish(self._start(audio, opts, sample_rate, draft), progress)

    def transcribe_batch(self, items: Iterable[AudioInput], options: Optional[TranscribeOptions] = None, *,
                         sample_rate: Optional[int] = None, draft: Optional[DraftSource] = None,
                         return_exceptions: bool = False, **overrides: Any) -> list:
        """``list(transcribe_iter(...))``: the results of several inputs, in order."""
        return list(self.transcribe_iter(items, options, sample_rate=sample_rate, draft=draft,
                                         return_exceptions=return_exceptions, **overrides))

    def transcribe_iter(self, items: Iterable[AudioInput], options: Optional[TranscribeOptions] = None, *,
                        sample_rate: Optional[int] = None, draft: Optional[DraftSource] = None,
                        return_exceptions: bool = False, **overrides: Any) -> Iterator:
        """Transcribe several inputs with the same options (checked before the first input is
        read; ``sample_rate`` for numpy arrays), yielding each result in input order as soon as it
        is done. Their segments are decoded together, up to ``n_parallel`` at a time; inputs are
        read as the batch needs them, so memory follows the segments in flight, not the number
        of inputs. ``return_exceptions=True``: an input that fails (unreadable audio, ...) yields
        its exception in its place instead of raising."""
        opts = TranscribeOptions.build(options, **overrides)
        self._check_open()
        return self._transcribe_iter(items, opts, sample_rate, draft, return_exceptions)

    def _transcribe_iter(self, items, opts, sample_rate, draft, return_exceptions) -> Iterator:
        window: deque = deque()   # started inputs (or their exceptions), oldest first
        in_flight = 0             # their segments
        try:
            for item in items:
                try:
                    call = self._start(item, opts, sample_rate, draft)
                    in_flight += len(call.pending)
                except Exception as e:  # noqa: BLE001 - handed back in place of the result
                    if not return_exceptions:
                        raise
                    call = e
                window.append(call)
                while window and (in_flight > 2 * self.n_parallel or isinstance(window[0], Exception)):
                    call = window.popleft()
                    in_flight -= 0 if isinstance(call, Exception) else len(call.pending)
                    yield self._result(call, return_exceptions)
            while window:
                yield self._result(window.popleft(), return_exceptions)
        finally:  # an abandoned iteration leaves nothing running
            for call in window:
                for p in getattr(call, "pending", ()):
                    p.job.cancel()

    # -- the steps of a call ------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the model is closed")

    def _start(self, audio: AudioInput, opts: TranscribeOptions, sample_rate: Optional[int],
               draft: Optional[DraftSource]) -> _Call:
        """Read and split the audio and submit its segments."""
        wall0 = time.perf_counter()
        if opts.word_timestamps:
            self.check_word_timestamps()
        mode = self._vad_mode(opts)

        x = load_audio(audio, sample_rate=sample_rate)
        if x.size == 0:  # a file without samples is refused by load_audio, naming the file
            raise ValueError("no audio samples: the audio array is empty")
        total = x.size / SAMPLE_RATE
        t_vad = time.perf_counter()
        spans = self._spans(x, opts, mode)
        vad_ms = (time.perf_counter() - t_vad) * 1000.0
        spans = [(a, b) for a, b in spans if b - a >= MIN_SAMPLES]
        prompt = build_prompt(opts.language, opts.itn, opts.hotwords)

        def submit(k: int, a: int, b: int) -> _Pending:
            budget = opts.token_budget((b - a) / SAMPLE_RATE)
            ids = draft_tokens(self._asr, draft, k, a / SAMPLE_RATE, b / SAMPLE_RATE, x[a:b])
            job = self._asr.submit(x[a:b], prompt, max_new_tokens=budget, ignore_eos=opts.ignore_eos,
                                   draft=ids, draft_max=opts.draft_max, ctc=opts.word_timestamps,
                                   ctc_draft=opts.ctc_draft and self.has_ctc)
            return _Pending(job, a, b, budget)

        call = _Call(opts, total, wall0, self._asr, self._ctc_tokenizer, window=2 * self.n_parallel,
                     load_ms=self.load_ms, vad_ms=vad_ms, submit=submit,
                     todo=deque((k, a, b) for k, (a, b) in enumerate(spans)))
        call.submit_more(0)  # the window: enough segments to fill the batch twice
        return call

    def _vad_mode(self, opts: TranscribeOptions) -> Optional[str]:
        if opts.vad == "auto":
            return "fsmn" if self.vad is not None else "energy"
        if opts.vad == "fsmn" and self.vad is None:
            raise ValueError("vad='fsmn' needs a VAD model: Model.from_pretrained(..., vad_model='fsmn-vad') "
                             "(or --vad-model); vad='energy' splits at quiet points without one")
        return opts.vad

    def _spans(self, x: np.ndarray, opts: TranscribeOptions, mode: Optional[str]) -> list:
        """Sample ranges of the segments: FSMN-VAD's speech segments, or pieces covering the audio."""
        if x.size < MIN_SAMPLES:
            return []
        if mode == "fsmn":
            vo = opts.vad_options or VadOptions()
            if vo.max_single_segment_time is None:
                vo = vo.replace(max_single_segment_time=opts.max_segment_seconds * 1000.0)
            return self.vad.sample_spans(x, vo)
        if x.size <= opts.max_segment_seconds * SAMPLE_RATE:
            return [(0, x.size)]
        # cuts keep 1 s before and after them where the limit allows (max_segment_seconds may be 1)
        return split_utterances(x, max_seconds=opts.max_segment_seconds, min_seconds=min(1.0, opts.max_segment_seconds / 2),
                                mode="silence" if mode == "energy" else "fixed")

    def _finish(self, call: _Call, progress: Optional[ProgressCallback] = None) -> Transcription:
        """Wait for the call's segments in order (the waiting thread decodes every job meanwhile)."""
        pending = PendingTranscription(call)
        for seg in pending.segments():
            if progress is not None:
                progress(seg.end, call.total)
        if progress is not None and (not pending.done_segments or pending.done_segments[-1].end < call.total):
            progress(call.total, call.total)
        return pending.result()

    def start(self, audio: AudioInput, options: Optional[TranscribeOptions] = None, *,
              sample_rate: Optional[int] = None, draft: Optional[DraftSource] = None,
              **overrides: Any) -> "PendingTranscription":
        """``transcribe`` in two halves: the audio is read, segmented and submitted now; the
        returned :class:`PendingTranscription` yields the segments as they are done
        (``segments()``), gives the result (``result()``) and can be cancelled (``cancel()``),
        e.g. by a server whose client went away."""
        opts = TranscribeOptions.build(options, **overrides)
        self._check_open()
        return PendingTranscription(self._start(audio, opts, sample_rate, draft))

    def stream(self, options: Optional[TranscribeOptions] = None, *, partial_interval: Optional[float] = 0.5,
               partials: Optional[str] = "auto", **overrides: Any) -> "TranscriptionStream":
        """Live transcription: a :class:`funasr_cpp.streaming.TranscriptionStream` to ``feed`` audio
        as it arrives; events ``SpeechStarted``, ``PartialText`` (at most one per
        ``partial_interval`` s of audio while a segment is open; ``partials``: ``"auto"``, ``"ctc"``,
        ``"llm"`` or None, see the class), ``FinalSegment`` (token-identical to ``transcribe`` of
        the segment's samples with ``vad=None``) and ``SpeechStopped``. ``options`` /
        ``overrides`` as for :meth:`transcribe`; ``vad="auto"`` segments with the model's FSMN-VAD
        when it has one, else segments end only at ``commit()`` / ``finish()``."""
        from .streaming import TranscriptionStream

        opts = TranscribeOptions.build(options, **overrides)
        self._check_open()
        return TranscriptionStream(self, opts, partial_interval=partial_interval, partials=partials)

    def _result(self, call: Any, return_exceptions: bool) -> Any:
        """The call's Transcription, or its exception when return_exceptions."""
        if isinstance(call, Exception):
            return call
        try:
            return self._finish(call)
        except Exception as e:  # noqa: BLE001
            if not return_exceptions:
                raise
            return e


class PendingTranscription:
    """A transcription submitted to the engine (:meth:`Model.start`). ``segments()`` decodes (in
    the calling thread, with every other job of the batch) and yields each :class:`Segment` in
    time order as it is done; ``result()`` finishes and returns the :class:`Transcription`;
    ``cancel()``, from any thread, stops what is not done (``result()`` then raises RuntimeError)."""

    def __init__(self, call: _Call):
        self._call = call
        self._timings = Timings(load_ms=call.load_ms, vad_ms=call.vad_ms)
        self._ctc_texts: list[str] = []
        self._cancelled = False
        self._result: Optional[Transcription] = None
        self.done_segments: list[Segment] = []
        self.duration = call.total

    @property
    def finished(self) -> bool:
        """result() has returned."""
        return self._result is not None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.todo.clear()
        for p in list(self._call.pending):
            p.job.cancel()

    def segments(self) -> Iterator[Segment]:
        call = self._call
        try:
            i = len(self.done_segments)
            while i < len(call.pending):
                p = call.pending[i]
                gen = p.job.result()
                i += 1
                if self._cancelled:
                    raise RuntimeError("the transcription was cancelled")
                call.submit_more(i)
                tokens, cut = list(gen.tokens), False
                if call.options.repetition_guard:  # a segment that ran out of budget may be a runaway loop
                    tokens, cut = cut_repetition(tokens, p.budget)
                # the engine detokenized the whole job; a cut one needs its shorter text
                text = postprocess(call.asr.detokenize(tokens) if cut else gen.text)
                self._timings.add(gen)
                seg = Segment(p.start / SAMPLE_RATE, p.end / SAMPLE_RATE, text, tokens, cut)
                if gen.ctc_best:
                    self._ctc_texts.append(self._segment_ctc(seg, gen))
                self.done_segments.append(seg)
                yield seg
        except BaseException:
            self.cancel()  # after a failure: the rest are not decoded for nothing
            raise

    def _segment_ctc(self, seg: Segment, gen: Any) -> str:
        """The segment's CTC text; with word_timestamps its words (upstream's ``timestamps``)."""
        call = self._call
        tok = call.ctc_tokenizer()
        if tok is None:
            return ""
        t0 = time.perf_counter()
        columns = (lambda ids: call.asr.ctc_log_probs(gen, ids)) if call.options.word_timestamps else None
        res = segment_ctc(seg.text, gen.ctc_best, columns, tok, call.asr.ctc_blank, call.asr.ctc_vocab_size)
        seg.words = words_from_spans(res.spans, tok, offset=seg.start)
        self._timings.timestamps_ms += (time.perf_counter() - t0) * 1000.0
        return res.ctc_text

    def result(self) -> Transcription:
        if self._result is None:
            for _ in self.segments():
                pass
            call, segs = self._call, self.done_segments
            self._timings.finish((time.perf_counter() - call.wall0) * 1000.0, call.total)
            self._result = Transcription(_join_texts(s.text for s in segs), segs, call.options.language, call.total,
                                         self._timings, _join_texts(self._ctc_texts) if self._ctc_texts else None)
        return self._result


# ---------------------------------------------------------------------------------------------
# module-level transcribe

# the loading keywords transcribe() takes along with the transcription options: from_pretrained's
# own and LoadOptions' fields
_MODEL_KEYS = tuple(p.name for p in inspect.signature(Model.from_pretrained).parameters.values()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY) + tuple(f.name for f in fields(LoadOptions))
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
               options: Optional[TranscribeOptions] = None, *, sample_rate: Optional[int] = None,
               progress: Optional[ProgressCallback] = None, draft: Optional[DraftSource] = None,
               **overrides: Any) -> Transcription:
    """``Model.transcribe`` with ``model`` a :class:`Model` or a ``from_pretrained`` source
    (loaded once and cached in this process; loading options such as ``n_threads`` or
    ``llm_type`` may be passed along with the transcription options)."""
    load = {k: overrides.pop(k) for k in _MODEL_KEYS if k in overrides}
    opts = TranscribeOptions.build(options, **overrides)  # checked before a model is loaded
    if isinstance(model, Model):
        if load:
            raise TypeError(f"loading options {sorted(load)} need a model source, not a loaded Model")
        m = model
    else:
        m = get_model(model, **load)
    return m.transcribe(audio, opts, sample_rate=sample_rate, progress=progress, draft=draft)


__all__ = ["Model", "PendingTranscription", "Segment", "Transcription", "Word", "get_model", "transcribe"]
