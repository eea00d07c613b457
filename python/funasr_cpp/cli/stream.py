"""``funasr-cpp stream``: live transcription (:meth:`funasr_cpp.Model.stream`) of a file fed at
real-time pace, of raw PCM read from stdin, or of the microphone.

Audio goes to the stream in chunks of ``CHUNK_SECONDS``; the events each ``feed`` returns are
printed as they come: on a terminal the open sentence's partial text rewrites one line and each
final prints on its own line with its times; elsewhere only the finals, one per line; with
``--jsonl`` every event as one JSON object per line. The first Ctrl-C (SIGINT) ends the input: the
stream is finished (the open sentence becomes a final) and the command exits with 130; a second
one aborts at once."""
from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import signal
import sys
import time
import unicodedata
from typing import Iterator, Optional

import numpy as np

from ..audio import SAMPLE_RATE, load_audio
from . import common

CHUNK_SECONDS = 0.1                  # audio per feed call: the pace of a live source
PCM_FORMATS = {"s16le": "<i2", "f32le": "<f4"}
DEFAULT_RATE, DEFAULT_CHANNELS = 16000, 1
EXIT_INTERRUPTED = 130               # 128 + SIGINT, what a shell reports for Ctrl-C
MIC_INSTALL = "pip install 'funasr-cpp[mic]'"
#: the "type" of each event in --jsonl (the event classes of funasr_cpp.streaming)
EVENT_TYPES = {"SpeechStarted": "speech_started", "PartialText": "partial", "FinalSegment": "final",
               "SpeechStopped": "speech_stopped"}


def add_parser(sub) -> None:
    st = sub.add_parser(
        "stream", help="live transcription: a file at real-time pace, raw PCM from stdin, or the microphone",
        description="Transcribe audio while it arrives. The streaming FSMN-VAD (--vad-model) closes sentences; "
                    "while one is open its partial text is refreshed every --partial-interval seconds, and at its "
                    "close the full decode of the sentence is printed as a final (the same text as `transcribe` "
                    "of that slice). FILE is fed at real-time pace (--fast: as fast as possible); '-' reads raw "
                    "PCM from stdin (e.g. `arecord -f S16_LE -r 16000 -c 1 | funasr-cpp stream -m M "
                    "--vad-model fsmn-vad -`); --mic records from the default input device (needs "
                    f"{MIC_INSTALL}). On a terminal the partial rewrites one line and each final prints as "
                    "'[start → end] text'; otherwise only the finals print, one per line; --jsonl prints every "
                    "event as a JSON object per line. Ctrl-C finishes the stream (the open sentence is decoded "
                    "and printed) and exits with 130; a second Ctrl-C aborts. Exit codes: 0 done, 1 an error "
                    "(unreadable input, model, --mic without sounddevice), 2 bad flags, 130 interrupted.")
    st.add_argument("source", nargs="?", metavar="FILE | -",
                    help="audio file (any format `transcribe` reads), or - for raw PCM on stdin")
    inp = st.add_argument_group("input")
    inp.add_argument("--mic", action="store_true", help=f"record from the default microphone ({MIC_INSTALL})")
    inp.add_argument("--fast", action="store_true", help="feed FILE as fast as possible, not at real-time pace")
    inp.add_argument("--format", choices=sorted(PCM_FORMATS), default=None,
                     help="raw PCM sample format on stdin (default s16le: 16-bit little-endian; f32le: float)")
    inp.add_argument("--rate", type=int, default=None, metavar="HZ",
                     help=f"sample rate of stdin or --mic (default {DEFAULT_RATE}; resampled to 16 kHz)")
    inp.add_argument("--channels", type=int, default=None, metavar="N",
                     help=f"interleaved channels of stdin or --mic (default {DEFAULT_CHANNELS}; averaged)")
    common.add_model_args(st)
    common.add_decoding_args(st)
    out = st.add_argument_group("live output")
    common.add_partial_args(out, note=". Only computed when shown (a terminal, or --jsonl)")
    out.add_argument("--word-timestamps", action="store_true",
                     help="per-token times of the finals from the CTC head (--jsonl: words)")
    out.add_argument("--jsonl", action="store_true", help="every event as one JSON object per line")
    common.add_engine_args(out)
    st.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not common.check_model_flags(args):
        return 2
    problem = _flag_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.mic and not _have_sounddevice():
        return common.error(f"--mic needs the sounddevice package: {MIC_INSTALL}")
    try:
        options = common.transcribe_options(args)
        if args.source not in (None, "-"):
            # read whole, before the model loads: a bad file fails at once (its samples stay in memory)
            audio = load_audio(args.source)
        model = _load(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except common.USER_ERRORS as exc:
        return common.error(exc)
    stop = _StopOnInterrupt()  # the sources end when it is requested
    chunks = (_mic_chunks(args, stop) if args.mic else _stdin_chunks(args, stop) if args.source == "-"
              else _file_chunks(audio, stop, paced=not args.fast))
    with model:
        try:
            return _transcribe(model, options, args, chunks, stop)
        except KeyboardInterrupt:  # the second Ctrl-C: abort without finishing
            return EXIT_INTERRUPTED


def _flag_problem(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the input flags (exit 2), or None."""
    if args.mic == (args.source is not None):
        return "give FILE, - (raw PCM on stdin) or --mic: exactly one"
    raw = args.mic or args.source == "-"
    for flag, applies in (("format", args.source == "-"), ("rate", raw), ("channels", raw), ("fast", not raw)):
        if getattr(args, flag) not in (None, False) and not applies:
            return f"--{flag} does not apply to " + ("--mic" if args.mic else "stdin" if raw else "a FILE")
    for flag in ("rate", "channels"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            return f"--{flag} must be positive, got {value}"
    if args.vad == "energy":
        return "--vad energy cuts finished recordings; stream takes --vad fsmn/auto (the streaming FSMN-VAD) or none"
    return common.check_partial_interval(args)


def _have_sounddevice() -> bool:
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):  # OSError: the package without its PortAudio library
        return False
    return True


def _load(args: argparse.Namespace):
    """The model; checked for word timestamps, and for a VAD model unless --vad none."""
    model = common.load_model(args, common.load_options(args))
    try:
        if args.word_timestamps:
            model.check_word_timestamps()
        if model.vad is None and args.vad != "none":
            raise ValueError("stream closes sentences with the streaming FSMN-VAD: give --vad-model (e.g. "
                             "--vad-model fsmn-vad), or --vad none for one segment ended by the end of the input")
    except ValueError:
        model.close()
        raise
    return model


def _transcribe(model, options, args: argparse.Namespace, chunks: Iterator[np.ndarray],
                stop: "_StopOnInterrupt") -> int:
    """Feed the chunks and print the events; 130 after a Ctrl-C, 1 after an error, else 0."""
    printer = _Printer(jsonl=args.jsonl, tty=sys.stdout.isatty())
    raw = args.mic or args.source == "-"
    rate = (args.rate or DEFAULT_RATE) if raw else SAMPLE_RATE  # a FILE is loaded at 16 kHz
    try:
        stream = model.stream(options, **_stream_overrides(args, printer))
    except common.USER_ERRORS as exc:  # e.g. --partials ctc on a checkpoint without the CTC head
        return common.error(exc)
    rc = 0
    with stop, stream:
        try:
            for chunk in chunks:
                printer.show(stream.feed(chunk, rate))
        except common.USER_ERRORS as exc:  # e.g. NaN in f32le input: what came before is still finished
            printer.end()
            rc = common.error(f"{'stdin' if args.source == '-' else args.source or 'microphone'}: {exc}")
        try:
            printer.show(stream.finish())
        except common.USER_ERRORS as exc:
            rc = common.error(exc)
        printer.end()
    return EXIT_INTERRUPTED if stop.requested else rc


def _stream_overrides(args: argparse.Namespace, printer: "_Printer") -> dict:
    """Model.stream's keywords of the flags given; no partials when only finals are printed."""
    overrides = common.partial_overrides(args)
    if not (printer.jsonl or printer.tty):
        overrides["partials"] = None  # no partial work in the engine for text nobody sees
    return overrides


class _StopOnInterrupt:
    """Within ``with``: the first SIGINT only sets ``requested`` (the loop then finishes the stream),
    the second raises KeyboardInterrupt as usual."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)
        return False


# ------------------------------------------------------------------------------ the sources
def _file_chunks(audio: np.ndarray, stop: "_StopOnInterrupt", *, paced: bool) -> Iterator[np.ndarray]:
    """16 kHz samples in CHUNK_SECONDS chunks, until the end or a stop; paced: each one when the audio
    clock reaches its end (as a recorder delivers it)."""
    n = int(SAMPLE_RATE * CHUNK_SECONDS)
    start = time.monotonic()
    for i in range(0, len(audio), n):
        chunk = audio[i:i + n]
        if paced:
            delay = start + (i + len(chunk)) / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if stop.requested:
            return
        yield chunk


def _stdin_chunks(args: argparse.Namespace, stop: "_StopOnInterrupt") -> Iterator[np.ndarray]:
    """Raw interleaved PCM from stdin in CHUNK_SECONDS chunks, mono (channels averaged), until its end
    or a stop (a read under way completes first: a Ctrl-C in a shell stops the writer too, e.g. arecord)."""
    dtype = np.dtype(PCM_FORMATS[args.format or "s16le"])
    channels = args.channels or DEFAULT_CHANNELS
    frame = dtype.itemsize * channels
    want = max(1, int((args.rate or DEFAULT_RATE) * CHUNK_SECONDS)) * frame
    while not stop.requested:
        data = sys.stdin.buffer.read(want)  # blocks until a whole chunk (or the end) is there
        if not data:
            return
        whole = len(data) - len(data) % frame
        if whole < len(data):
            print(f"warning: stdin ended {len(data) - whole} bytes into a frame of {frame}; they are ignored",
                  file=sys.stderr)
        if whole:
            yield _mono(np.frombuffer(data[:whole], dtype).reshape(-1, channels))


def _mono(frames: np.ndarray) -> np.ndarray:
    """[frames, channels] -> 1-D; one channel is passed as it is (int16 stays int16: the stream scales
    it as `transcribe` scales a 16-bit WAV), more are averaged in float32."""
    if frames.shape[1] == 1:
        return frames[:, 0].astype(frames.dtype.newbyteorder("="))
    x = frames.astype(np.float32)
    if np.issubdtype(frames.dtype, np.integer):
        x *= 1.0 / 32768
    return x.mean(axis=1)


def _mic_chunks(args: argparse.Namespace, stop: "_StopOnInterrupt") -> Iterator[np.ndarray]:
    """The default input device in CHUNK_SECONDS blocks (sounddevice's callback fills a queue) until a
    stop; then the device closes and the blocks it recorded before are still fed."""
    import sounddevice as sd

    rate, channels = args.rate or DEFAULT_RATE, args.channels or DEFAULT_CHANNELS
    blocks: "queue.Queue[np.ndarray]" = queue.Queue()

    def callback(indata, frames, time_info, status):
        if status:
            print(f"warning: microphone: {status}", file=sys.stderr)
        blocks.put(indata.copy())

    try:
        device = sd.InputStream(samplerate=rate, channels=channels, dtype="float32",
                                blocksize=int(rate * CHUNK_SECONDS), callback=callback)
    except sd.PortAudioError as exc:  # no input device, a rate or channel count it cannot do, ...
        raise RuntimeError(f"cannot open the microphone: {exc}") from None
    with device:
        while not stop.requested:
            try:
                yield _mono(blocks.get(timeout=CHUNK_SECONDS))
            except queue.Empty:
                yield np.zeros(0, np.float32)  # lets the loop see a stop and collect finished events
    while not blocks.empty():
        yield _mono(blocks.get())


# ------------------------------------------------------------------------------ the output
def event_dict(event) -> dict:
    """An event as JSON-ready data: {"type": ..., its fields}; a final's segment is spread out
    (start, end, text, tokens, words, ...)."""
    d: dict = {"type": EVENT_TYPES.get(type(event).__name__, type(event).__name__)}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if dataclasses.is_dataclass(value):
            d.update(dataclasses.asdict(value))
        else:
            d[f.name] = value
    return d


def final_line(segment) -> str:
    return f"[{segment.start:.2f} → {segment.end:.2f}] {segment.text.strip()}"


class _Printer:
    """Prints events on stdout: JSON lines, or finals (and, on a terminal, the partial line)."""

    def __init__(self, *, jsonl: bool, tty: bool):
        self.jsonl, self.tty = jsonl, tty
        self._partial_shown = False

    def show(self, events) -> None:
        for ev in events:
            kind = EVENT_TYPES.get(type(ev).__name__)
            if self.jsonl:
                self._write(json.dumps(event_dict(ev), ensure_ascii=False) + "\n")
            elif kind == "final":
                self._write(self._clear() + final_line(ev.segment) + "\n")
            elif kind == "partial" and self.tty:
                self._write(self._clear() + _tail_fitting(ev.text.strip(), _columns() - 1))
                self._partial_shown = True
        sys.stdout.flush()

    def end(self) -> None:
        if self._partial_shown:
            self._write(self._clear())
            sys.stdout.flush()

    def _clear(self) -> str:
        """Back to the start of the partial line and erase it (nothing when none is shown)."""
        shown, self._partial_shown = self._partial_shown, False
        return "\r\x1b[K" if shown else ""

    @staticmethod
    def _write(text: str) -> None:
        sys.stdout.write(text)


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size().columns


def _tail_fitting(text: str, columns: int) -> str:
    """The end of ``text`` that fits ``columns`` terminal cells (wide CJK characters take two): the
    partial line must not wrap, or \\r would no longer return to its start."""
    width, i = 0, len(text)
    while i > 0:
        w = 2 if unicodedata.east_asian_width(text[i - 1]) in ("W", "F") else 1
        if width + w > columns:
            break
        width += w
        i -= 1
    return text[i:]
