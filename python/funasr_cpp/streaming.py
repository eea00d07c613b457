"""Live transcription: :meth:`funasr_cpp.Model.stream` -> :class:`TranscriptionStream`.

The design is upstream's live one (funasr/bin/realtime_ws.py): a streaming FSMN-VAD
(:class:`funasr_cpp.vad.VadStream`) opens and closes sentences as audio arrives; while a sentence
is open a partial hypothesis of it is shown every ``partial_interval`` s of audio; when the VAD
closes it, the sentence is decoded as a whole and becomes the final.

- **Finals are exact**: a :class:`FinalSegment` is ``Model.start(samples[start:end], vad=None)``
  of the stream's own 16 kHz samples, the path ``Model.transcribe`` takes, so it is
  token-identical to ``model.transcribe(samples[start:end], vad=None)`` with the same options.
- **Partials** are background work: submitted at the engine's background priority (the engine
  runs none while a final is queued or decoding), at most one per segment at a time (a tick that
  finds the last one unfinished is dropped, not queued), a final cancels its segment's partial,
  and no :class:`PartialText` comes after its segment's :class:`FinalSegment`.
- **Memory** is the open segment's audio (at most ``max_segment_seconds``: long speech is cut as
  offline) plus a few seconds of lookback for the VAD's start decisions, whatever the stream's
  length (:attr:`TranscriptionStream.buffered_samples`).

Threads: ``feed`` only converts, runs the VAD and submits jobs; a thread of the stream waits on
the jobs (which drives the engine, with every other job of the Model) and queues the events.
"""
from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Union

import numpy as np

from .audio import SAMPLE_RATE, _array_to_mono, check_finite
from .model import MIN_SAMPLES
from .options import TranscribeOptions
from .prompt import build_prompt, postprocess
from .types import Segment, Word

PARTIAL_WINDOW_SECONDS = 15.0   # a partial decodes the open segment's last 15 s (upstream's cap)
LOOKBACK_SECONDS = 5.0          # audio kept before the newest chunk while no segment is open:
                                # the VAD reports a start after its window and lookback have passed
PARTIAL_MODES = ("auto", "ctc", "llm", None)
# the VAD takes long chunks in pieces of at most 10 s: from 15 s on upstream's generate switches to
# its offline form, which reports only the segments finished in the chunk (an open one's start is lost)
VAD_PIECE_SECONDS = 10.0
MAX_CHANNELS = 32               # a 2-D chunk with more "channels" is taken for [channels, samples]
BACKGROUND = 1                  # the engine's priority for partials (0: finals and offline transcription)


# -- events ------------------------------------------------------------------------------------
@dataclass
class SpeechStarted:
    """Segment ``index`` opened; ``time`` in seconds of stream time (the VAD's start, or the commit point)."""
    time: float
    index: int


@dataclass
class PartialText:
    """A hypothesis of the open segment ``index`` (which started at ``start`` s); replaced by the next."""
    index: int
    start: float
    text: str


@dataclass
class FinalSegment:
    """The final of segment ``index``: a :class:`funasr_cpp.Segment` as offline (stream times)."""
    index: int
    segment: Segment


@dataclass
class SpeechStopped:
    """Segment ``index`` closed at ``time`` s (the VAD's end, a commit, or the end of the stream)."""
    time: float
    index: int


StreamEvent = Union[SpeechStarted, PartialText, FinalSegment, SpeechStopped]


# -- the stream's audio ------------------------------------------------------------------------
class _Audio:
    """The stream's 16 kHz samples from ``base`` (absolute index) to ``end``; the older ones are dropped."""

    def __init__(self) -> None:
        self._x = np.zeros(SAMPLE_RATE, np.float32)
        self._n = 0
        self.base = 0

    @property
    def end(self) -> int:
        return self.base + self._n

    def append(self, x: np.ndarray) -> None:
        if self._n + len(x) > len(self._x):
            grown = np.zeros(max(2 * len(self._x), self._n + len(x)), np.float32)
            grown[:self._n] = self._x[:self._n]
            self._x = grown
        self._x[self._n:self._n + len(x)] = x
        self._n += len(x)

    def slice(self, a: int, b: int) -> np.ndarray:
        if a < self.base:
            raise RuntimeError(f"internal: sample {a} was dropped (kept from {self.base})")
        return self._x[a - self.base:b - self.base].copy()

    def drop_before(self, pos: int) -> None:
        """Forget the samples before ``pos``; the array shrinks back once most of it is dead."""
        k = min(max(0, pos - self.base), self._n)
        if k == 0:
            return
        self._x[:self._n - k] = self._x[k:self._n]
        self._n -= k
        self.base += k
        if len(self._x) > 4 * max(self._n, SAMPLE_RATE):
            self._x = self._x[:max(2 * self._n, SAMPLE_RATE)].copy()

    @property
    def capacity(self) -> int:
        return len(self._x)


@dataclass
class _Open:
    """The open segment."""
    index: int
    start: int                 # absolute sample
    next_partial: int          # open samples at which the next partial is due
    partial_job: Any = None    # the unfinished partial's engine job
    serial: int = 0            # partials submitted; only the newest may be shown
    draft: Optional[list] = None  # the last shown LLM partial's tokens (the next one's draft)


_STOP = object()


class TranscriptionStream:
    """A live transcription (:meth:`funasr_cpp.Model.stream`). ``feed(samples, sample_rate)`` as audio
    arrives returns the events ready so far; ``finish()`` ends the stream and returns the rest;
    ``for ev in stream:`` (e.g. from another thread) yields every event as it comes and ends after
    ``finish()``/``close()`` — once iteration has begun, ``feed``/``finish`` return ``[]`` and the
    iterator gets every event. ``commit()`` ends the open segment now (own turn detection).

    Events: :class:`SpeechStarted`, :class:`PartialText`, :class:`FinalSegment`, :class:`SpeechStopped`.
    Segments: with the model's FSMN-VAD (``vad="auto"``/``"fsmn"``) the streaming VAD's segments,
    with ``vad=None`` (or no VAD model) one segment from the first sample until ``commit()`` or
    ``finish()``; either way at most ``max_segment_seconds`` long (cut as offline). A ``commit()``
    inside the VAD's speech ends the segment there, and the rest of the VAD's speech is the next
    segment (its final empty when the VAD's end comes before the commit point).

    Partials (``partials=``): ``"ctc"`` is the checkpoint's CTC head's greedy text of the open
    audio: one encoder pass and no LLM, cheap, but rough text (no punctuation, ITN or language
    model); ``"llm"`` is an LLM decode of the open audio (its last 15 s), the real text, at the
    cost of a decode (prefill + tokens; the previous partial is its speculative draft, so a
    stable hypothesis costs few steps); ``"auto"``: ``"ctc"`` on a checkpoint with the CTC head,
    else ``"llm"``; None: no partials. Either way partials run only while no final is queued or
    decoding, and a tick that finds the segment's last partial unfinished is skipped, not queued.

    Thread-safe; not picklable. ``close()`` (or the context manager) cancels the stream's jobs."""

    def __init__(self, model: Any, options: TranscribeOptions, *, partial_interval: Optional[float] = 0.5,
                 partials: Optional[str] = "auto"):
        self._model = model
        self._asr = model._asr
        self.options = options
        if options.word_timestamps:
            model.check_word_timestamps()
        self._vad = self._vad_stream(model, options)
        self._partials = self.check_partials(model, partials, partial_interval)
        self._interval = 0 if self._partials is None else int(round(float(partial_interval) * SAMPLE_RATE))
        self._final_options = options.replace(vad=None)
        self._prompt = build_prompt(options.language, options.itn, options.hotwords)
        self._max_len = int(round(options.max_segment_seconds * SAMPLE_RATE))

        self._audio = _Audio()
        self._open: Optional[_Open] = None
        self._next_index = 0
        self._vad_speech = False      # the VAD is inside a segment (start reported, end not yet)
        self._vad_base = 0            # the sample the VAD's times count from (moved by clear())
        self._unfinished: dict = {}   # index -> start sample of the closed segments whose final is not out
        self._resampler: Any = None
        self._rate = SAMPLE_RATE
        self._state = "open"          # "open" -> "finished" | "closed"
        self._error: Optional[BaseException] = None
        self._lock = threading.RLock()
        self._events: list = []
        self._cond = threading.Condition()
        self._iterating = False
        self._worker_done = False
        self._work: "queue.Queue[Any]" = queue.Queue()
        self._in_work: list = []      # the jobs queued for the worker (cancelled by close)
        self._worker = threading.Thread(target=self._run, name="funasr-cpp-stream", daemon=True)
        self._worker.start()

    # -- setup -------------------------------------------------------------------------------
    @staticmethod
    def _vad_stream(model: Any, options: TranscribeOptions) -> Any:
        if options.vad == "energy":
            raise ValueError("vad='energy' cuts finished recordings at their quiet points; a stream takes "
                             "vad='auto', 'fsmn' (the model's FSMN-VAD) or None (segments end at commit()/finish())")
        if options.vad is None or (options.vad == "auto" and model.vad is None):
            return None
        if model.vad is None:
            raise ValueError("vad='fsmn' needs a VAD model: Model.from_pretrained(..., vad_model='fsmn-vad')")
        from .vad import VadOptions

        vo = options.vad_options or VadOptions()
        if vo.max_single_segment_time is None:  # long speech is cut as offline
            vo = vo.replace(max_single_segment_time=options.max_segment_seconds * 1000.0)
        return model.vad.stream(vo)

    @staticmethod
    def check_partials(model: Any, partials: Optional[str], interval: Optional[float]) -> Optional[str]:
        """The partial mode ``partials`` / ``interval`` give on ``model`` ("ctc", "llm" or None), or ValueError."""
        if partials not in PARTIAL_MODES:
            raise ValueError(f"partials must be 'auto', 'ctc', 'llm' or None, got {partials!r}")
        if interval is None or partials is None:
            return None
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0 \
                or math.isinf(interval):
            raise ValueError(f"partial_interval must be a positive number of seconds or None, got {interval!r}")
        if partials == "ctc" and not model.has_ctc:
            raise ValueError(f"partials='ctc' needs the checkpoint's CTC head, and {model.mmproj_path} has none; "
                             "partials='llm' decodes the open audio instead")
        if partials == "auto":
            return "ctc" if model.has_ctc else "llm"
        return partials

    # -- public API --------------------------------------------------------------------------
    def feed(self, samples: Any, sample_rate: Optional[int] = None) -> List[StreamEvent]:
        """The next chunk: a numpy array, 1-D mono or 2-D ``[samples, channels]``, float (taken as
        it is) or integer PCM (int16 / 32768, ...), at ``sample_rate`` (default 16000; resampled
        to 16 kHz by a streaming resampler, so chunks join exactly). Returns the events ready so
        far; never waits for decoding. ``ValueError`` for bad input (the stream is unchanged)."""
        with self._lock:
            self._check_open("feed")
            x = self._convert(samples, sample_rate)
            self._push(x)
        return self._take()

    def commit(self) -> List[StreamEvent]:
        """End the open segment at the audio fed so far, all of it (its final follows); returns the
        events ready."""
        with self._lock:
            self._check_open("commit")
            # the resampler still holds the last few ms fed: they belong to this segment (a new
            # resampler takes the audio after the commit)
            tail = self._drain_resampler()
            self._resampler, self._rate = None, SAMPLE_RATE
            if len(tail):
                self._push(tail)
            if self._open is not None:
                self._close(self._audio.end)
                if self._vad_speech:  # the VAD's speech goes on: its rest is the next segment
                    self._start_segment(self._audio.end)
        return self._take()

    def clear(self) -> List[StreamEvent]:
        """Drop the audio fed so far that no final was submitted for: the open segment ends with no
        final (its index is skipped) and the VAD and the resampler start afresh from here (a
        segment must not begin in the dropped audio). Finals already submitted still come."""
        with self._lock:
            self._check_open("clear")
            seg, self._open = self._open, None
            if seg is not None:
                if seg.partial_job is not None:
                    seg.partial_job.cancel()
                seg.serial += 1  # a partial on its way is stale
            self._resampler, self._rate = None, SAMPLE_RATE  # its buffered tail is dropped audio too
            if self._vad is not None:
                self._vad = self._vad_stream(self._model, self.options)
                self._vad_base = self._audio.end
            self._vad_speech = False
            self._audio.drop_before(self._audio.end)
        return self._take()

    def finish(self) -> List[StreamEvent]:
        """End the stream: the VAD is flushed, the open segment closes, and this waits for the last
        finals; returns the events not yet returned. A second call returns ``[]``."""
        with self._lock:
            if self._state == "closed":
                raise RuntimeError("the stream is closed")
            if self._state == "open":
                self._flush()
                self._state = "finished"
                self._work.put(_STOP)
        self._worker.join()
        self._raise_error()
        return self._take()

    def close(self) -> None:
        """Stop now: the stream's jobs are cancelled (the engine is free for others at once), no
        more events come; iteration ends. Idempotent."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
            if self._open is not None and self._open.partial_job is not None:
                self._open.partial_job.cancel()
            self._open = None
            for job in list(self._in_work):
                job.cancel()
            self._work.put(_STOP)
        self._worker.join()

    def __enter__(self) -> "TranscriptionStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[StreamEvent]:
        self._iterating = True  # from here on, every event goes to the iterator
        return self._iterate()

    def _iterate(self) -> Iterator[StreamEvent]:
        while True:
            with self._cond:
                while not self._events and not self._worker_done:
                    self._cond.wait()
                events, self._events = self._events, []
                done = self._worker_done
            yield from events
            if done:
                self._raise_error()
                return

    @property
    def time(self) -> float:
        """Seconds of (16 kHz) audio fed so far."""
        return self._audio.end / SAMPLE_RATE

    @property
    def buffered_samples(self) -> int:
        """Samples the stream keeps (its audio buffer's capacity): the open segment and the lookback."""
        return self._audio.capacity

    def unfinished_since(self, include_open: bool = True) -> Optional[float]:
        """Stream time (s) of the oldest audio whose final is not out yet (the open segment, unless
        ``include_open`` is False, or a closed one still decoding), or None: how much audio the
        stream holds undecided."""
        # no lock (a server's event loop asks while feed runs the VAD): list() of a dict and one
        # attribute read are atomic under the GIL
        seg = self._open if include_open else None
        starts = list(self._unfinished.values()) + ([seg.start] if seg is not None else [])
        return min(starts) / SAMPLE_RATE if starts else None

    @property
    def open_seconds(self) -> Optional[float]:
        """Seconds of audio the open segment holds so far, or None when none is open."""
        seg = self._open
        return None if seg is None else (self._audio.end - seg.start) / SAMPLE_RATE

    @property
    def open_index(self) -> Optional[int]:
        """The index of the open segment (audio fed that no final was submitted for yet), or None."""
        seg = self._open
        return None if seg is None else seg.index

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet collected (finals and partials)."""
        return len(self._in_work)

    @property
    def finished(self) -> bool:
        return self._state != "open"

    # -- input -------------------------------------------------------------------------------
    def _check_open(self, what: str) -> None:
        if self._state != "open":
            raise RuntimeError(f"cannot {what}: the stream is {self._state}; start another with Model.stream()")
        self._raise_error()

    def _convert(self, samples: Any, sample_rate: Optional[int]) -> np.ndarray:
        """16 kHz float32 mono of a chunk, or ValueError naming what is wrong (nothing changed)."""
        if not isinstance(samples, np.ndarray):
            raise ValueError(f"samples must be a numpy array, got {type(samples).__name__}")
        if samples.ndim not in (1, 2):
            raise ValueError(f"samples must be 1-D (mono) or 2-D [samples, channels], got shape {samples.shape}")
        if samples.dtype == np.bool_ or samples.dtype.kind not in "iuf":
            raise ValueError(f"samples must be float or integer PCM, got dtype {samples.dtype}")
        rate = SAMPLE_RATE if sample_rate is None else sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        channels = 1 if samples.ndim == 1 else samples.shape[1]
        if not 1 <= channels <= MAX_CHANNELS:  # (2, 16000) is torchaudio's [channels, samples]: not guessed
            raise ValueError(f"2-D samples are [samples, channels] with 1 to {MAX_CHANNELS} channels, got shape "
                             f"{samples.shape} (for [channels, samples] pass samples.T)")
        x = _array_to_mono(samples.reshape(-1)).reshape(samples.shape)  # integer PCM scaled as offline
        if x.ndim == 2:
            x = x[:, 0].copy() if channels == 1 else x.mean(axis=1, dtype=np.float32)
        check_finite(x, "the chunk")
        return self._resample(np.ascontiguousarray(x, dtype=np.float32), int(rate))

    def _resample(self, x: np.ndarray, rate: int) -> np.ndarray:
        if rate != self._rate:  # a new rate: the old resampler's tail first
            tail = self._drain_resampler()
            self._rate = rate
            self._resampler = None
            if rate != SAMPLE_RATE:
                import soxr

                self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            x = np.concatenate([tail, self._resampler.resample_chunk(x) if self._resampler else x])
        elif self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _drain_resampler(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return np.asarray(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True), np.float32)

    # -- segmentation ------------------------------------------------------------------------
    def _push(self, x: np.ndarray, final: bool = False) -> None:
        """Take 16 kHz samples: VAD decisions, the no-VAD segment, length cuts, partials, trimming."""
        before = self._audio.end
        self._audio.append(x)
        if self._vad is not None:
            for piece, last in _vad_pieces(x, final):
                for start_ms, end_ms in self._vad.feed(piece, final=last):
                    self._vad_event(start_ms, end_ms)
        elif self._open is None and len(x):
            self._start_segment(before)
        self._cut_long()
        self._maybe_partial()
        keep = self._open.start if self._open is not None else before - int(LOOKBACK_SECONDS * SAMPLE_RATE)
        self._audio.drop_before(keep)

    def _vad_event(self, start_ms: int, end_ms: int) -> None:
        per_ms = SAMPLE_RATE // 1000
        if start_ms >= 0:
            self._vad_speech = True
            if self._open is None:
                self._start_segment(self._vad_base + start_ms * per_ms)
        if end_ms >= 0:
            self._vad_speech = False
            if self._open is not None:
                self._close(min(self._vad_base + end_ms * per_ms, self._audio.end))

    def _cut_long(self) -> None:
        """Without a VAD, segments of max_segment_seconds as offline's fixed windows (the VAD cuts its own)."""
        while self._vad is None and self._open is not None and self._audio.end - self._open.start >= self._max_len:
            cut = self._open.start + self._max_len
            self._close(cut)
            if cut < self._audio.end:
                self._start_segment(cut)

    def _start_segment(self, start: int) -> None:
        self._open = _Open(self._next_index, start, next_partial=self._interval)
        self._next_index += 1
        self._emit(SpeechStarted(start / SAMPLE_RATE, self._open.index))

    def _close(self, end: int) -> None:
        """Close the open segment at ``end`` and submit its final (the offline path on its samples)."""
        seg, self._open = self._open, None
        if seg.partial_job is not None:
            seg.partial_job.cancel()
        seg.serial += 1  # any partial still on its way is stale
        end = max(end, seg.start)
        self._emit(SpeechStopped(end / SAMPLE_RATE, seg.index))
        x = self._audio.slice(seg.start, end)
        pending = self._model.start(x, self._final_options, sample_rate=SAMPLE_RATE) if len(x) else None
        self._unfinished[seg.index] = seg.start
        self._queue(("final", seg.index, seg.start, end, pending), pending)

    def _flush(self) -> None:
        """End of stream: the resampler's and the VAD's tails, then the open segment closes."""
        tail = self._drain_resampler()
        self._resampler, self._rate = None, SAMPLE_RATE
        if self._vad is not None:
            self._push(tail, final=True)
        elif len(tail):
            self._push(tail)
        if self._open is not None:
            self._close(self._audio.end)

    # -- partials ----------------------------------------------------------------------------
    def _maybe_partial(self) -> None:
        seg = self._open
        if seg is None or self._partials is None:
            return
        have = self._audio.end - seg.start
        if have < seg.next_partial or have < MIN_SAMPLES:
            return
        seg.next_partial = (have // self._interval + 1) * self._interval
        if seg.partial_job is not None and not seg.partial_job.done:
            return  # the last one is still queued or running: this tick is dropped, not queued
        a = max(seg.start, self._audio.end - int(PARTIAL_WINDOW_SECONDS * SAMPLE_RATE))
        x = self._audio.slice(a, self._audio.end)
        seg.serial += 1
        seg.partial_job = self._submit_partial(x, seg)
        self._queue(("partial", seg, seg.serial, seg.partial_job), seg.partial_job)

    def _submit_partial(self, x: np.ndarray, seg: _Open) -> Any:
        # background priority: a queued partial waits behind every queued final
        if self._partials == "ctc":  # the encoder pass with the CTC head alone: no LLM, no KV cells
            return self._asr.submit(x, self._prompt, max_new_tokens=1, draft_max=0, priority=BACKGROUND,
                                    ctc_only=True)
        budget = self.options.token_budget(len(x) / SAMPLE_RATE)
        return self._asr.submit(x, self._prompt, max_new_tokens=budget, draft_max=self.options.draft_max,
                                draft=seg.draft, priority=BACKGROUND)

    # -- the worker: waits on the jobs (driving the engine), queues the events -----------------
    def _queue(self, item: tuple, job: Any) -> None:
        if job is not None:
            self._in_work.append(job)
        self._work.put(item)

    def _run(self) -> None:
        try:
            while True:
                item = self._work.get()
                if item is _STOP:
                    return
                if item[0] == "final":
                    self._collect_final(*item[1:])
                else:
                    self._collect_partial(*item[1:])
        except BaseException as e:  # noqa: BLE001 - handed to the caller by feed/finish/iteration
            if self._state != "closed":
                self._error = e
        finally:
            with self._cond:
                self._worker_done = True
                self._cond.notify_all()

    def _done_with(self, job: Any) -> None:
        with self._lock:
            if job in self._in_work:
                self._in_work.remove(job)

    def _collect_final(self, index: int, start: int, end: int, pending: Any) -> None:
        try:  # the job leaves `pending` after its event is out: pending == 0 means all events are queued
            segments = pending.result().segments if pending is not None else []
        except RuntimeError:
            if self._state == "closed":  # cancelled by close()
                return
            raise
        else:
            if self._state != "closed":
                self._emit(FinalSegment(index, _joined(segments, start, end)))
        finally:
            with self._lock:
                self._unfinished.pop(index, None)
            self._done_with(pending)

    def _collect_partial(self, seg: _Open, serial: int, job: Any) -> None:
        try:
            gen = job.result()
        except Exception:  # noqa: BLE001 - cancelled (a newer partial or the final replaced it), or
            pass           # failed: a partial is a hint, the final decides
        else:
            with self._lock:
                if serial == seg.serial and self._state != "closed":
                    self._emit(PartialText(seg.index, seg.start / SAMPLE_RATE, self._partial_text(seg, gen)))
        finally:
            self._done_with(job)

    def _partial_text(self, seg: _Open, gen: Any) -> str:
        if self._partials == "ctc":
            return gen.ctc_text.strip()
        seg.draft = list(gen.tokens)  # the next partial's speculative draft
        return postprocess(gen.text)

    # -- events ------------------------------------------------------------------------------
    def _emit(self, event: StreamEvent) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def _take(self) -> List[StreamEvent]:
        if self._iterating:
            return []
        with self._cond:
            events, self._events = self._events, []
        return events

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the stream failed: {self._error}") from self._error


def _vad_pieces(x: np.ndarray, final: bool) -> list:
    """(piece, final) for the VAD: ``x`` in pieces of at most VAD_PIECE_SECONDS, final on the last."""
    n = int(VAD_PIECE_SECONDS * SAMPLE_RATE)
    pieces = [x[i:i + n] for i in range(0, len(x), n)]
    if not pieces:
        return [(x, True)] if final else []
    return [(piece, final and k == len(pieces) - 1) for k, piece in enumerate(pieces)]


def _joined(segments: list, start: int, end: int) -> Segment:
    """The final's Segment in stream time from the slice's result (one segment, unless the slice
    ran over max_segment_seconds, which the offline path cuts as well)."""
    offset = start / SAMPLE_RATE
    tokens = [t for s in segments for t in s.tokens]
    words = [Word(w.start + offset, w.end + offset, w.text, w.probability) for s in segments for w in s.words]
    text = " ".join(s.text for s in segments)
    return Segment(offset, end / SAMPLE_RATE, text, tokens, any(s.repetition_cut for s in segments), words)


__all__ = ["FinalSegment", "PartialText", "SpeechStarted", "SpeechStopped", "StreamEvent", "TranscriptionStream"]
