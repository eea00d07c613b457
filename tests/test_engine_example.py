"""The engine without Python: examples/transcribe.cpp (installed as funasr_cpp/lib/funasr-transcribe)
transcribes the fixtures' WAVs with the GGUF pair to the tokens funasr_cpp.Model gives (the Model is
checked against upstream by the parity tests), and fails clearly on a missing file or a wrong GGUF."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import funasr_cpp
from funasr_cpp import Model

PROGRAM = Path(funasr_cpp.__file__).resolve().parent / "lib" / "funasr-transcribe"
N_TOKENS = 12


def run(*args) -> subprocess.CompletedProcess:
    # a plain executable: no Python in its process (nothing of the interpreter's environment needed)
    return subprocess.run([str(PROGRAM), *map(str, args)], capture_output=True, text=True, errors="replace", timeout=300,
                          env={"PATH": "/usr/bin:/bin"})


def tokens_of(out: str) -> list[int]:
    last = out.rstrip("\n").split("\n")[-1]
    return [int(t) for t in last.split()]


def test_program_is_installed():
    assert PROGRAM.is_file(), PROGRAM
    libs = subprocess.run(["ldd", str(PROGRAM)], capture_output=True, text=True).stdout
    assert "libpython" not in libs and "libfunasr-engine.so" in libs


@pytest.mark.parametrize("pair", ["soft_gguf", "ctc_gguf"])
def test_same_tokens_as_the_model(request, pair, speech_wavs):
    llm, mmproj = request.getfixturevalue(pair)
    with Model(llm, mmproj, n_threads=2) as model:
        for name, wav in sorted(speech_wavs.items()):
            res = run("-m", llm, "--mmproj", mmproj, "-t", 2, "-n", N_TOKENS, "--tokens", wav)
            assert res.returncode == 0, res.stderr
            want = model.transcribe(wav, vad=None, max_new_tokens=N_TOKENS,
                                    max_tokens_per_second=None, repetition_guard=False)
            assert tokens_of(res.stdout) == want.segments[0].tokens, name


def test_errors(soft_gguf, speech_wavs, tmp_path):
    llm, mmproj = soft_gguf
    wav = next(iter(speech_wavs.values()))
    res = run("-m", llm, "--mmproj", mmproj, tmp_path / "missing.wav")
    assert res.returncode == 1 and "error: cannot open" in res.stderr and "missing.wav" in res.stderr
    res = run("-m", tmp_path / "missing.gguf", "--mmproj", mmproj, wav)
    assert res.returncode == 1 and "GGUF file not found" in res.stderr and "missing.gguf" in res.stderr
    res = run("-m", llm, "--mmproj", llm, wav)  # the LLM given as the mmproj
    assert res.returncode == 1 and "error: " in res.stderr and str(llm) in res.stderr
    cut = tmp_path / "cut.wav"
    cut.write_bytes(Path(wav).read_bytes()[:60])
    res = run("-m", llm, "--mmproj", mmproj, cut)
    assert res.returncode == 1 and "cut.wav" in res.stderr and "declares" in res.stderr
    res = run("-m", llm, wav)
    assert res.returncode == 2 and "usage:" in res.stderr
