"""Smoke test: the shipped stock llama.cpp tools still run llama.cpp's other audio models, here LFM2-Audio
(an `lfm2` LLM with an `lfm2a` conformer projector), as in llama.cpp's audio ASR example:

    llama-mtmd-cli -m LLM.gguf --mmproj MMPROJ.gguf --audio a.wav -sys "Perform ASR." -p "<__media__>"

The pair is tiny and random (fixtures.lfm2a_pair): this proves that llama-mtmd-cli and llama-server load it,
encode audio into the number of embeddings llama.cpp's own formula gives, and generate. It is NOT parity
with any reference implementation, and the generated text means nothing."""
from __future__ import annotations

import base64
import math
import re
import subprocess

import numpy as np
import pytest

from fixtures.cli import mtmd_cli_exe, run_llama_server
from fixtures.lfm2a_pair import lfm2a_audio_tokens, write_lfm2a_pair
from fixtures.speech import write_wav16k

# two lengths whose frame counts round differently through the three stride-2 stages:
# 32000 samples -> 201 frames -> 101 -> 51 -> 26; 21923 samples -> 138 frames -> 69 -> 35 -> 18
LENGTHS = [32000, 21923]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lfm2a")
    llm, mmproj = write_lfm2a_pair(tmp)
    rng = np.random.default_rng(0)
    wavs = {}
    for n in LENGTHS:
        t = np.arange(n) / 16000
        x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)
        wavs[n] = write_wav16k(tmp / f"a{n}.wav", x.astype(np.float32))
    return llm, mmproj, wavs


def test_formula_by_hand():
    """The derived count, checked on two lengths worked out by hand (see LENGTHS)."""
    assert [lfm2a_audio_tokens(n) for n in LENGTHS] == [26, 18]


@pytest.mark.parametrize("n_samples", LENGTHS)
def test_mtmd_cli_runs_lfm2a(pair, n_samples):
    llm, mmproj, wavs = pair
    exe, env = mtmd_cli_exe()
    # -v: the audio chunk's size is logged at info/debug level; --ignore-eos: a random model may pick an
    # end-of-generation token first, and this test wants tokens generated
    out = subprocess.run([exe, "-m", str(llm), "--mmproj", str(mmproj), "--audio", str(wavs[n_samples]),
                          "-sys", "Perform ASR.", "-p", "<__media__>", "--jinja", "-n", "8", "--temp", "0",
                          "--ignore-eos", "-c", "2048", "-t", "2", "--no-warmup", "-v"],
                         capture_output=True, env=env, timeout=300)
    err = out.stderr.decode(errors="replace")
    assert out.returncode == 0, err[-3000:]
    expected = lfm2a_audio_tokens(n_samples)

    # the conformer graph's output rows (clip_encode), and what went into the LLM (mtmd-helper's decode batches)
    shapes = re.findall(r"clip_encode: output embedding shape \[(\d+), (\d+), 1\]", err)
    assert [int(rows) for _, rows in shapes] == [expected], err[-3000:]
    decoded = [int(n) for n in re.findall(r"decoding audio batch \d+/\d+, n_tokens_batch = (\d+)", err)]
    assert sum(decoded) == expected, err[-3000:]

    prompt = re.search(r"prompt eval time = .* / +(\d+) tokens", err)
    runs = re.search(r" eval time = .* / +(\d+) runs", err)
    assert prompt and runs, err[-3000:]
    assert int(prompt.group(1)) > expected    # the audio rows plus the chat template's text
    assert 1 <= int(runs.group(1)) <= 8       # tokens were generated
    # stdout: a newline once the prompt is evaluated, then the generated pieces
    assert out.stdout.startswith(b"\n") and len(out.stdout) > 1


@pytest.fixture(scope="module")
def server(pair):
    llm, mmproj, _ = pair
    with run_llama_server(llm, mmproj, "-c", "2048", "-t", "2", "-np", "1", "--jinja", "--no-warmup") as url:
        yield url


def _chat(url, wav):
    import httpx

    audio = base64.b64encode(wav.read_bytes()).decode()
    r = httpx.post(url + "/v1/chat/completions", timeout=300, json={
        "messages": [
            {"role": "system", "content": "Perform ASR."},
            {"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
                {"type": "text", "text": "Transcribe the audio."},
            ]},
        ],
        "max_tokens": 8, "temperature": 0, "ignore_eos": True, "logprobs": True, "top_logprobs": 2,
    })
    assert r.status_code == 200, r.text
    return r.json()


def test_llama_server_chat_with_input_audio(pair, server):
    _, _, wavs = pair
    usage = {}
    for n in LENGTHS:
        body = _chat(server, wavs[n])
        u = body["usage"]
        assert 0 < u["completion_tokens"] <= 8
        assert u["prompt_tokens"] > lfm2a_audio_tokens(n)
        # nothing overflowed: the sampled tokens' log-probabilities are finite
        logprobs = [t["logprob"] for t in body["choices"][0]["logprobs"]["content"]]
        assert len(logprobs) == u["completion_tokens"] and all(math.isfinite(x) and x <= 0 for x in logprobs)
        usage[n] = u["prompt_tokens"]
    # same text, different audio: the prompts differ by exactly the difference in audio rows
    a, b = LENGTHS
    assert usage[a] - usage[b] == lfm2a_audio_tokens(a) - lfm2a_audio_tokens(b)
