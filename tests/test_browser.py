"""The page at ``GET /`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) with a fake microphone that plays a test WAV.

Oracle for the live transcript: the audio the server received. Chromium resamples the WAV to its
capture rate and the page's worklet resamples that to 24 kHz, so the samples are not the file's; a
tap on the WebSocket route records every client event the server was sent, and ``Model.stream``
fed those appends (int16 at 24000 Hz, the page's commit where it sent one) gives the finals the
page must show, with their times. The recorded audio is also held to the WAV (the worklet's
resampling: the same waveform, level and length). The file box: its answer is the HTTP endpoint's
for the same file. Skipped, with the reason, without chromium / chromedriver / selenium."""
from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from fixtures.server import Running
from fixtures.speech import write_wav16k
from fixtures.vad_clips import SR, silence, vad_clips
from funasr_cpp import Model, TranscribeOptions
from funasr_cpp.streaming import FinalSegment, SpeechStarted, SpeechStopped

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

EXACT = dict(n_threads=1, kv_type="f32", flash_attn="off", n_parallel=4)  # batch-invariant decoding
N_TOKENS = 16
KEY = "sk-page-test"
WAIT_S = 60.0
TAIL_S = 3.0  # silence after the clip: the VAD ends the last sentence before Stop


@pytest.fixture(scope="module")
def clip(speech):
    """the "pauses" clip (sentences with pauses of 0.8 to 3 s) and a silent tail"""
    return np.concatenate([vad_clips(speech)["pauses"], silence(TAIL_S)]).astype(np.float32)


@pytest.fixture(scope="module")
def clip_wav(clip, tmp_path_factory):
    return write_wav16k(tmp_path_factory.mktemp("browser") / "clip.wav", clip)


@pytest.fixture(scope="module")
def model(ctc_gguf, vad_gguf):
    with Model(*ctc_gguf, vad_model=vad_gguf, **EXACT) as m:
        yield m


class Tap:
    """Every client event the realtime route receives, in order (the ASGI messages, parsed)."""

    def __init__(self, running):
        route = next(r for r in running.app.routes if getattr(r, "path", None) == "/v1/realtime")
        inner, self.events, self.samples, self.lock = route.app, [], 0, threading.Lock()

        async def tapped(scope, receive, send):
            async def recv():
                message = await receive()
                if message.get("type") == "websocket.receive" and message.get("text") is not None:
                    event = json.loads(message["text"])
                    audio = event["audio"] if event["type"] == "input_audio_buffer.append" else ""
                    n = len(base64.b64decode(audio)) // 2
                    with self.lock:
                        self.events.append(event)
                        self.samples += n
                return message
            await inner(scope, recv, send)

        route.app = tapped  # looked up per connection: in force from the next session on

    def take(self):
        """the events since the last take (and the count of audio starts again)"""
        with self.lock:
            events, self.events, self.samples = self.events, [], 0
        return events

    def seconds(self):
        """audio appended since the last take (24 kHz PCM: the page's format)"""
        with self.lock:
            return self.samples / 24000


@pytest.fixture(scope="module")
def server(model):
    s = Running(model, api_key=KEY, options=TranscribeOptions(max_new_tokens=N_TOKENS), partials="ctc")
    s.tap = Tap(s)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser(clip_wav):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("the browser tests need Chromium and its driver (Debian: apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="the browser tests need selenium (pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,1000",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                # %noloop: the file once, then silence (looped, the stream would never end)
                f"--use-file-for-fake-audio-capture={clip_wav}%noloop",
                "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


def _wait(what, condition, timeout=WAIT_S):
    t0 = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.1)


def _wait_audio(driver, tap, seconds, timeout=WAIT_S):
    """until the server has that much audio from the page (which must stay live meanwhile)"""
    _wait(f"{seconds:g} s of audio", lambda: tap.seconds() >= seconds or _state(driver) != "live", timeout)
    assert _state(driver) == "live", _errors(driver)


def _select(driver, element_id, value):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", element_id)).select_by_value(value)


def _state(driver):
    return driver.execute_script("return document.body.dataset.state")


def _errors(driver):
    return driver.execute_script("return [...document.querySelectorAll('#errors li')].map(e => e.textContent)")


# counts the partial texts the page shows (a test-side observer: the page keeps no such count)
WATCH_PARTIALS = """
window.partialsSeen = 0;
new MutationObserver(() => {
  if ([...document.querySelectorAll('#partial .partial')].some(e => e.textContent)) window.partialsSeen++;
}).observe(document.getElementById('partial'), {subtree: true, childList: true, characterData: true});
"""


def _open_page(driver, server, key):
    driver.get(server.url + "/")
    _wait("the page", lambda: _state(driver) == "idle")
    box = driver.find_element("id", "api-key")
    box.clear()
    box.send_keys(key)


def _clock(ms):
    """the page's mm:ss.s (JavaScript's toFixed rounds a tie up)"""
    s = max(0, ms) / 1000
    m = int(s // 60)
    tenths = Decimal(s - 60 * m).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{m:02d}:{tenths:04.1f}"


def _replay(model, events, **options):
    """Model.stream fed the client events the server received: (finals, {index: (start_ms, end_ms)}
    from SpeechStarted / SpeechStopped, as the server rounds them)"""
    out = []
    with model.stream(max_new_tokens=N_TOKENS, partials=None, **options) as stream:
        for e in events:
            if e["type"] == "input_audio_buffer.append":
                out += stream.feed(np.frombuffer(base64.b64decode(e["audio"]), "<i2"), 24000)
            elif e["type"] == "input_audio_buffer.commit":
                out += stream.commit()
        t0 = time.monotonic()
        while stream.pending:  # every final of the audio fed; no finish(): the session ended without one
            assert time.monotonic() - t0 < WAIT_S, "the oracle's finals did not come"
            time.sleep(0.01)
        out += stream.feed(np.zeros(0, np.int16), 24000)
    starts = {e.index: round(e.time * 1000) for e in out if isinstance(e, SpeechStarted)}
    stops = {e.index: round(e.time * 1000) for e in out if isinstance(e, SpeechStopped)}
    finals = [e for e in out if isinstance(e, FinalSegment)]
    return finals, {i: (starts[i], stops[i]) for i in stops}


def _received_audio(events):
    appends = [e["audio"] for e in events if e["type"] == "input_audio_buffer.append"]
    pcm = [np.frombuffer(base64.b64decode(a), "<i2") for a in appends]
    return np.concatenate(pcm).astype(np.float32) / 32768


def _delayed(x, d):
    """x delayed by d samples (band-limited, circular: the caller drops the ends)"""
    return np.fft.irfft(np.fft.rfft(x) * np.exp(-2j * np.pi * np.fft.rfftfreq(len(x)) * d), len(x))


def _normalized(a, b):
    return float(a @ b / (np.sqrt((a @ a) * (b @ b)) + 1e-12))


def _check_same_waveform(received24k, clip):
    """the page's 24 kHz stream is the WAV (Chromium's resampling, then the worklet's): every quarter
    second of speech is in the clip near the same place (to a fraction of a sample: Chromium's
    resampling delays it by one), the same waveform at the same level. Near, not at: under load
    Chromium's fake capture drops or inserts 10 ms blocks now and then."""
    import soxr

    got = soxr.resample(received24k, 24000, SR).astype(np.float64)
    ref = clip.astype(np.float64)
    assert len(got) >= len(ref) - SR // 2, f"the page sent {len(got) / SR:.2f} s of a {len(ref) / SR:.2f} s clip"
    win, reach = SR // 4, int(0.3 * SR)
    matches = []  # (correlation, level ratio) of each voiced window at its best lag
    for i in range(win, min(len(got), len(ref)) - win, win):
        w = got[i:i + win]
        if np.sqrt(np.mean(w * w)) < 0.01:
            continue
        lo = max(0, i - reach)
        near = ref[lo:i + win + reach]
        energy = np.convolve(near * near, np.ones(win), "valid")
        corr = np.correlate(near, w, "valid") / (np.sqrt(energy * (w @ w)) + 1e-12)
        p = lo + int(np.argmax(corr))  # the best whole-sample lag; then the best fraction of a sample
        r = ref[p:p + win]
        best = max((_normalized(_delayed(got[i - 16:i + win + 16], d)[16:-16], r), d) for d in np.linspace(-1, 1, 21))
        matches.append((best[0], np.sqrt((w @ w) / (r @ r))))
    corr, level = np.array(matches).T
    assert len(matches) > 20
    assert np.mean(corr > 0.99) > 0.85, f"the received audio is not the clip: correlations {np.round(corr, 3)}"
    assert 0.9 < np.median(level) < 1.1, f"the received audio's level is {np.median(level):.3f} times the clip's"


def test_the_page_and_its_scripts_are_served(server):
    """no key needed for the page (it is entered on it); the scripts with a JavaScript type (the
    worklet's module must have one); nothing outside static/"""
    import httpx

    page = httpx.get(server.url + "/", timeout=WAIT_S)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="start"', 'id="stop"', 'id="commit"', 'id="finals"', 'id="file"', 'id="api-key"'):
        assert element in page.text
    for script in ("app.js", "pcm-worklet.js"):
        r = httpx.get(f"{server.url}/static/{script}", timeout=WAIT_S)
        assert r.status_code == 200 and "javascript" in r.headers["content-type"] and "use strict" in r.text
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/nothing.js"):
        assert httpx.get(server.url + path, timeout=WAIT_S).status_code == 404
    assert httpx.post(server.url + "/", timeout=WAIT_S).status_code == 405


def test_live_transcript_is_the_stream_of_the_audio_sent(server, model, browser, clip):
    driver, tap = browser, server.tap
    _open_page(driver, server, KEY)
    tap.take()
    driver.execute_script(WATCH_PARTIALS)
    driver.find_element("id", "start").click()
    _wait("the session to go live", lambda: _state(driver) in ("live", "closed"))
    assert _state(driver) == "live", _errors(driver)
    # the clip and most of its silent tail, at real time (bounded: twice that, and a minute); not
    # all of it: a block Chromium drops under load would leave the wait short of the end forever
    clip_s = len(clip) / SR - 0.5
    _wait_audio(driver, tap, clip_s, timeout=2 * clip_s + WAIT_S)
    driver.find_element("id", "stop").click()
    _wait("the session to end", lambda: _state(driver) == "closed")
    assert _errors(driver) == []
    shown = driver.execute_script(
        "return [...document.querySelectorAll('#finals li')].map(li => [li.querySelector('.final').dataset.itemId, "
        "li.querySelector('.final').textContent, li.querySelector('.time').textContent])")
    assert driver.execute_script("return document.querySelectorAll('#partial .partial').length") == 0

    events = tap.take()
    assert events[0]["type"] == "session.update"
    audio = _received_audio(events)
    _check_same_waveform(audio, clip)
    finals, times = _replay(model, events, vad="fsmn")
    assert len(finals) >= 2 and driver.execute_script("return window.partialsSeen") >= 1
    assert [text for _, text, _ in shown] == [f.segment.text for f in finals]
    assert [t for _, _, t in shown] == [f"{_clock(times[f.index][0])}–{_clock(times[f.index][1])}" for f in finals]
    ids = [i for i, _, _ in shown]
    assert len(set(ids)) == len(ids) and all(i.startswith("item_") for i in ids)


def test_manual_commits_language_and_hotwords(server, model, browser, clip):
    """turn detection off: items end at the Commit button and at Stop; the language and hotwords
    chosen on the page are the session's"""
    driver, tap = browser, server.tap
    _open_page(driver, server, KEY)
    _select(driver, "turn", "manual")
    _select(driver, "language", "en")
    driver.find_element("id", "hotwords").send_keys("alpha, beta")
    tap.take()
    driver.find_element("id", "start").click()
    _wait("the session to go live", lambda: _state(driver) in ("live", "closed"))
    assert _state(driver) == "live", _errors(driver)
    _wait_audio(driver, tap, 6.0)
    driver.find_element("id", "commit").click()
    _wait_audio(driver, tap, 12.0)
    driver.find_element("id", "stop").click()  # commits the rest
    _wait("the session to end", lambda: _state(driver) == "closed")
    assert _errors(driver) == []
    shown = driver.execute_script(
        "return [...document.querySelectorAll('#finals li')].map(li => [li.querySelector('.final').textContent, "
        "li.querySelector('.time').textContent])")

    events = tap.take()
    audio = _received_audio(events)  # the file from its start again: a new capture replays it
    _check_same_waveform(audio, clip[:len(audio) * SR // 24000])
    assert events[0] == {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": "fun-asr-nano", "language": "en", "prompt": "alpha, beta"},
        "turn_detection": None}}}}
    assert [e["type"] for e in events].count("input_audio_buffer.commit") == 2
    finals, _ = _replay(model, events, vad=None, language="en", hotwords=["alpha", "beta"])
    assert len(finals) == 2
    assert [text for text, _ in shown] == [f.segment.text for f in finals]
    for (_, label), f in zip(shown, finals):  # from the items' durations (usage), to a tenth of a second
        start, end = (int(t[:2]) * 60 + float(t[3:]) for t in label.split("–"))
        assert abs(start - f.segment.start) < 0.06 and abs(end - f.segment.end) < 0.06, (label, f.segment)


def test_stop_mid_sentence_commits_it(server, model, browser, clip):
    """Stop while the VAD has an item open: the page commits it and waits for its final (and not for
    the item the VAD's speech opens after the commit, which has no audio)"""
    driver, tap = browser, server.tap
    _open_page(driver, server, KEY)
    tap.take()
    driver.find_element("id", "start").click()
    _wait("the session to go live", lambda: _state(driver) in ("live", "closed"))
    assert _state(driver) == "live", _errors(driver)
    _wait("an item to open", lambda: driver.find_elements("css selector", "#partial .item") or _state(driver) != "live")
    _wait_audio(driver, tap, tap.seconds() + 1.0)
    t0 = time.monotonic()
    driver.find_element("id", "stop").click()
    _wait("the session to end", lambda: _state(driver) == "closed")
    assert time.monotonic() - t0 < 10.0  # the final of the committed item, not the stop's longest wait
    assert _errors(driver) == []
    shown = driver.execute_script("return [...document.querySelectorAll('#finals .final')].map(e => e.textContent)")

    events = tap.take()
    assert [e["type"] for e in events].count("input_audio_buffer.commit") == 1
    assert events[-1]["type"] == "input_audio_buffer.commit"
    finals, _ = _replay(model, events, vad="fsmn")
    assert len(finals) >= 1 and shown == [f.segment.text for f in finals]
    # the last item ends at the commit, the end of the audio sent (less the 24 -> 16 kHz resampler's
    # latency, which the stream has not yet put out), not where the VAD would have ended it
    assert finals[-1].segment.end == pytest.approx(len(_received_audio(events)) / 24000, abs=0.05)


def test_file_box_shows_the_endpoint_answer(server, browser, clip_wav):
    import httpx

    driver = browser
    _open_page(driver, server, KEY)
    expected = httpx.post(server.url + "/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"},
                          data={"response_format": "text"},
                          files={"file": ("clip.wav", clip_wav.read_bytes(), "audio/wav")}, timeout=WAIT_S)
    assert expected.status_code == 200 and expected.text.strip()
    driver.find_element("id", "file").send_keys(str(clip_wav))
    _select(driver, "format", "text")
    driver.find_element("id", "send-file").click()
    result = "return [document.getElementById('file-result').dataset.status, " \
             "document.getElementById('file-result').textContent]"
    status, text = _wait("the file's answer", lambda: (lambda r: r if r[0] in ("done", "error") else None)(
        driver.execute_script(result)))
    assert (status, text) == ("done", expected.text)
    assert _errors(driver) == []


def test_wrong_key_is_shown(server, browser):
    driver = browser
    _open_page(driver, server, "sk-wrong")
    driver.find_element("id", "start").click()
    _wait("the refusal", lambda: _state(driver) == "closed")
    errors = _errors(driver)
    assert len(errors) == 1 and "connection failed" in errors[0]
    assert driver.find_elements("css selector", "#finals .final") == []
