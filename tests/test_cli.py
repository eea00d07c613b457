"""The `funasr-cpp` command's own logic: flags left out leave the API's defaults, the help texts
name those defaults, and bad audio files (cut short of their header's length, or without samples)
are reported as `error: FILE: reason` with exit code 1 while the other files are still transcribed.
(Each command's end-to-end runs are in the tests of what it drives: test_transcribe, test_server,
test_ray, test_llm_core.)"""
from __future__ import annotations

import numpy as np
import pytest

from fixtures.speech import write_wav16k
from funasr_cpp.cli import build_parser, common, main
from funasr_cpp.options import LoadOptions, TranscribeOptions


def _parse(*argv):
    return build_parser().parse_args([str(a) for a in argv])


def test_flags_left_out_leave_the_api_defaults():
    for argv in (["transcribe", "x.wav"], ["transcribe-dataset", "in", "-o", "out"], ["serve"]):
        args = _parse(*argv)
        assert common.load_options(args) == {} and common.source_options(args) == {}, argv
    assert common.transcribe_options(_parse("transcribe", "x.wav")) == TranscribeOptions()
    args = _parse("transcribe", "x.wav", "--cpu", "-np", "2", "--kv-type", "f32", "--vad", "none",
                  "--no-repetition-guard", "--no-itn", "--hotwords", "a, b", "--hub", "modelscope")
    assert common.load_options(args) == {"device": "cpu", "n_parallel": 2, "kv_type": "f32"}  # --cpu: --device cpu
    assert common.source_options(args) == {"hub": "modelscope"}
    assert common.transcribe_options(args) == TranscribeOptions(vad=None, repetition_guard=False, itn=False,
                                                                max_tokens_per_second=None, hotwords=("a", "b"))


def test_help_names_the_api_defaults(capsys):
    for command in ("transcribe", "serve"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert f"(default {LoadOptions.n_parallel})" in out and f"(default {LoadOptions.kv_type};" in out
        assert f"(default {TranscribeOptions.max_new_tokens};" in out


def test_help_without_the_native_extension():
    """Building the parser loads no native code: every --help (and convert) works where it is missing."""
    from fixtures.native import run_without_native

    out = run_without_native("""
import sys
from funasr_cpp.cli import main
for argv in ([], ["info"], ["convert"], ["quantize"], ["transcribe"], ["transcribe-dataset"], ["serve"], ["stream"]):
    try:
        main([*argv, "--help"])
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
print("loaded:", *sorted(m for m in sys.modules if m.startswith("funasr_cpp._")))
""")
    assert out.returncode == 0, out.stderr
    assert "funasr_cpp._core" not in out.stdout.split("loaded:")[1], out.stdout


@pytest.fixture(scope="module")
def bad_wavs(tmp_path_factory, speech):
    """The first 60 bytes of a 6.5 s 16-bit WAV (8 of its 104000 samples), and a 44-byte WAV with no samples."""
    tmp = tmp_path_factory.mktemp("bad_wavs")
    full = write_wav16k(tmp / "full.wav", np.resize(speech["zh"], 104000))
    cut = tmp / "cut.wav"
    cut.write_bytes(full.read_bytes()[:60])
    empty = write_wav16k(tmp / "empty.wav", np.zeros(0, np.float32))
    assert empty.stat().st_size == 44
    return cut, empty


def test_truncated_and_empty_wavs_are_errors(soft_gguf, speech_wavs, bad_wavs, capsys):
    llm, mmproj = soft_gguf
    cut, empty = bad_wavs
    good = speech_wavs["speech-zh"]
    rc = main(["transcribe", "--llm", str(llm), "--mmproj", str(mmproj), "-t", "1", "--max-new-tokens", "4",
               str(cut), str(empty), str(good)])
    out, err = capsys.readouterr()
    assert rc == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, err
    assert errors[0].startswith(f"error: {cut}: ") and "truncated" in errors[0]
    assert "104000 samples" in errors[0] and "8 samples" in errors[0]  # both lengths
    assert errors[1].startswith(f"error: {empty}: ") and "no audio samples" in errors[1]
    assert len(out.splitlines()) == 1 and out.strip()  # the good file is still transcribed
