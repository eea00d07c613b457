"""End to end through the stock llama-mtmd-cli: same greedy text as upstream funasr AutoModel.generate."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from fixtures.checkpoint import soften_attention, write_checkpoint
from fixtures.speech import espeak, write_wav16k  # noqa: F401  (other test modules import them from here)
from fixtures.upstream import load_automodel, no_dither
from funasr_cpp.converters import convert

# Generated tokens per run (upstream max_length, CLI -n). Random weights never say <|im_end|>;
# shorter runs keep the comparison clear of the near-tied logits a long random text meets.
MAX_TOKENS = 64
SPEECH = {"zh": "今天天气很好，我们去公园散步吧。", "en": "The quick brown fox jumps over the lazy dog."}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    folder = tmp / "nano"
    write_checkpoint(folder, seed=0, ctc=False)
    soften_attention(folder)  # long greedy runs stay comparable (see soften_attention)
    llm, mmproj = convert(folder, tmp / "gguf", llm_type="f32", mmproj_type="f32", progress=False)
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    audios = {
        "speech-zh": espeak(SPEECH["zh"], "cmn", tmp),
        "speech-en": espeak(SPEECH["en"], "en", tmp),
        "tone": (0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 0.5 * t)).astype(np.float32),
        "noise": (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32),
    }
    wavs = {name: write_wav16k(tmp / f"{name}.wav", x) for name, x in audios.items()}
    return folder, llm, mmproj, wavs


@pytest.fixture(scope="module")
def upstream(setup):
    folder, _, _, wavs = setup
    with no_dither():
        model = load_automodel(folder)
        # upstream's first generate() writes the audio rows into a still-bf16 embedding tensor
        # (fun-asr-nano.md §7.5); from the second call on it runs in fp32, which we reproduce
        model.generate(input=[str(wavs["tone"])], cache={}, batch_size=1, max_length=4)
        return {name: model.generate(input=[str(w)], cache={}, batch_size=1, max_length=MAX_TOKENS)[0]["text"]
                for name, w in wavs.items()}


def special_tokens(folder: Path) -> list[str]:
    tok = json.loads((folder / "Qwen3-0.6B/tokenizer.json").read_text())
    return [a["content"] for a in tok["added_tokens"] if a["special"]]


def mtmd_cli(llm: Path, mmproj: Path, wav: Path, extra=()) -> bytes:
    env = dict(os.environ, PATH=sysconfig.get_path("scripts") + os.pathsep + os.environ.get("PATH", ""))
    exe = shutil.which("llama-mtmd-cli", path=env["PATH"])
    cmd = [exe, "-m", str(llm), "--mmproj", str(mmproj), "--audio", str(wav), "-p", "语音转写：<__media__>",
           "--jinja", "--temp", "0", "-n", str(MAX_TOKENS), "-c", "4096", "-t", "2", "-fa", "off", "--no-warmup",
           "-ctk", "f32", "-ctv", "f32", *extra]  # f32 KV cache: upstream runs the LLM in fp32
    out = subprocess.run(cmd, capture_output=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # stdout: a newline once the prompt is evaluated, then the generated pieces (raw bytes:
    # a piece can be part of a UTF-8 character)
    assert out.stdout.startswith(b"\n"), out.stdout[:50]
    return out.stdout[1:]


def postprocess(raw: bytes, specials: list[str]) -> str:
    """What upstream does to the generated ids: skip special tokens, decode the bytes
    (invalid UTF-8 replaced, as tokenizers does), /sil -> space, collapse whitespace."""
    for s in specials:
        raw = raw.replace(s.encode(), b"")
    text = raw.decode("utf-8", errors="replace")
    return re.sub(r"\s+", " ", text.replace("/sil", " "))


@pytest.mark.parametrize("name", ["speech-zh", "speech-en", "tone", "noise"])
def test_mtmd_cli_text_equals_funasr(setup, upstream, name):
    folder, llm, mmproj, wavs = setup
    ours = postprocess(mtmd_cli(llm, mmproj, wavs[name]), special_tokens(folder))
    # the CLI ends its output with a newline when it meets <|im_end|>: compare up to trailing space
    assert ours.rstrip() == upstream[name].rstrip()
    assert len(upstream[name]) > 0


def test_long_audio_is_chunked_not_crashed(setup, tmp_path):
    """70 s: three 30 s-or-shorter chunks back to back in one prompt; a sub-frame tail is fine."""
    _, llm, mmproj, _ = setup
    rng = np.random.default_rng(1)
    wav = write_wav16k(tmp_path / "long.wav", (0.05 * rng.standard_normal(16000 * 70 + 123)).astype(np.float32))
    env = dict(os.environ, PATH=sysconfig.get_path("scripts") + os.pathsep + os.environ.get("PATH", ""))
    out = subprocess.run([shutil.which("llama-mtmd-cli", path=env["PATH"]), "-m", str(llm), "--mmproj", str(mmproj),
                          "--audio", str(wav), "-p", "语音转写：<__media__>", "--jinja", "--temp", "0", "-n", "8",
                          "-c", "4096", "-t", "2", "--no-warmup"], capture_output=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # text, 30 s, 30 s, 10 s, text: the three audio chunks are encoded one by one
    assert out.stderr.count(b"encoding mtmd batch") == 3 and b"done = 3, total = 5" in out.stderr, out.stderr[-2000:]


def test_audio_shorter_than_one_frame(setup, tmp_path):
    """< 25 ms of audio gives no audio rows, and the CLI still answers."""
    _, llm, mmproj, _ = setup
    wav = write_wav16k(tmp_path / "tiny.wav", np.zeros(300, np.float32))
    env = dict(os.environ, PATH=sysconfig.get_path("scripts") + os.pathsep + os.environ.get("PATH", ""))
    out = subprocess.run([shutil.which("llama-mtmd-cli", path=env["PATH"]), "-m", str(llm), "--mmproj", str(mmproj),
                          "--audio", str(wav), "-p", "语音转写：<__media__>", "--jinja", "--temp", "0", "-n", "4",
                          "-c", "4096", "-t", "2", "--no-warmup"], capture_output=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
