"""funasr_cpp.server (`funasr-cpp serve`): the real `openai` client against a server started on
127.0.0.1 on a free port; every answer is checked against Model.transcribe with the same options
(the library is held to upstream elsewhere). Concurrency limits, and bad input: the expected status
and OpenAI-shaped error, the server still healthy afterwards."""
from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import tempfile
import time

import numpy as np
import pytest

from fixtures.server import Running, _free_port
from fixtures.speech import write_wav16k
from funasr_cpp import Model, formats

LOAD = {"n_threads": 1, "kv_type": "f32", "flash_attn": "off"}


@pytest.fixture(scope="module")
def model(soft_gguf):
    llm, mmproj = soft_gguf
    with Model(llm, mmproj, **LOAD) as m:
        yield m


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    s = Running(model)
    s.tmp = tmp_path_factory.mktemp("server_files")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, speech):
    """~40 s: the two sentences with pauses, so the file has several segments (energy splitting)."""
    zh, en = speech["zh"], speech["en"]
    sil = np.zeros(8000, np.float32)
    x = np.concatenate([zh, sil, en, sil] * 5)
    return write_wav16k(tmp_path_factory.mktemp("server") / "long.wav", x)


def _create(client, wav, **kwargs):
    with open(wav, "rb") as f:
        return client.audio.transcriptions.create(model="fun-asr-nano", file=f, **kwargs)


# ------------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_every_response_format_equals_the_library(server, model, long_wav, fmt):
    expected = model.transcribe(long_wav)
    assert len(expected.segments) >= 2
    got = _create(server.client(), long_wav, response_format=fmt)
    if fmt == "json":
        assert got.text == expected.text
    elif fmt == "verbose_json":
        assert got.text == expected.text and got.duration == pytest.approx(expected.duration)
        assert [(s.start, s.end, s.text) for s in got.segments] == \
            [(s.start, s.end, s.text) for s in expected.segments]
    else:
        assert got == formats.render(expected, fmt) if fmt != "text" else got.strip() == expected.text.strip()


def test_options_map_to_the_library(server, model, speech_wavs):
    wav = speech_wavs["speech-zh"]
    cases = [({"language": "zh"}, {"language": "zh"}),
             ({"prompt": "通义, Fun-ASR"}, {"hotwords": ["通义", "Fun-ASR"]}),
             ({"extra_body": {"itn": "false", "hotwords": "通义"}}, {"itn": False, "hotwords": ["通义"]}),
             ({"temperature": 0.0}, {})]
    for kwargs, lib in cases:
        assert _create(server.client(), wav, **kwargs).text == model.transcribe(wav, **lib).text, kwargs


def test_word_granularity(ctc_gguf, speech_wavs):
    llm, mmproj = ctc_gguf
    from funasr_cpp import TranscribeOptions

    base = TranscribeOptions(max_new_tokens=6)  # a short text aligns to the tiny model's frames
    with Model(llm, mmproj, **LOAD) as m:
        s = Running(m, options=base)
        try:
            wav = speech_wavs["speech-zh"]
            expected = m.transcribe(wav, base, word_timestamps=True)
            got = _create(s.client(), wav, response_format="verbose_json", timestamp_granularities=["word", "segment"])
            want = [(w.text, w.start, w.end) for seg in expected.segments for w in seg.words]
            assert want and [(w.word, w.start, w.end) for w in got.words] == want
        finally:
            s.stop()


def test_word_granularity_without_ctc_is_a_400(server, speech_wavs):
    from openai import BadRequestError

    with pytest.raises(BadRequestError, match="CTC head"):
        _create(server.client(), speech_wavs["speech-zh"], response_format="verbose_json",
                timestamp_granularities=["word"])


def test_streaming_events(server, model, long_wav):
    expected = model.transcribe(long_wav)
    stream = _create(server.client(), long_wav, stream=True)
    events = list(stream)
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}
    assert len(types) - 1 == len(expected.segments)
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == expected.text


# ------------------------------------------------------------------------------------------ endpoints
def test_models_health_metrics(server):
    import httpx

    assert [m.id for m in server.client().models.list().data] == ["fun-asr-nano"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    text = httpx.get(server.url + "/metrics").text
    assert 'funasr_requests_total{status="200"}' in text and "funasr_queue_depth 0" in text
    assert "funasr_audio_seconds_total" in text and "funasr_processing_seconds_total" in text


# ------------------------------------------------------------------------------------------ concurrency
def test_sixteen_concurrent_requests(server, model, speech_wavs, long_wav):
    wavs = [speech_wavs["speech-zh"], speech_wavs["speech-en"], long_wav] * 6
    wavs = wavs[:16]
    expected = {w: model.transcribe(w).text for w in set(wavs)}
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda w: _create(server.client(), w).text, wavs))
    assert got == [expected[w] for w in wavs]
    assert time.time() - t0 < 300


def test_queue_limit_gives_503_and_the_server_recovers(model, long_wav):
    from openai import APIStatusError

    from funasr_cpp import TranscribeOptions

    slow = TranscribeOptions(ignore_eos=True, max_new_tokens=100, max_tokens_per_second=None, repetition_guard=False)
    s = Running(model, max_concurrency=2, max_queue=2, options=slow)
    try:
        expected = model.transcribe(long_wav, slow).text

        def one(_):
            try:
                return _create(s.client(), long_wav).text
            except APIStatusError as e:
                return e

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            results = list(pool.map(one, range(10)))
        busy = [r for r in results if not isinstance(r, str)]
        assert busy and all(r.status_code == 503 and r.response.headers.get("retry-after") == "1" for r in busy)
        assert all(r == expected for r in results if isinstance(r, str)) and len(busy) < 10
        assert _create(s.client(), long_wav).text == expected  # still serving
    finally:
        s.stop()


def test_timeout_gives_504(model, tmp_path, speech):
    import httpx

    s = Running(model, request_timeout=0.3)
    try:
        x = np.concatenate([speech["zh"]] * 40)  # long enough to run past 0.3 s
        wav = write_wav16k(tmp_path / "long.wav", x)
        with open(wav, "rb") as f:
            r = httpx.post(s.url + "/v1/audio/transcriptions", files={"file": ("a.wav", f, "audio/wav")},
                           data={"model": "x"}, timeout=120)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert httpx.get(s.url + "/health").status_code == 200
    finally:
        s.stop()


# ------------------------------------------------------------------------------------------ bad input
def _post(url, files=None, data=None, headers=None):
    import httpx

    return httpx.post(url + "/v1/audio/transcriptions", files=files, data=data or {"model": "x"}, headers=headers,
                      timeout=60)


def test_bad_input(server, speech_wavs, tmp_path):
    wav = speech_wavs["speech-zh"].read_bytes()
    before = set(os.listdir(tempfile.gettempdir()))
    cases = [
        ({"file": ("a.wav", b"", "audio/wav")}, None, 400, "empty"),
        ({"file": ("a.wav", b"this is not audio at all" * 40, "audio/wav")}, None, 400, "cannot read audio"),
        ({"file": ("a.txt", b"hello", "text/plain")}, None, 415, "not audio"),
        ({"file": ("a.wav", wav[:30], "audio/wav")}, None, 400, "cannot read audio"),
        (None, {"model": "x"}, 400, "no file field"),
        ({"file": ("a.wav", wav, "audio/wav")}, {"model": "x", "language": "klingon"}, 400, "klingon"),
        ({"file": ("a.wav", wav, "audio/wav")}, {"model": "x", "response_format": "xml"}, 400, "response_format"),
        ({"file": ("a.wav", wav, "audio/wav")}, {"model": "x", "temperature": "2"}, 400, "temperature"),
    ]
    for files, data, status, message in cases:
        # without a file: another part, so that the body is still multipart
        r = _post(server.url, files=files or {"other": ("x", b"1", "application/octet-stream")}, data=data)
        assert r.status_code == status, (message, r.text)
        err = r.json()["error"]
        assert message in err["message"] and set(err) == {"message", "type", "param", "code"}
    r = _post(server.url, data={"model": "x"}, headers={"content-type": "application/json"})
    assert r.status_code == 415
    assert set(os.listdir(tempfile.gettempdir())) - before == set()
    assert _create(server.client(), speech_wavs["speech-zh"]).text  # still healthy


def test_truncated_and_empty_audio_are_400(server, speech):
    """The first 60 bytes of a 6.5 s 16-bit WAV (its header declares 104000 samples, 8 are there)
    and a 44-byte WAV with no samples: 400 in OpenAI's shape, naming the problem, not 200 with ""."""
    full = write_wav16k(server.tmp / "full.wav", np.resize(speech["zh"], 104000)).read_bytes()
    empty = write_wav16k(server.tmp / "empty.wav", np.zeros(0, np.float32)).read_bytes()
    assert len(empty) == 44
    for body, needles in [(full[:60], ("truncated", "104000 samples", "8 samples")), (empty, ("no audio samples",))]:
        r = _post(server.url, files={"file": ("a.wav", body, "audio/wav")})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["param"] == "file"
        assert err["type"] == "invalid_request_error" and all(n in err["message"] for n in needles), err
    with open(write_wav16k(server.tmp / "ok.wav", speech["zh"]), "rb") as f:  # still healthy
        assert server.client().audio.transcriptions.create(model="x", file=f).text


def test_upload_limit_api_key_and_disconnect(model, speech_wavs):
    from openai import AuthenticationError

    s = Running(model, api_key="sekret", max_upload_mb=0.05)
    try:
        wav = speech_wavs["speech-zh"]
        with pytest.raises(AuthenticationError):
            _create(s.client(api_key="wrong"), wav)
        r = _post(s.url, files={"file": ("a.wav", wav.read_bytes(), "audio/wav")})  # no key at all
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        big = np.zeros(16000 * 3, np.float32)
        r = _post(s.url, files={"file": ("big.wav", open(write_wav16k(wav.parent / "big.wav", big), "rb"), "audio/wav")},
                  headers={"authorization": "Bearer sekret"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
        # a client that goes away mid-upload
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekret\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 40000\r\n\r\n--b\r\n"
                         b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF')
        time.sleep(0.3)
        small = write_wav16k(wav.parent / "small.wav", np.zeros(8000, np.float32))
        assert _create(s.client(api_key="sekret"), small).text is not None  # healthy
        metrics = json.dumps(s.app.state.metrics.requests)
        assert "401" in metrics and "413" in metrics
    finally:
        s.stop()


def test_cli_serve(soft_gguf, model, speech_wavs):
    import subprocess
    import sys

    import httpx

    llm, mmproj = soft_gguf
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "funasr_cpp.cli", "serve", "--llm", str(llm), "--mmproj", str(mmproj),
                             "--port", str(port), "--threads", "1", "--api-key", "k"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
            time.sleep(0.2)
        wav = speech_wavs["speech-en"]
        with open(wav, "rb") as f:
            r = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", f, "audio/wav")},
                           data={"model": "fun-asr-nano", "response_format": "text"},
                           headers={"authorization": "Bearer k"}, timeout=120)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        with Model(llm, mmproj, n_threads=1) as same:  # the CLI's load options
            assert r.text.strip() == same.transcribe(wav).text.strip() != ""
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = subprocess.run([sys.executable, "-m", "funasr_cpp.cli", "serve", "--llm", str(llm)], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "--llm with --mmproj" in out.stderr


def test_client_gone_during_transcription_is_cancelled(model, long_wav):
    """A client that closes its connection while its audio is being decoded: the request is
    cancelled (its jobs leave the batch, its slot is freed), counted as 499, and the server serves on."""
    from funasr_cpp import TranscribeOptions

    # 1 s windows of 40 s, 400 tokens each: ~16000 decode tokens, many seconds even on the tiny model
    slow = TranscribeOptions(vad=None, max_segment_seconds=1.0, ignore_eos=True, max_new_tokens=400,
                             max_tokens_per_second=None, repetition_guard=False)
    s = Running(model, max_concurrency=1, max_queue=0, options=slow)
    try:
        body = long_wav.read_bytes()
        head = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nx\r\n--b\r\n'
                b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n')
        payload = head + body + b"\r\n--b--\r\n"
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n"
                         + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            deadline = time.time() + 30
            while s.app.state.metrics.running == 0:  # it is transcribing
                assert time.time() < deadline
                time.sleep(0.05)
        deadline = time.time() + 30
        while s.app.state.metrics.running:  # cancelled: the slot is free again
            assert time.time() < deadline, "the request was not cancelled"
            time.sleep(0.1)
        assert s.app.state.metrics.requests.get(499) == 1
        import httpx

        import soundfile as sf

        second = write_wav16k(long_wav.parent / "second.wav", sf.read(str(long_wav), dtype="float32")[0][:16000])
        with open(second, "rb") as f:  # one slot, no queue: served only if the slot was freed
            r = httpx.post(s.url + "/v1/audio/transcriptions", files={"file": ("a.wav", f, "audio/wav")},
                           data={"model": "x"}, timeout=120)
        assert r.status_code == 200 and r.json()["text"], r.text
    finally:
        s.stop()
