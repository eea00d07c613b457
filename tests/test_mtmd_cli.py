"""End to end through the stock llama-mtmd-cli: same greedy text as upstream funasr AutoModel.generate."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from fixtures.cli import mtmd_cli, mtmd_cli_exe, postprocess, run_llama_server, special_tokens
from fixtures.speech import write_wav16k


@pytest.fixture(scope="module")
def setup(tmp_path_factory, soft_release, soft_gguf, speech_wavs):
    tmp = tmp_path_factory.mktemp("e2e")
    llm, mmproj = soft_gguf
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    audios = {
        "tone": (0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 0.5 * t)).astype(np.float32),
        "noise": (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32),
    }
    wavs = {**speech_wavs, **{name: write_wav16k(tmp / f"{name}.wav", x) for name, x in audios.items()}}
    return soft_release, llm, mmproj, wavs


@pytest.fixture(scope="module")
def upstream(setup, soft_upstream):
    _, _, _, wavs = setup
    return {name: soft_upstream.generate(w)["text"] for name, w in wavs.items()}


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
    exe, env = mtmd_cli_exe()
    out = subprocess.run([exe, "-m", str(llm), "--mmproj", str(mmproj),
                          "--audio", str(wav), "-p", "语音转写：<__media__>", "--jinja", "--temp", "0", "-n", "8",
                          "-c", "4096", "-t", "2", "--no-warmup"], capture_output=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # text, 30 s, 30 s, 10 s, text: the three audio chunks are encoded one by one
    assert out.stderr.count(b"encoding mtmd batch") == 3 and b"done = 3, total = 5" in out.stderr, out.stderr[-2000:]


def test_audio_shorter_than_one_frame(setup, tmp_path):
    """< 25 ms of audio gives no audio rows, and the CLI still answers."""
    _, llm, mmproj, _ = setup
    wav = write_wav16k(tmp_path / "tiny.wav", np.zeros(300, np.float32))
    exe, env = mtmd_cli_exe()
    out = subprocess.run([exe, "-m", str(llm), "--mmproj", str(mmproj),
                          "--audio", str(wav), "-p", "语音转写：<__media__>", "--jinja", "--temp", "0", "-n", "4",
                          "-c", "4096", "-t", "2", "--no-warmup"], capture_output=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


# ------------------------------------------------------------------------------------------ llama-server
@pytest.fixture(scope="module")
def llama_server(setup):
    """The stock llama-server (patch 0004: Fun-ASR's prompt for /v1/audio/transcriptions) on our pair,
    with llama-mtmd-cli's settings: f32 KV cache, no flash attention, greedy."""
    _, llm, mmproj, _ = setup
    with run_llama_server(llm, mmproj, "-c", "4096", "-t", "2", "-fa", "off", "-ctk", "f32", "-ctv", "f32",
                          "--no-warmup", "-np", "1", "--jinja") as url:
        yield url


@pytest.mark.parametrize("language, instruction", [(None, "语音转写："), ("zh", "语音转写成中文："), ("en", "语音转写成英文：")])
def test_llama_server_uses_fun_asrs_prompt(setup, llama_server, language, instruction):
    """/v1/audio/transcriptions without a prompt answers as llama-mtmd-cli -p "<instruction><__media__>"."""
    import httpx

    from fixtures.upstream import MAX_TOKENS

    folder, llm, mmproj, wavs = setup
    wav = wavs["speech-zh"]
    data = {"model": "x", "temperature": "0", "max_tokens": str(MAX_TOKENS)}
    if language:
        data["language"] = language
    with open(wav, "rb") as f:
        r = httpx.post(llama_server + "/v1/audio/transcriptions", files={"file": ("a.wav", f, "audio/wav")}, data=data,
                       timeout=300)
    assert r.status_code == 200, r.text
    cli = mtmd_cli(llm, mmproj, wav, extra=["-p", instruction + "<__media__>"])
    for special in special_tokens(folder):  # the CLI prints special tokens the random model emits, the server not
        cli = cli.replace(special.encode(), b"")
    assert r.json()["text"].strip() == cli.decode("utf-8", errors="replace").strip() != ""


def test_llama_server_unknown_language_is_a_400(llama_server, setup):
    import httpx

    _, _, _, wavs = setup
    with open(wavs["speech-zh"], "rb") as f:
        r = httpx.post(llama_server + "/v1/audio/transcriptions", files={"file": ("a.wav", f, "audio/wav")},
                       data={"model": "x", "language": "klingon"}, timeout=120)
    assert r.status_code == 400 and "klingon" in r.text
