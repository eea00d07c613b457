"""`funasr-cpp stream` (funasr_cpp/cli/stream.py): the command drives Model.stream, so its finals must
be exactly those of Model.stream fed the same audio in the same chunks (CHUNK_SECONDS), whatever the
input door: a WAV file (--fast), raw s16le or f32le PCM on stdin, --mic through a stand-in sounddevice
that records the file and then presses Ctrl-C. Then --mic without sounddevice (a clear error
naming the extra), Ctrl-C during a real-time stream (exit 130, the finals so far printed), bad
PCM, the flag errors, and the output forms (JSON lines, the terminal's partial line).

Oracle: Model.stream itself (tests/test_streaming.py holds its finals to `transcribe` of each
slice and its cuts to the streaming VAD, which test_vad_stream.py holds to upstream). Models: the
soft fixture pair with a random-weight FSMN-VAD that hears loudness (fixtures/vad_checkpoint.py),
on speech with pauses. Every subprocess runs under a timeout; nothing asserts on wall time."""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from fixtures.cli import run_cli, scripts_path_env
from fixtures.speech import write_wav16k
from fixtures.vad_clips import vad_clips
from funasr_cpp.audio import load_audio
from funasr_cpp.cli import main
from funasr_cpp.cli.stream import CHUNK_SECONDS, EXIT_INTERRUPTED, MIC_INSTALL, _Printer, event_dict, final_line
from funasr_cpp.options import TranscribeOptions

SR = 16000
MAX_NEW_TOKENS = 6  # short finals: the command's logic is under test, not decoding
TIMEOUT = 120       # seconds for one command (a model load plus a --fast pass of ~20 s of audio)


@pytest.fixture(scope="module")
def pauses_wav(speech, tmp_path_factory):
    """~20 s: sentences with pauses of 0.8 to 3 s, as a 16-bit WAV."""
    return write_wav16k(tmp_path_factory.mktemp("cli-stream") / "pauses.wav", vad_clips(speech)["pauses"])


@pytest.fixture(scope="module")
def model_args(soft_gguf, vad_gguf):
    llm, mmproj = soft_gguf
    return ["--llm", llm, "--mmproj", mmproj, "--vad-model", vad_gguf, "-t", "1", "--max-new-tokens",
            MAX_NEW_TOKENS]


@pytest.fixture(scope="module")
def api_finals(soft_gguf, vad_gguf, pauses_wav):
    """Model.stream's finals for the WAV fed in the command's chunks: (index, start, end, text, tokens)."""
    from funasr_cpp import Model

    x = load_audio(pauses_wav)
    n = int(SR * CHUNK_SECONDS)
    events = []
    with Model(*soft_gguf, vad_model=vad_gguf, n_threads=1) as model, \
            model.stream(TranscribeOptions(max_new_tokens=MAX_NEW_TOKENS)) as stream:
        for i in range(0, len(x), n):
            events += stream.feed(x[i:i + n], SR)
        events += stream.finish()
    finals = [_final(event_dict(ev)) for ev in events if event_dict(ev)["type"] == "final"]
    assert len(finals) >= 3, finals  # the recording has four sentences: the test needs several finals
    return finals


def _final(d: dict) -> tuple:
    return d["index"], d["start"], d["end"], d["text"], d["tokens"]


def _jsonl_finals(stdout: str) -> list:
    events = [json.loads(line) for line in stdout.splitlines()]
    assert {e["type"] for e in events} <= {"speech_started", "partial", "final", "speech_stopped"}, events
    return [_final(e) for e in events if e["type"] == "final"]


def _run_stdin(args, data: bytes) -> subprocess.CompletedProcess:
    env = scripts_path_env()
    exe = shutil.which("funasr-cpp", path=env["PATH"])
    out = subprocess.run([exe, *map(str, args)], input=data, capture_output=True, env=env, timeout=TIMEOUT)
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(), out.stderr.decode())


def test_file_fast_jsonl_equals_model_stream(model_args, pauses_wav, api_finals):
    out = run_cli("stream", *model_args, "--fast", "--jsonl", pauses_wav, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert _jsonl_finals(out.stdout) == api_finals


def test_file_fast_plain_prints_the_finals_only(model_args, pauses_wav, api_finals):
    """Not a terminal: one line per final, '[start → end] text', no partials."""
    out = run_cli("stream", *model_args, "--fast", pauses_wav, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stdout
    assert out.stdout.splitlines() == [f"[{s:.2f} → {e:.2f}] {text.strip()}" for _, s, e, text, _ in api_finals]


@pytest.mark.parametrize("fmt", ["s16le", "f32le"])
def test_stdin_pcm_equals_the_file(model_args, pauses_wav, api_finals, fmt):
    """The WAV's samples as raw PCM on stdin: s16le as stored, f32le as load_audio scales them (the same
    floats the stream makes of int16)."""
    x = load_audio(pauses_wav)
    data = (np.round(x * 32768).astype("<i2") if fmt == "s16le" else x.astype("<f4")).tobytes()
    out = _run_stdin(["stream", *model_args, "--jsonl", "--format", fmt, "-"], data)
    assert out.returncode == 0, out.stderr
    assert _jsonl_finals(out.stdout) == api_finals


def test_stdin_stereo_at_another_rate_is_accepted(model_args, pauses_wav):
    """--rate/--channels: 2 channels at 8 kHz (the channels averaged, the stream resamples): a clean run
    with finals (their exact values belong to the resampler; Model.stream's tests hold those)."""
    x = load_audio(pauses_wav)[::2]
    data = np.stack([x, x], axis=1).astype("<f4").tobytes()
    out = _run_stdin(["stream", *model_args, "--jsonl", "--format", "f32le", "--rate", 8000, "--channels", 2, "-"],
                     data)
    assert out.returncode == 0, out.stderr
    assert _jsonl_finals(out.stdout)


def test_bad_pcm_on_stdin_is_an_error_after_the_finals_before_it(model_args, pauses_wav, api_finals):
    """NaN in f32le input: 'error: stdin: ...' and exit 1; the audio before it is still finished."""
    x = load_audio(pauses_wav).astype("<f4")
    # a second into the second segment (the VAD closed the first before it opened this one), at a
    # chunk boundary: the NaN chunk is rejected whole
    chunk = int(SR * CHUNK_SECONDS)
    cut = int((api_finals[1][1] + 1.0) * SR) // chunk * chunk
    data = np.concatenate([x[:cut], np.full(10, np.nan, "<f4")]).tobytes()
    out = _run_stdin(["stream", *model_args, "--jsonl", "--format", "f32le", "-"], data)
    assert out.returncode == 1
    assert out.stderr.startswith("error: stdin: ") and "NaN" in out.stderr, out.stderr
    assert _jsonl_finals(out.stdout)[0] == api_finals[0]


def test_stream_options_the_model_cannot_do_exit_1(model_args, pauses_wav):
    """--partials ctc on a checkpoint without the CTC head: Model.stream's error, before any audio."""
    out = run_cli("stream", *model_args, "--fast", "--jsonl", "--partials", "ctc", pauses_wav, timeout=TIMEOUT)
    assert out.returncode == 1 and out.stderr.startswith("error: ") and "CTC" in out.stderr, out.stderr
    assert out.stdout == ""


def test_mic_without_sounddevice_says_how_to_install_it(tmp_path):
    """sounddevice hidden by a meta-path finder: exit 1 and the pip command, before any model is loaded."""
    code = f"""
import importlib.abc, sys
class NoSoundDevice(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice" or name.startswith("sounddevice."):
            raise ImportError("sounddevice is hidden (test)")
sys.meta_path.insert(0, NoSoundDevice())
from funasr_cpp.cli import main
sys.exit(main(["stream", "--mic", "--llm", {str(tmp_path / 'missing.gguf')!r}, "--mmproj", "x.gguf"]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("error: --mic needs the sounddevice package") and MIC_INSTALL in out.stderr
    assert "Traceback" not in out.stderr


# a stand-in for sounddevice: InputStream delivers the samples of $FAKE_MIC_NPY (float32, 16 kHz) through
# the callback in blocks of `blocksize` from a thread, then sends the process SIGINT (Ctrl-C)
FAKE_SOUNDDEVICE = """
import os, signal, threading
import numpy as np

class PortAudioError(Exception):
    pass

class InputStream:
    def __init__(self, samplerate, channels, dtype, blocksize, callback):
        assert (samplerate, channels, dtype) == (16000, 1, "float32"), (samplerate, channels, dtype)
        self.blocksize, self.callback = blocksize, callback
        self.thread = threading.Thread(target=self._record, daemon=True)

    def _record(self):
        x = np.load(os.environ["FAKE_MIC_NPY"])
        for i in range(0, len(x), self.blocksize):
            block = x[i:i + self.blocksize, None]
            self.callback(block, len(block), None, None)
        os.kill(os.getpid(), signal.SIGINT)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        return False
"""


def test_mic_feeds_every_block_recorded_before_ctrl_c(model_args, pauses_wav, api_finals, tmp_path):
    """--mic through a stand-in sounddevice that records the WAV, then Ctrl-C: the blocks still queued
    at the Ctrl-C are fed, so the finals are the file's; exit 130."""
    (tmp_path / "sounddevice.py").write_text(FAKE_SOUNDDEVICE)
    np.save(tmp_path / "mic.npy", load_audio(pauses_wav))
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "FAKE_MIC_NPY": str(tmp_path / "mic.npy")}
    out = run_cli("stream", *model_args, "--jsonl", "--mic", timeout=TIMEOUT, env=env)
    assert out.returncode == EXIT_INTERRUPTED, out.stderr
    assert _jsonl_finals(out.stdout) == api_finals


def test_ctrl_c_finishes_the_stream(model_args, pauses_wav, api_finals):
    """SIGINT after the first final of a real-time stream: exit 130, that final printed, and the open
    sentence (if any) finished as one more final line."""
    env = scripts_path_env()
    exe = shutil.which("funasr-cpp", path=env["PATH"])
    proc = subprocess.Popen([exe, "stream", *map(str, model_args), str(pauses_wav)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    lines: "queue.Queue[bytes]" = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        first = lines.get(timeout=TIMEOUT).decode().rstrip("\n")
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    rest = []
    while not lines.empty():
        rest.append(lines.get().decode().rstrip("\n"))
    err = proc.stderr.read().decode()
    assert rc == EXIT_INTERRUPTED, err
    _, s, e, text, _ = api_finals[0]
    assert first == f"[{s:.2f} → {e:.2f}] {text.strip()}"
    assert len(rest) <= len(api_finals) and all(line.startswith("[") and " → " in line for line in rest), rest
    assert "Traceback" not in err, err


@pytest.mark.parametrize("argv, message", [
    ([], "exactly one"),
    (["x.wav", "--mic"], "exactly one"),
    (["x.wav", "--format", "f32le"], "--format does not apply to a FILE"),
    (["-", "--fast"], "--fast does not apply to stdin"),
    (["-", "--rate", "0"], "--rate must be positive"),
    (["-", "--channels", "-1"], "--channels must be positive"),
    (["-", "--partial-interval", "0"], "--partial-interval must be positive"),
    (["-", "--vad", "energy"], "--vad energy cuts finished recordings"),
])
def test_bad_flags_exit_2(argv, message, capsys):
    assert main(["stream", *argv]) == 2
    assert message in capsys.readouterr().err


def test_unreadable_file_and_missing_vad_model_exit_1(soft_gguf, tmp_path, capsys):
    llm, mmproj = soft_gguf
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["stream", "--llm", str(llm), "--mmproj", str(mmproj), str(bad)]) == 1
    assert capsys.readouterr().err.startswith("error: cannot read audio")
    wav = write_wav16k(tmp_path / "quiet.wav", np.zeros(SR, np.float32))
    assert main(["stream", "--llm", str(llm), "--mmproj", str(mmproj), "-t", "1", str(wav)]) == 1
    assert "--vad-model" in capsys.readouterr().err


def test_terminal_partial_line_is_rewritten(capsys):
    """On a terminal a partial rewrites one line (\\r + erase) and a final replaces it on its own line."""
    from funasr_cpp.streaming import FinalSegment, PartialText
    from funasr_cpp.types import Segment

    printer = _Printer(jsonl=False, tty=True)
    printer.show([PartialText(0, 0.5, "hello"), PartialText(0, 0.5, "hello wor")])
    printer.show([FinalSegment(0, Segment(0.5, 1.25, " hello world", [1, 2]))])
    printer.show([PartialText(1, 2.0, "next")])
    printer.end()
    assert capsys.readouterr().out == ("hello" + "\r\x1b[Khello wor" + "\r\x1b[K[0.50 → 1.25] hello world\n"
                                       + "next" + "\r\x1b[K")
    assert final_line(Segment(12.344, 15.666, "x")) == "[12.34 → 15.67] x"


def test_jsonl_event_forms():
    from funasr_cpp.streaming import FinalSegment, PartialText, SpeechStarted, SpeechStopped
    from funasr_cpp.types import Segment, Word

    seg = Segment(0.5, 1.25, "hi", [7], words=[Word(0.5, 0.75, "hi", 0.9)])
    assert event_dict(SpeechStarted(0.5, 0)) == {"type": "speech_started", "time": 0.5, "index": 0}
    assert event_dict(PartialText(0, 0.5, "h")) == {"type": "partial", "index": 0, "start": 0.5, "text": "h"}
    assert event_dict(SpeechStopped(1.25, 0)) == {"type": "speech_stopped", "time": 1.25, "index": 0}
    final = event_dict(FinalSegment(0, seg))
    assert final["type"] == "final" and final["index"] == 0
    assert (final["start"], final["end"], final["text"], final["tokens"]) == (0.5, 1.25, "hi", [7])
    assert final["words"] == [{"start": 0.5, "end": 0.75, "text": "hi", "probability": 0.9}]


def test_help_without_the_native_extension():
    """`stream --help` builds without loading native code (as every command's help, test_cli.py)."""
    from fixtures.native import run_without_native

    out = run_without_native("""
import sys
from funasr_cpp.cli import main
try:
    main(["stream", "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
print("loaded:", *sorted(m for m in sys.modules if m.startswith("funasr_cpp._")))
""")
    assert out.returncode == 0, out.stderr
    assert "--partial-interval" in out.stdout and "funasr_cpp._core" not in out.stdout.split("loaded:")[1]
