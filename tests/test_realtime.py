"""The `/v1/realtime` WebSocket (OpenAI Realtime transcription sessions) driven by the real
`openai` client (``client.realtime.connect(extra_query={"intent": "transcription"})``).

Oracles: ``Model.stream`` fed the same audio in the same chunks (100 ms appends), with the same
options and the same commits, gives each item's final (its finals are held to upstream's offline
path by test_streaming.py); for 16 kHz PCM each ``completed`` transcript is also
``Model.transcribe`` of the committed slice, and G.711 input is decoded for the oracle by Python's
own ``audioop`` (an independent decoder). Every server event is validated against the SDK's
pydantic types (``RealtimeServerEvent``), and the events of each item must come in the protocol's
order. The model is the tiny CTC release (sharp attention: its text changes with any change of
the audio, so equal transcripts mean equal audio and options) with the random-weight FSMN-VAD,
loaded with test_streaming's batch-invariant settings. Every wait is bounded (``WAIT_S``)."""
from __future__ import annotations

import base64
import functools
import json
import queue
import re
import threading
import time
import warnings

import numpy as np
import pytest

from fixtures.server import Running
from fixtures.vad_clips import SR, vad_clips
from funasr_cpp import Model, TranscribeOptions
from funasr_cpp.streaming import FinalSegment, PartialText, SpeechStarted, SpeechStopped
from funasr_cpp.vad import VadOptions

with warnings.catch_warnings():  # deprecated (removed in 3.13) but present in 3.11: the independent G.711 decoder
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

WAIT_S = 30.0          # the longest wait for one server event
N_TOKENS = 24
# batch-invariant decoding (test_batching's parity settings): a final decoded next to other jobs
# (partials, other sessions) is the slice decoded alone
EXACT = dict(n_threads=1, kv_type="f32", flash_attn="off", n_parallel=4)
OPTIONS = TranscribeOptions(max_new_tokens=N_TOKENS)
CHUNK_S = 0.1          # one append: 100 ms of audio
RATES = {"pcm24": 24000, "pcm16": 16000, "pcmu": 8000, "pcma": 8000}
FORMATS = {"pcm24": {"type": "audio/pcm", "rate": 24000}, "pcm16": {"type": "audio/pcm", "rate": 16000},
           "pcmu": {"type": "audio/pcmu"}, "pcma": {"type": "audio/pcma"}}
LEGACY_FORMATS = {"pcmu": "g711_ulaw", "pcma": "g711_alaw"}
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model(ctc_gguf, vad_gguf):
    with Model(*ctc_gguf, vad_model=vad_gguf, **EXACT) as m:
        yield m


@pytest.fixture(scope="module")
def server(model):
    s = Running(model, options=OPTIONS)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def clip(speech):
    """the first 10 s of test_streaming's recording (two sentences with pauses, faint noise), 16 kHz float32"""
    return vad_clips(speech)["pauses"][: 10 * SR].copy()


# ------------------------------------------------------------------------------------------ audio
def _int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")


def chunks_of(x16: np.ndarray, fmt: str):
    """The 100 ms appends of 16 kHz float audio ``x16`` in format ``fmt``: [(payload bytes, the
    int16 samples the oracle feeds at RATES[fmt])]. G.711: encoded and decoded by audioop."""
    import soxr

    rate = RATES[fmt]
    y = _int16(x16 if rate == SR else soxr.resample(x16, SR, rate))
    n = int(rate * CHUNK_S)
    out = []
    for i in range(0, len(y), n):
        pcm = y[i:i + n].tobytes()
        if fmt in ("pcm24", "pcm16"):
            out.append((pcm, y[i:i + n]))
        else:
            code = audioop.lin2ulaw(pcm, 2) if fmt == "pcmu" else audioop.lin2alaw(pcm, 2)
            back = audioop.ulaw2lin(code, 2) if fmt == "pcmu" else audioop.alaw2lin(code, 2)
            out.append((code, np.frombuffer(back, "<i2")))
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------------------------------ the oracle
def oracle(model, chunks, rate, *, commits=(), settle=False, partials=None, **opts):
    """Model.stream fed ``chunks`` at ``rate``, committing after the chunk indices in ``commits``
    (and once more after the last chunk): (the FinalSegments of the segments closed before the
    end, every PartialText, every event in order). ``settle``: each chunk's jobs collected before
    the next (no partial tick dropped)."""
    events = []
    with model.stream(OPTIONS, partials=partials, **opts) as s:
        for i, c in enumerate(chunks):
            events += s.feed(c, rate)
            if settle:
                _wait_idle(s)
                events += s.feed(c[:0], rate)
            if i in commits or i == len(chunks) - 1:
                events += s.commit()
        closed = {e.index for e in events if isinstance(e, SpeechStopped)}
        events += s.finish()
    finals = sorted((e for e in events if isinstance(e, FinalSegment) and e.index in closed), key=lambda f: f.index)
    return finals, [e for e in events if isinstance(e, PartialText)], events


def _wait_idle(stream):
    t0 = time.monotonic()
    while stream.pending:
        assert time.monotonic() - t0 < WAIT_S, "the oracle stream's jobs did not finish"
        time.sleep(0.005)


# ------------------------------------------------------------------------------------------ the client
@functools.lru_cache(maxsize=None)
def _sdk_types():
    from pydantic import TypeAdapter

    from openai.types.realtime import RealtimeServerEvent
    from openai.types.realtime.realtime_transcription_session_create_response import \
        RealtimeTranscriptionSessionCreateResponse

    return TypeAdapter(RealtimeServerEvent), RealtimeTranscriptionSessionCreateResponse


def check_event(event: dict) -> None:
    """The event as the SDK's types define it (our extensions aside: 16 kHz PCM, ``replace``)."""
    adapter, session_type = _sdk_types()
    assert isinstance(event.get("event_id"), str) and event["event_id"], event
    kind = event.get("type")
    if kind == "transcription_session.updated":  # the older shape (no SDK type fits a server's own model name)
        s = event["session"]
        assert s["input_audio_format"] in ("pcm16", "g711_ulaw", "g711_alaw"), s
        assert set(s["input_audio_transcription"]) >= {"model", "language", "prompt"}, s
        assert s["turn_detection"] is None or s["turn_detection"]["type"] == "server_vad", s
        return
    view = json.loads(json.dumps(event))
    fmt = ((view.get("session") or {}).get("audio") or {}).get("input", {}).get("format") or {}
    if fmt.get("rate") == 16000:  # our documented extension; the SDK's type has 24000 only
        fmt["rate"] = 24000
    parsed = adapter.validate_python(view)
    assert parsed.type == kind, (kind, type(parsed).__name__)
    if kind in ("session.created", "session.updated"):
        session_type.model_validate(view["session"])
    if kind == DELTA:
        assert isinstance(event.get("replace"), bool) and isinstance(event.get("delta"), str), event
    if kind == "error":
        assert event["error"]["type"] in ("invalid_request_error", "server_error") and event["error"]["message"]


class Conn:
    """A realtime session through the openai SDK; a reader thread queues the server's events
    (each validated when taken), so that every wait is bounded."""

    def __init__(self, server, *, api_key="unused", query=None):
        from openai import OpenAI

        client = OpenAI(base_url=server.url + "/v1", websocket_base_url=server.ws_url + "/v1", api_key=api_key,
                        max_retries=0)
        self.conn = client.realtime.connect(extra_query={"intent": "transcription"} if query is None else query).enter()
        self.seen: list = []
        self.close_frame = None
        self.reader_error = None
        self._queue: "queue.Queue" = queue.Queue()
        self._closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                self._queue.put(json.loads(self.conn.recv_bytes()))
        except ConnectionClosed as e:
            self.close_frame = e.rcvd
        except Exception as e:  # noqa: BLE001 - reported by next()
            self.reader_error = e
        finally:
            self._closed.set()
            self._queue.put(None)

    # -- sending
    def send(self, event: dict) -> None:
        self.conn.send_raw(json.dumps(event))

    def append(self, data: bytes) -> None:
        self.conn.input_audio_buffer.append(audio=b64(data))

    def update(self, **session) -> None:
        self.conn.session.update(session={"type": "transcription", **session})

    def close(self) -> None:
        self.conn.close()

    # -- receiving
    def next(self, timeout: float = WAIT_S) -> dict:
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no server event within {timeout} s; so far: {[e['type'] for e in self.seen]}")
        if event is None:
            self._queue.put(None)
            pytest.fail(f"the connection closed ({self.close_frame}, {self.reader_error!r}); "
                        f"so far: {[e['type'] for e in self.seen]}")
        check_event(event)
        self.seen.append(event)
        return event

    def until(self, kind: str, timeout: float = WAIT_S) -> list:
        """The events up to and including the next of type ``kind``."""
        deadline, out = time.monotonic() + timeout, []
        while True:
            out.append(self.next(max(0.01, deadline - time.monotonic())))
            if out[-1]["type"] == kind:
                return out

    def quiet(self, seconds: float) -> list:
        """The events that come within ``seconds``."""
        deadline, out = time.monotonic() + seconds, []
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if event is None:
                self._queue.put(None)
                break
            check_event(event)
            self.seen.append(event)
            out.append(event)
        return out

    def next_but_deltas(self, timeout: float = WAIT_S) -> dict:
        """The next event that is not a partial (partials come whenever they are ready)."""
        deadline = time.monotonic() + timeout
        while (event := self.next(max(0.01, deadline - time.monotonic())))["type"] == DELTA:
            pass
        return event

    def closed(self, timeout: float = WAIT_S):
        """Wait for the server's close: (the events before it, its close frame)."""
        assert self._closed.wait(timeout), f"the server did not close the session within {timeout} s"
        events = []
        while (event := self._queue.get(timeout=1)) is not None:
            check_event(event)
            self.seen.append(event)
            events.append(event)
        self._queue.put(None)
        return events, self.close_frame

    def error(self, code: str, timeout: float = WAIT_S) -> dict:
        """The next event but partials (they come when they are ready): an error with ``code``."""
        event = self.next_but_deltas(timeout)
        assert event["type"] == "error", event
        assert event["error"]["code"] == code, event
        return event["error"]


def send_audio(c: Conn, chunks, *, real_time=False, commits=()):
    """Appends the chunks' payloads (at real time: one per 100 ms), committing after the indices in ``commits``."""
    t0 = time.monotonic()
    for i, (payload, _) in enumerate(chunks):
        if real_time:
            time.sleep(max(0.0, t0 + i * CHUNK_S - time.monotonic()))
        c.append(payload)
        if i in commits:
            c.send({"type": "input_audio_buffer.commit"})


def collect_items(c: Conn, n_completed: int, timeout: float = 60.0) -> list:
    """The events until ``n_completed`` items have their transcript."""
    deadline, out = time.monotonic() + timeout, []
    while sum(e["type"] == COMPLETED for e in out) < n_completed:
        out.append(c.next(max(0.01, deadline - time.monotonic())))
        assert out[-1]["type"] != "error", out[-1]
    return out


LETTERS = {"input_audio_buffer.speech_started": "S", DELTA: "D", "input_audio_buffer.speech_stopped": "E",
           "input_audio_buffer.committed": "C", COMPLETED: "F"}


def check_order(events: list, vad: bool) -> list:
    """Per item, the protocol's order; the committed items chain by previous_item_id, and their
    transcripts come in commit order. Returns the committed item ids in order."""
    per: dict = {}
    for e in events:
        if "item_id" in e and e["type"] in LETTERS:
            per.setdefault(e["item_id"], []).append(LETTERS[e["type"]])
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    completed = [e["item_id"] for e in events if e["type"] == COMPLETED]
    ids = [e["item_id"] for e in committed]
    for item, seq in per.items():
        s = "".join(seq)
        full = r"SD*ECF" if vad else r"D*CF"
        open_ = r"SD*" if vad else r"D*"  # the item open when the test stopped
        assert re.fullmatch(full, s) or (item not in ids and re.fullmatch(open_, s)), (item, s)
    assert [e["previous_item_id"] for e in committed] == [None] + ids[:-1]  # a session's first item: null
    assert completed == ids[:len(completed)]
    return ids


def texts_by_item(events: list) -> dict:
    """The partial text each delta leaves the client with, per item (deltas applied, ``replace`` honoured)."""
    out: dict = {}
    for e in events:
        if e["type"] == DELTA:
            texts = out.setdefault(e["item_id"], [])
            before = texts[-1] if texts else ""
            if not e["replace"]:
                assert e["delta"], e  # an unchanged hypothesis is not sent
            texts.append(e["delta"] if e["replace"] else before + e["delta"])
    return out


def check_partials(events: list, ids: list, finals: list, partials: list) -> dict:
    """Each text the deltas leave the client with is one of the oracle's partials of that item
    (fed the same chunks, settled: every partial tick; the server may skip ticks, not add)."""
    texts = texts_by_item(events)
    for item, f in zip(ids, finals):
        allowed = {p.text for p in partials if p.index == f.index}
        assert set(texts.get(item, [])) <= allowed, (item, texts.get(item), sorted(allowed))
    return texts


def metric(server, name: str) -> float:
    import httpx

    text = httpx.get(server.url + "/metrics", timeout=10).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


# ------------------------------------------------------------------------------------------ sessions
def test_session_objects(server):
    """session.created, session.update (whole and partial: fields left out keep their value),
    the older transcription_session.update shape, and the ``model=`` query parameter"""
    c = Conn(server, query={"intent": "transcription", "model": "whatever"})
    try:
        created = c.next()
        assert created["type"] == "session.created"
        s = created["session"]
        assert s["type"] == "transcription" and s["object"] == "realtime.transcription_session"
        assert re.fullmatch(r"sess_\w+", s["id"]) and s["include"] == []
        inp = s["audio"]["input"]
        assert inp["format"] == {"type": "audio/pcm", "rate": 24000} and inp["noise_reduction"] is None
        assert inp["transcription"] == {"model": "fun-asr-nano", "language": None, "prompt": ""}
        assert inp["turn_detection"]["type"] == "server_vad"  # the server has a VAD model
        assert set(inp["turn_detection"]) >= {"threshold", "prefix_padding_ms", "silence_duration_ms"}

        c.update(audio={"input": {"format": FORMATS["pcmu"], "noise_reduction": None,
                                  "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": "a, b"},
                                  "turn_detection": {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 300,
                                                     "silence_duration_ms": 500}}})
        up = c.next()
        assert up["type"] == "session.updated" and up["session"]["id"] == s["id"]
        inp = up["session"]["audio"]["input"]
        assert inp["format"] == {"type": "audio/pcmu"}
        assert inp["transcription"] == {"model": "gpt-4o-transcribe", "language": "en", "prompt": "a, b"}
        assert inp["turn_detection"] == {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 300,
                                         "silence_duration_ms": 500}
        c.update(audio={"input": {"format": FORMATS["pcm16"]}})  # the rest stays
        inp2 = c.next()["session"]["audio"]["input"]
        assert inp2 == {**inp, "format": FORMATS["pcm16"]}
        c.update(audio={"input": {"turn_detection": None}})
        assert c.next()["session"]["audio"]["input"]["turn_detection"] is None

        c.send({"type": "transcription_session.update", "event_id": "evt_old",
                "session": {"input_audio_format": "g711_alaw",
                            "input_audio_transcription": {"model": "whisper-1", "language": "zh", "prompt": "x"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 600}}})
        old = c.next()
        assert old["type"] == "transcription_session.updated"
        o = old["session"]
        assert o["input_audio_format"] == "g711_alaw" and o["turn_detection"]["silence_duration_ms"] == 600
        assert o["input_audio_transcription"] == {"model": "whisper-1", "language": "zh", "prompt": "x"}
        c.update()  # nothing changed: the new shape reports the same settings
        inp = c.next()["session"]["audio"]["input"]
        assert inp["format"] == FORMATS["pcma"] and inp["transcription"]["language"] == "zh"
        assert inp["turn_detection"]["silence_duration_ms"] == 600
        assert c.quiet(0.2) == []
    finally:
        c.close()


def test_no_vad_model_no_server_vad(ctc_gguf):
    """a server without a VAD model: turn_detection null by default, server_vad refused with how
    to start the server with one; the session goes on"""
    with Model(*ctc_gguf, **EXACT) as m:
        s = Running(m, options=OPTIONS)
        c = Conn(s)
        try:
            created = c.next()
            assert created["session"]["audio"]["input"]["turn_detection"] is None
            c.update(audio={"input": {"turn_detection": {"type": "server_vad"}}})
            err = c.error("unsupported_value")
            assert "--vad-model" in err["message"] and err["param"].endswith("turn_detection")
            c.update(audio={"input": {"format": FORMATS["pcm16"]}})
            assert c.next()["session"]["audio"]["input"]["turn_detection"] is None
            _assert_still_works(c, m)
        finally:
            c.close()
            s.stop()


# ------------------------------------------------------------------------------------------ transcripts
@pytest.mark.parametrize("fmt", ["pcm24", "pcm16", "pcmu", "pcma"])
def test_manual_commits(server, model, clip, fmt):
    """turn_detection null, appends as fast as possible, commits after chunks 20 and 45 and at
    the end: each item's transcript is the oracle's final (and, at 16 kHz, transcribe of the
    slice), its usage the item's seconds; the partials are the oracle's; the audio is counted"""
    x = clip[: 7 * SR]
    chunks = chunks_of(x, fmt)
    commits = (19, 44)
    c = Conn(server)
    try:
        c.next()
        audio_before = metric(server, "funasr_realtime_audio_seconds_total")
        if fmt in ("pcmu", "pcma"):  # G.711 through the older update shape
            c.send({"type": "transcription_session.update",
                    "session": {"input_audio_format": LEGACY_FORMATS[fmt], "turn_detection": None}})
            assert c.next()["type"] == "transcription_session.updated"
        else:
            c.update(audio={"input": {"format": FORMATS[fmt], "turn_detection": None}})
            assert c.next()["session"]["audio"]["input"]["format"] == FORMATS[fmt]
        send_audio(c, chunks, commits=commits + (len(chunks) - 1,))
        events = collect_items(c, 3)
    finally:
        c.close()
    ids = check_order(events, vad=False)
    finals, partials, _ = oracle(model, [a for _, a in chunks], RATES[fmt], commits=commits, vad=None, settle=True,
                                 partials="auto")
    assert len(finals) == 3
    completed = [e for e in events if e["type"] == COMPLETED]
    assert [e["transcript"] for e in completed] == [f.segment.text for f in finals]
    assert len(set(f.segment.text for f in finals)) == 3  # the oracle tells the items apart
    assert [e["usage"] for e in completed] == \
        [{"type": "duration", "seconds": round(f.segment.end - f.segment.start, 3)} for f in finals]
    if fmt == "pcm16":
        cuts = [0, 20 * 1600, 45 * 1600, len(x)]
        pcm = _int16(x)
        assert [e["transcript"] for e in completed] == \
            [model.transcribe(pcm[a:b], OPTIONS, sample_rate=SR, vad=None).text for a, b in zip(cuts, cuts[1:])]
    check_partials(events, ids, finals, partials)
    sent = sum(len(a) for _, a in chunks) / RATES[fmt]
    assert metric(server, "funasr_realtime_audio_seconds_total") - audio_before == pytest.approx(sent, abs=2e-3)


@pytest.mark.parametrize("pace", ["real_time", "fast"])
def test_server_vad(server, model, clip, pace):
    """the default session (24 kHz, server_vad with the checkpoint's VAD settings): items are
    the oracle's VAD segments, speech_started/stopped at its times; at real time the partials
    come and each text the deltas leave is one of the oracle's partials of that item"""
    chunks = chunks_of(clip, "pcm24")
    c = Conn(server)
    try:
        assert c.next()["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        send_audio(c, chunks, real_time=pace == "real_time", commits=(len(chunks) - 1,))
        finals, partials, all_events = oracle(model, [a for _, a in chunks], 24000, vad="fsmn",
                                              settle=True, partials="auto")
        assert len(finals) >= 2
        events = collect_items(c, len(finals))
    finally:
        c.close()
    ids = check_order(events, vad=True)
    completed = [e for e in events if e["type"] == COMPLETED]
    assert [e["transcript"] for e in completed] == [f.segment.text for f in finals]
    starts = {e.index: e.time for e in all_events if isinstance(e, SpeechStarted)}
    stops = {e.index: e.time for e in all_events if isinstance(e, SpeechStopped)}
    started = {e["item_id"]: e["audio_start_ms"] for e in events if e["type"] == "input_audio_buffer.speech_started"}
    stopped = {e["item_id"]: e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"}
    assert [started[i] for i in ids] == [round(starts[f.index] * 1000) for f in finals]
    assert [stopped[i] for i in ids] == [round(stops[f.index] * 1000) for f in finals]
    texts = check_partials(events, ids, finals, partials)
    assert texts or pace == "fast", "no partials at real time"


def test_server_vad_settings_language_and_prompt(server, model, clip):
    """16 kHz, server_vad with silence_duration_ms / prefix_padding_ms (-> the FSMN-VAD's
    max_end_silence_time / lookback_time_start_point), language and prompt (-> hotwords):
    the oracle's stream with those options"""
    chunks = chunks_of(clip, "pcm16")
    c = Conn(server)
    try:
        c.next()
        c.update(audio={"input": {"format": FORMATS["pcm16"],
                                  "transcription": {"model": "m", "language": "英文", "prompt": "通义, Fun-ASR"},
                                  "turn_detection": {"type": "server_vad", "silence_duration_ms": 500,
                                                     "prefix_padding_ms": 300, "threshold": 0.5}}})
        assert c.next()["type"] == "session.updated"
        send_audio(c, chunks, commits=(len(chunks) - 1,))
        vo = VadOptions(max_end_silence_time=500, lookback_time_start_point=300)
        finals, _, _ = oracle(model, [a for _, a in chunks], SR, vad="fsmn", vad_options=vo, language="en",
                              hotwords=["通义", "Fun-ASR"])
        # the settings matter here: other segments with the checkpoint's VAD settings, other text without
        # the language and hotwords
        plain, _, _ = oracle(model, [a for _, a in chunks], SR, vad="fsmn")
        vad_only, _, _ = oracle(model, [a for _, a in chunks], SR, vad="fsmn", vad_options=vo)
        spans = [(f.segment.start, f.segment.end) for f in finals]
        assert len(finals) >= 2 and spans != [(f.segment.start, f.segment.end) for f in plain]
        assert spans == [(f.segment.start, f.segment.end) for f in vad_only]
        assert all(f.segment.text != g.segment.text for f, g in zip(finals, vad_only))
        events = collect_items(c, len(finals))
    finally:
        c.close()
    check_order(events, vad=True)
    assert [e["transcript"] for e in events if e["type"] == COMPLETED] == [f.segment.text for f in finals]


def test_llm_partials_with_revisions(soft_gguf, vad_gguf, clip):
    """a checkpoint without the CTC head: LLM partials; deltas that revise the text come with
    ``replace: true``; applied, each is one of the oracle's partials of its item"""
    with Model(*soft_gguf, vad_model=vad_gguf, **EXACT) as m:
        s = Running(m, options=OPTIONS, partials="llm")
        chunks = chunks_of(clip, "pcm24")
        c = Conn(s)
        try:
            c.next()
            send_audio(c, chunks, real_time=True, commits=(len(chunks) - 1,))
            finals, partials, _ = oracle(m, [a for _, a in chunks], 24000, vad="fsmn", settle=True, partials="llm")
            events = collect_items(c, len(finals))
        finally:
            c.close()
            s.stop()
    ids = check_order(events, vad=True)
    assert [e["transcript"] for e in events if e["type"] == COMPLETED] == [f.segment.text for f in finals]
    assert check_partials(events, ids, finals, partials), "no partials at real time"
    assert any(e["type"] == DELTA and e["replace"] for e in events), "no revised partial"
    by_item: dict = {}
    for e in events:  # "replace" exactly when the new text does not extend the one the client has
        if e["type"] == DELTA:
            before = by_item.get(e["item_id"], "")
            now = by_item[e["item_id"]] = e["delta"] if e["replace"] else before + e["delta"]
            assert e["replace"] == (not now.startswith(before)), (before, e)


def test_times_count_from_the_first_append_across_updates(server, model, clip):
    """server_vad at 16 kHz: an update that changes the transcription mid-stream ends the
    stream (its open item is committed, the VAD flushed) and a new one starts; the items' times
    go on counting from the session's first append"""
    chunks = chunks_of(clip, "pcm16")
    cut = 80  # 8 s: inside the second sentence
    td = {"type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300}
    vo = VadOptions(max_end_silence_time=500, lookback_time_start_point=300)
    c = Conn(server)
    try:
        c.next()
        c.update(audio={"input": {"format": FORMATS["pcm16"], "turn_detection": td}})
        c.next()
        send_audio(c, chunks[:cut])
        c.update(audio={"input": {"transcription": {"language": "zh"}}})
        send_audio(c, chunks[cut:], commits=(len(chunks) - cut - 1,))
        with model.stream(OPTIONS, vad="fsmn", vad_options=vo, partials=None) as s:
            first = [e for c_ in chunks[:cut] for e in s.feed(c_[1], SR)] + s.finish()
        second_finals, _, second = oracle(model, [a for _, a in chunks[cut:]], SR, vad="fsmn", vad_options=vo,
                                          language="zh")
        first_finals = [e for e in first if isinstance(e, FinalSegment)]
        assert len(first_finals) >= 2 and second_finals  # the second: the open item, committed by the update
        events = collect_items(c, len(first_finals) + len(second_finals))
    finally:
        c.close()
    check_order([e for e in events if e["type"] != "session.updated"], vad=True)
    assert [e["transcript"] for e in events if e["type"] == COMPLETED] == \
        [f.segment.text for f in first_finals + second_finals]
    offset = cut * CHUNK_S
    want = [round(e.time * 1000) for e in first if isinstance(e, SpeechStarted)] + \
        [round((offset + e.time) * 1000) for e in second if isinstance(e, SpeechStarted)]
    got = [e["audio_start_ms"] for e in events if e["type"] == "input_audio_buffer.speech_started"]
    assert got == want[:len(got)] and len(got) >= len(first_finals) + len(second_finals)
    want = [round(e.time * 1000) for e in first if isinstance(e, SpeechStopped)] + \
        [round((offset + e.time) * 1000) for e in second if isinstance(e, SpeechStopped)]
    assert [e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"] == \
        want[:len(first_finals) + len(second_finals)]


def test_server_options_are_the_sessions_defaults(model, clip):
    """a server started with a language and 2 s segments: a session that sets neither decodes
    with them (as the HTTP endpoint does); without commits the server commits every 2 s"""
    opts = OPTIONS.replace(language="zh", max_segment_seconds=2.0)
    s = Running(model, options=opts)
    pcm = _int16(clip[SR: 6 * SR])
    try:
        c = Conn(s)
        c.next()
        c.update(audio={"input": {"format": FORMATS["pcm16"], "turn_detection": None}})
        c.next()
        send_audio(c, chunks_of(clip[SR: 6 * SR], "pcm16"), commits=(49,))
        events = collect_items(c, 3)
        c.close()
    finally:
        s.stop()
    check_order(events, vad=False)
    cuts = [0, 2 * SR, 4 * SR, 5 * SR]
    want = [model.transcribe(pcm[a:b], opts, sample_rate=SR, vad=None).text for a, b in zip(cuts, cuts[1:])]
    assert want != [model.transcribe(pcm[a:b], OPTIONS, sample_rate=SR, vad=None).text for a, b in zip(cuts, cuts[1:])]
    assert [e["transcript"] for e in events if e["type"] == COMPLETED] == want


def test_update_and_clear_mid_item(server, model, clip):
    """turn_detection null: a transcription change commits the open item first (its final
    comes), then applies; clear drops the open item's audio (no final); the oracle does the same"""
    x = clip[: 6 * SR]
    a24 = chunks_of(x[: 2 * SR], "pcm24")
    b16 = chunks_of(x[3 * SR: 5 * SR], "pcm16")
    dropped = chunks_of(x[5 * SR:], "pcm16")
    c = Conn(server)
    try:
        c.next()
        c.update(audio={"input": {"turn_detection": None}})
        c.next()
        send_audio(c, a24)
        c.update(audio={"input": {"transcription": {"language": "zh"}}})  # commits the item first
        first = c.until(COMPLETED)
        c.update(audio={"input": {"format": FORMATS["pcm16"]}})  # nothing buffered
        send_audio(c, b16)
        c.send({"type": "input_audio_buffer.commit"})
        second = c.until(COMPLETED)
        send_audio(c, dropped)
        c.send({"type": "input_audio_buffer.clear"})
        rest = c.until("input_audio_buffer.cleared")
        c.send({"type": "input_audio_buffer.commit", "event_id": "evt_empty"})
        err = c.error("input_audio_buffer_commit_empty")
        assert err["event_id"] == "evt_empty"
        send_audio(c, b16[:10])
        c.send({"type": "input_audio_buffer.commit"})
        third = c.until(COMPLETED)
        assert [e for e in c.quiet(0.3) if e["type"] != "session.updated"] == []
    finally:
        c.close()
    events = [e for e in c.seen if e["type"] != "session.updated"]
    check_order(events, vad=False)
    assert not [e for e in rest if e["type"] in ("input_audio_buffer.committed", COMPLETED)]
    with model.stream(OPTIONS, vad=None, partials=None) as s:
        for _, a in a24:
            s.feed(a, 24000)
        want1 = [e.segment.text for e in s.finish() if isinstance(e, FinalSegment)]
    assert [e["transcript"] for e in first if e["type"] == COMPLETED] == want1
    zh = OPTIONS.replace(language="zh")
    want2 = model.transcribe(np.concatenate([a for _, a in b16]), zh, sample_rate=SR, vad=None).text
    want3 = model.transcribe(np.concatenate([a for _, a in b16[:10]]), zh, sample_rate=SR, vad=None).text
    assert [e["transcript"] for e in second if e["type"] == COMPLETED] == [want2]
    assert [e["transcript"] for e in third if e["type"] == COMPLETED] == [want3]


def test_format_change_mid_item_continues_the_item(server, model, clip):
    """an update that changes only the format while an item is open keeps the item (the stream
    resamples each part at its own rate): one final, the oracle's for the 24 kHz audio followed
    by the 16 kHz audio in one stream"""
    a24 = chunks_of(clip[: 2 * SR], "pcm24")
    a16 = chunks_of(clip[2 * SR: 3 * SR], "pcm16")
    with model.stream(OPTIONS, vad=None, partials=None) as s:
        for _, a in a24:
            s.feed(a, 24000)
        for _, a in a16:
            s.feed(a, SR)
        s.commit()
        want = [e.segment.text for e in s.finish() if isinstance(e, FinalSegment)]
    assert len(want) == 1
    c = Conn(server)
    try:
        c.next()
        c.update(audio={"input": {"turn_detection": None}})
        c.next()
        send_audio(c, a24)
        c.update(audio={"input": {"format": FORMATS["pcm16"]}})
        send_audio(c, a16)
        c.send({"type": "input_audio_buffer.commit"})
        events = c.until(COMPLETED)
    finally:
        c.close()
    check_order([e for e in events if e["type"] != "session.updated"], vad=False)
    assert [e["transcript"] for e in events if e["type"] == COMPLETED] == want


# ------------------------------------------------------------------------------------------ bad input
def _assert_still_works(c: Conn, model, seconds: float = 0.5):
    """(turn_detection null and 16 kHz PCM) an append and a commit give the slice's transcript"""
    x = _int16(np.sin(np.arange(int(seconds * SR)) * 0.05 + len(c.seen)).astype(np.float32) * 0.3)
    c.append(x.tobytes())
    c.send({"type": "input_audio_buffer.commit"})
    events = c.until(COMPLETED)
    assert not [e for e in events if e["type"] == "error"], events
    assert events[-1]["transcript"] == model.transcribe(x, OPTIONS, sample_rate=SR, vad=None).text


def test_bad_events_leave_the_session_usable(server, model):
    """each bad event: one error event in OpenAI's shape (code, param, the client's event_id,
    a message naming the problem), nothing changed, and the session goes on"""
    c = Conn(server)
    try:
        c.next()
        c.update(audio={"input": {"format": FORMATS["pcm16"], "turn_detection": None}})
        before = c.next()["session"]
        odd = _int16(np.zeros(1601, np.float32)).tobytes()[:-1]  # 3201 bytes
        cases = [
            ("{not json", "invalid_json", None, "JSON"),
            ("[1, 2]", "invalid_json", None, "object"),
            ('{"type": 5}', "invalid_json", "type", "type"),
            ({"type": "response.create", "event_id": "evt_1"}, "unknown_event", "type", "response.create"),
            ({"type": "input_audio_buffer.append", "audio": "@@not base64@@", "event_id": "evt_2"}, "invalid_audio",
             "audio", "base64"),
            ({"type": "input_audio_buffer.append", "audio": 12}, "invalid_audio", "audio", "base64"),
            ({"type": "input_audio_buffer.append", "audio": b64(odd)}, "invalid_audio", "audio", "3201 bytes"),
            ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 44100}}}}}, "unsupported_format", "rate", "44100"),
            ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/opus"}}}}}, "unsupported_format", "type", "audio/opus"),
            ({"type": "session.update", "event_id": "evt_3", "session": {"type": "realtime"}}, None, "session.type",
             "realtime"),
            ({"type": "session.update", "session": "transcription"}, None, "session", "object"),
            ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "turn_detection": {"type": "semantic_vad"}}}}}, None, "turn_detection.type", "semantic_vad"),
            ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "noise_reduction": {"type": "near_field"}}}}}, None, "noise_reduction", "noise reduction"),
            ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "transcription": {"language": "klingon"}}}}}, None, "language", "klingon"),
            ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "format": FORMATS["pcmu"], "transcription": {"language": "klingon"}}}}}, None, "language", "klingon"),
            ({"type": "transcription_session.update", "session": {"input_audio_format": "opus"}}, "unsupported_format",
             "input_audio_format", "opus"),
            ({"type": "input_audio_buffer.commit", "event_id": "evt_4"}, "input_audio_buffer_commit_empty", None,
             "nothing to commit"),
            (b"\x00\x01binary", None, None, "binary"),
        ]
        for event, code, param, needle in cases:
            c.send(event) if isinstance(event, dict) else c.conn.send_raw(event)  # str: a text frame, bytes: binary
            err = c.next_but_deltas()
            assert err["type"] == "error", (event, err)
            e = err["error"]
            assert code is None or e["code"] == code, (event, e)
            assert e["code"] and e["type"] == "invalid_request_error", (event, e)
            assert param is None or (e["param"] or "").endswith(param), (event, e)
            assert needle in e["message"], (event, e)
            want_id = event.get("event_id") if isinstance(event, dict) else None
            assert e["event_id"] == want_id, (event, e)
            _assert_still_works(c, model)  # (after the odd append: the item is the good audio alone)
        c.update()
        assert c.next()["session"] == before  # no bad update changed anything
    finally:
        c.close()


def test_intent(server):
    """no intent is a transcription session too; any other intent: an error event and close 1008"""
    c = Conn(server, query={})
    assert c.next()["type"] == "session.created"
    c.close()
    c = Conn(server, query={"intent": "conversation"})
    err = c.error("unsupported_value")
    assert "intent" in err["message"]
    events, frame = c.closed()
    assert events == [] and frame is not None and frame.code == 1008


# ------------------------------------------------------------------------------------------ limits
def test_api_key(model):
    """wrong or missing key: HTTP 401 with OpenAI's JSON error before the upgrade; the Bearer
    header or the browsers' subprotocol key opens the session (the server picks `realtime`)"""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    s = Running(model, options=OPTIONS, api_key="sekret")
    try:
        url = s.ws_url + "/v1/realtime?intent=transcription"
        attempts = [lambda: Conn(s, api_key="wrong"),  # the SDK: Authorization: Bearer wrong
                    lambda: connect(url, open_timeout=WAIT_S).close(),  # no key at all
                    lambda: connect(url, open_timeout=WAIT_S,
                                    subprotocols=["realtime", "openai-insecure-api-key.wrong"]).close()]
        for attempt in attempts:
            with pytest.raises(InvalidStatus) as e:
                attempt()
            assert e.value.response.status_code == 401
            err = json.loads(bytes(e.value.response.body))["error"]
            assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key", err
        c = Conn(s, api_key="sekret")
        try:
            assert c.next()["type"] == "session.created"
        finally:
            c.close()
        with connect(s.ws_url + "/v1/realtime?intent=transcription", open_timeout=WAIT_S,
                     subprotocols=["realtime", "openai-insecure-api-key.sekret"]) as ws:
            assert ws.subprotocol == "realtime"
            first = json.loads(ws.recv(timeout=WAIT_S))
            check_event(first)
            assert first["type"] == "session.created"
    finally:
        s.stop()


def test_session_limit(model):
    """max_sessions=1: a second session gets session_limit_reached and close 1013; the first
    goes on; once it is gone a new one is accepted"""
    s = Running(model, options=OPTIONS, max_sessions=1)
    try:
        first = Conn(s)
        first.next()
        assert metric(s, "funasr_realtime_sessions") == 1
        second = Conn(s)
        err = second.error("session_limit_reached")
        assert "--max-sessions" in err["message"]
        _, frame = second.closed()
        assert frame is not None and frame.code == 1013
        first.update(audio={"input": {"format": FORMATS["pcm16"], "turn_detection": None}})
        first.next()
        _assert_still_works(first, model)
        first.close()
        deadline = time.monotonic() + 10
        while True:  # the server sees the close: its slot is free
            third = Conn(s)
            if third.next()["type"] == "session.created":
                break
            third.closed()
            assert time.monotonic() < deadline, "the closed session's slot was not freed"
            time.sleep(0.1)
        third.close()
    finally:
        s.stop()


def test_buffer_cap(model, clip):
    """max_buffer_seconds=2: an append that would hold more audio not yet final is refused whole
    (input_audio_buffer_full) and the session goes on; after the final the room is back"""
    s = Running(model, options=OPTIONS, max_buffer_seconds=2.0)
    try:
        c = Conn(s)
        c.next()
        c.update(audio={"input": {"format": FORMATS["pcm16"], "turn_detection": None}})
        c.next()
        pcm = _int16(clip[: 3 * SR])
        c.append(pcm[: 15 * 1600].tobytes())
        c.append(pcm[15 * 1600: 25 * 1600].tobytes())  # 2.5 s in all
        err = c.error("input_audio_buffer_full")
        assert "--max-buffer-seconds" in err["message"] and err["param"] == "audio"
        c.send({"type": "input_audio_buffer.commit"})
        done = c.until(COMPLETED)
        assert done[-1]["transcript"] == model.transcribe(pcm[: 15 * 1600], OPTIONS, sample_rate=SR, vad=None).text
        c.append(pcm[15 * 1600: 30 * 1600].tobytes())
        c.send({"type": "input_audio_buffer.commit"})
        done = c.until(COMPLETED)
        assert done[-1]["transcript"] == \
            model.transcribe(pcm[15 * 1600: 30 * 1600], OPTIONS, sample_rate=SR, vad=None).text
        assert not [e for e in done if e["type"] == "error"]
        c.close()
    finally:
        s.stop()


def test_idle_timeout(model):
    """session_idle_timeout=1: client events keep the session; a second without one ends it
    with an idle_timeout error and close 1000"""
    s = Running(model, options=OPTIONS, session_idle_timeout=1.0)
    try:
        c = Conn(s)
        c.next()
        for _ in range(5):  # 2 s of activity, an event every 0.4 s
            time.sleep(0.4)
            c.send({"type": "input_audio_buffer.clear"})
            assert c.next()["type"] == "input_audio_buffer.cleared"
        t0 = time.monotonic()
        err = c.error("idle_timeout", timeout=5)
        assert 0.8 < time.monotonic() - t0 < 3.0
        assert "1 s" in err["message"]
        events, frame = c.closed(5)
        assert events == [] and frame is not None and frame.code == 1000
    finally:
        s.stop()


# ------------------------------------------------------------------------------------------ faults
class _RecordingEngine:
    """the Model's engine with every job it is given recorded"""

    def __init__(self, engine):
        self._engine, self.jobs = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def submit(self, *args, **kwargs):
        job = self._engine.submit(*args, **kwargs)
        self.jobs.append(job)
        return job


def test_client_gone_mid_segment_frees_the_engine(ctc_gguf, clip, tmp_path):
    """a client that goes away with ~50 finals of long decodes queued: every job of its stream
    is cancelled at once, the session is gone from the gauges, and an HTTP request is served"""
    import httpx

    from fixtures.speech import write_wav16k

    # 1 s segments (no VAD), 800 tokens each, never stopping early: ~40000 decode steps in all,
    # about 10 s of work on this machine had the jobs not been cancelled
    slow = TranscribeOptions(max_segment_seconds=1.0, ignore_eos=True, max_new_tokens=800, max_tokens_per_second=None,
                             repetition_guard=False)
    with Model(*ctc_gguf, **EXACT) as m:
        engine = m._asr = _RecordingEngine(m._asr)
        s = Running(m, options=slow, partials=None)
        try:
            c = Conn(s)
            c.next()
            c.update(audio={"input": {"format": FORMATS["pcm16"], "turn_detection": None}})
            c.next()
            pcm = _int16(np.tile(clip, 5)[: 50 * SR + SR // 2])
            for i in range(0, len(pcm), 16000):
                c.append(pcm[i:i + 16000].tobytes())
            deadline = time.monotonic() + WAIT_S
            while len(engine.jobs) < 40:
                assert time.monotonic() < deadline, f"{len(engine.jobs)} jobs submitted"
                time.sleep(0.05)
            assert metric(s, "funasr_realtime_sessions") == 1 and metric(s, "funasr_realtime_lag_seconds") > 30
            assert not all(j.done for j in engine.jobs)
            c.close()
            t0 = time.monotonic()
            while not all(j.done for j in engine.jobs):
                assert time.monotonic() - t0 < 3, f"{sum(not j.done for j in engine.jobs)} jobs still running"
                time.sleep(0.02)
            while metric(s, "funasr_realtime_sessions") != 0:
                assert time.monotonic() - t0 < 3, "the session is still counted"
                time.sleep(0.02)
            assert metric(s, "funasr_realtime_lag_seconds") == 0
            wav = write_wav16k(tmp_path / "one.wav", clip[:SR])
            t0 = time.monotonic()
            with open(wav, "rb") as f:
                r = httpx.post(s.url + "/v1/audio/transcriptions", files={"file": ("a.wav", f, "audio/wav")},
                               data={"model": "x"}, timeout=WAIT_S)
            assert r.status_code == 200 and r.json()["text"] == m.transcribe(wav, slow).text
            assert time.monotonic() - t0 < 5
        finally:
            s.stop()
            m._asr = engine._engine


def test_server_shutdown_with_open_sessions(model, clip):
    """stopping the server with sessions open (one mid-item): each client gets a close frame,
    and the server stops, within seconds"""
    s = Running(model, options=OPTIONS)
    conns = []
    try:
        for _ in range(2):
            conns.append(Conn(s))
            conns[-1].next()
        conns[0].update(audio={"input": {"turn_detection": None}})
        conns[0].next()
        send_audio(conns[0], chunks_of(clip[: 2 * SR], "pcm24"))
        t0 = time.monotonic()
        stopper = threading.Thread(target=s.stop, daemon=True)
        stopper.start()
        for c in conns:
            events, frame = c.closed(10)
            assert frame is not None and frame.code in (1000, 1001, 1012), (frame, events)  # a clean close
        stopper.join(15)
        assert not stopper.is_alive() and not s.thread.is_alive(), "the server did not stop"
        assert time.monotonic() - t0 < 15
    finally:
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - already closed
                pass
        s.stop()


def test_commit_inside_speech_leaves_no_empty_item(server, model, clip):
    """server_vad: a commit while the VAD is inside speech ends the item at the commit point; the
    rest of that speech becomes the next item only once audio for it arrives (announced with its
    first partial or its end): nothing is announced before, a second commit with no audio after
    the first is commit_empty (not an empty item), and the next item starts where the first stopped"""
    chunks = chunks_of(clip, "pcm24")
    with model.stream(OPTIONS, vad="fsmn", partials=None) as s:
        events = []
        for _, a in chunks:
            events += s.feed(a, 24000)
        events += s.finish()
    start = next(e.time for e in events if isinstance(e, SpeechStarted))
    stop = next(e.time for e in events if isinstance(e, SpeechStopped))
    assert stop - start > 1.0, (start, stop)
    k = int((start + stop) / 2 / 0.1)  # the 100 ms append in the middle of the first speech
    c = Conn(server)
    try:
        c.next()
        send_audio(c, chunks[:k])
        c.send({"type": "input_audio_buffer.commit"})
        first = c.until(COMPLETED)
        kinds = [e["type"] for e in first if e["type"].startswith("input_audio_buffer.")]
        assert kinds == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed"], kinds
        end_ms = next(e["audio_end_ms"] for e in first if e["type"] == "input_audio_buffer.speech_stopped")
        c.send({"type": "input_audio_buffer.commit"})
        c.error("input_audio_buffer_commit_empty")
        assert not [e for e in c.quiet(1.0) if e["type"] != "error"]
        send_audio(c, chunks[k:int(stop / 0.1) + 20])  # the rest of the speech and the VAD's end silence
        started = c.next_but_deltas()
        assert started["type"] == "input_audio_buffer.speech_started" and started["audio_start_ms"] == end_ms, started
    finally:
        c.close()
