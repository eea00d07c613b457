"""WebSocket ``/v1/realtime``: OpenAI Realtime transcription sessions (``?intent=transcription``)
over :meth:`funasr_cpp.Model.stream`, in the process and batch of ``/v1/audio/transcriptions``.

One session = one TranscriptionStream (made at the first audio, made again when an update changes
how it decodes); its segments are the session's items. A thread per stream iterates its events and
hands them to the event loop, where they become the protocol's events in its order per item:
``speech_started`` (server_vad only), ``delta``*, ``speech_stopped`` (server_vad only),
``committed``, ``completed``. The client's events are handled one at a time in arrival order; a
bad one gets an ``error`` event and the session goes on. Every way out of a session closes its
stream, which cancels its engine jobs at once.

Deltas: OpenAI's only append. A partial hypothesis that extends what was sent for the item is
sent as its new suffix (``"replace": false``); one that revises it is sent whole with the
extension field ``"replace": true`` (a client that only appends shows it after the old text until
``completed``, whose ``transcript`` is authoritative)."""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from starlette.websockets import WebSocket

from ..streaming import FinalSegment, PartialText, SpeechStarted, SpeechStopped
from .errors import ApiError
from .realtime_errors import RealtimeError
from .realtime_session import SessionConfig

REALTIME = "/v1/realtime"
KEY_PROTOCOL = "openai-insecure-api-key."   # how a browser, which cannot set headers, sends its key
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_AGAIN = 1000, 1008, 1011, 1013


@dataclass
class Limits:
    """The realtime settings of the server and its open sessions (``app.state.realtime``)."""
    max_sessions: int = 8
    idle_timeout: float = 120.0        # seconds without a client event
    max_buffer_seconds: float = 60.0   # audio appended and not yet final, per session (see pending_seconds)
    partials: Optional[str] = "auto"
    partial_interval: Optional[float] = 0.5
    sessions: set = field(default_factory=set)

    def lag_seconds(self) -> float:
        """The most audio a session holds whose transcript is not final yet."""
        return max((s.pending_seconds() for s in list(self.sessions)), default=0.0)


@dataclass
class _Item:
    id: str
    start_ms: float
    sent: str = ""          # the partial text the client has (its deltas applied)
    held: bool = False      # opened by a commit inside speech: announced once it has audio


async def realtime(websocket: WebSocket) -> None:
    server = websocket.app.state.server
    limits: Limits = websocket.app.state.realtime
    metrics = websocket.app.state.metrics
    offered = list(websocket.scope.get("subprotocols") or [])
    if server.api_key is not None and not _authorized(websocket, offered, server.api_key):
        await _deny(websocket, ApiError(401, "invalid or missing API key (Authorization: Bearer KEY, or the "
                                             f"WebSocket subprotocol {KEY_PROTOCOL}KEY)",
                                        type="authentication_error", code="invalid_api_key"))
        return
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    intent = websocket.query_params.get("intent", "transcription")
    refusal = None
    if intent != "transcription":
        refusal = (RealtimeError("unsupported_value", f"intent {intent!r}: this server runs transcription sessions "
                                 "only (?intent=transcription)", param="intent"), CLOSE_POLICY)
    elif len(limits.sessions) >= limits.max_sessions:
        refusal = (RealtimeError("session_limit_reached", f"the server has {limits.max_sessions} realtime sessions "
                                 "open, its limit (--max-sessions): try again later", type="server_error"),
                   CLOSE_TRY_AGAIN)
    elif server.model.closed:
        refusal = (RealtimeError("server_closed", "the model is closed", type="server_error"), CLOSE_ERROR)
    if refusal is not None:
        await websocket.send_text(json.dumps(_with_id(refusal[0].event())))
        await websocket.close(refusal[1])
        return
    session = Session(server, limits, metrics, websocket)
    limits.sessions.add(session)
    try:
        await session.run()
    finally:
        limits.sessions.discard(session)
        await session.end()


def _authorized(websocket: WebSocket, offered: list, key: str) -> bool:
    return websocket.headers.get("authorization", "") == f"Bearer {key}" or f"{KEY_PROTOCOL}{key}" in offered


async def _deny(websocket: WebSocket, error: ApiError) -> None:
    """Refuse before the upgrade with the HTTP answer (where the server has the denial extension)."""
    try:
        await websocket.send_denial_response(error.response())
    except RuntimeError:  # no denial responses: a refused handshake (HTTP 403)
        await websocket.close(CLOSE_POLICY)


def _with_id(event: dict) -> dict:
    return {"event_id": f"event_{uuid.uuid4().hex[:24]}", **event}


class Session:
    def __init__(self, server: Any, limits: Limits, metrics: Any, websocket: WebSocket):
        self.server, self.limits, self.metrics, self.ws = server, limits, metrics, websocket
        self.id = f"sess_{uuid.uuid4().hex[:24]}"
        self.has_vad = server.model.vad is not None
        self.config = SessionConfig.initial(server.model_name, self.has_vad)
        self.loop = asyncio.get_running_loop()
        self.out: "asyncio.Queue[Any]" = asyncio.Queue()
        self.stream: Any = None
        self.serial = 0                 # streams made; an event's stream is known by its serial
        self.stream_vad: dict = {}      # serial -> whether that stream segments with the VAD
        self.offset_ms = 0.0            # the session time at which the current stream began
        self.items: dict = {}           # (serial, segment index) -> _Item, until its final is sent
        self.dropped: set = set()       # (serial, index) of the segments a clear dropped
        self.previous_item_id: Optional[str] = None
        self.last_stop: dict = {}       # serial -> stream time (s) at which its last item ended
        self.close_code: Optional[tuple] = None
        self.client_gone = False
        self._sender: Optional[asyncio.Task] = None

    # -- the session's life ------------------------------------------------------------------
    async def run(self) -> None:
        self._sender = asyncio.create_task(self._send_loop())
        self.metrics.realtime_sessions += 1
        try:
            self.emit({"type": "session.created", "session": self.config.session_object(self.id)})
            await self._receive_loop()
        finally:
            self.metrics.realtime_sessions -= 1

    async def end(self) -> None:
        """Close the stream (its jobs cancelled), send what is queued and the close frame."""
        stream, self.stream = self.stream, None
        if stream is not None:
            await asyncio.to_thread(stream.close)
        self.out.put_nowait(("close", *(self.close_code or (CLOSE_NORMAL, ""))))
        if self._sender is not None:
            await self._sender

    async def _receive_loop(self) -> None:
        while self.close_code is None:
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout=self.limits.idle_timeout)
            except asyncio.TimeoutError:
                self.emit(RealtimeError("idle_timeout", f"no client event for {self.limits.idle_timeout:g} s: the "
                                        "session is closed").event())
                self.close_code = (CLOSE_NORMAL, "idle timeout")
                return
            if message["type"] == "websocket.disconnect":
                self.client_gone = True
                return
            if self.close_code is not None:
                return
            try:
                await self._handle(message)
            except RealtimeError as e:
                self.emit(e.event())

    async def _send_loop(self) -> None:
        while True:
            item = await self.out.get()
            try:
                if isinstance(item, tuple):  # ("close", code, reason)
                    if not self.client_gone:
                        await self.ws.close(item[1], item[2])
                    return
                if not self.client_gone:
                    await self.ws.send_text(json.dumps(item, ensure_ascii=False))
            except Exception:  # noqa: BLE001 - the client went away mid-send: nothing more to send
                self.client_gone = True

    def emit(self, event: dict) -> None:
        self.out.put_nowait(_with_id(event))

    # -- client events -----------------------------------------------------------------------
    async def _handle(self, message: dict) -> None:
        text = message.get("text")
        if text is None:
            raise RealtimeError("invalid_json", "binary frames are not events: send each event as a JSON text frame")
        try:
            event = json.loads(text)
        except ValueError as e:
            raise RealtimeError("invalid_json", f"the message is not valid JSON: {e}") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise RealtimeError("invalid_json", "a client event is a JSON object with a string 'type'", param="type")
        handler = HANDLERS.get(event["type"])
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            if handler is None:
                raise RealtimeError("unknown_event", f"unknown or unsupported client event type {event['type']!r} "
                                    f"(a transcription session takes {', '.join(HANDLERS)})", param="type")
            await handler(self, event)
        except RealtimeError as e:
            e.event_id = event_id
            raise

    async def _session_update(self, event: dict) -> None:
        await self._apply(self.config.update(event.get("session"), self.has_vad))
        self.emit({"type": "session.updated", "session": self.config.session_object(self.id)})

    async def _legacy_session_update(self, event: dict) -> None:
        await self._apply(self.config.update_legacy(event.get("session"), self.has_vad))
        self.emit({"type": "transcription_session.updated", "session": self.config.legacy_session_object(self.id)})

    async def _append(self, event: dict) -> None:
        fmt = self.config.format
        samples = fmt.decode(event.get("audio"))
        if not len(samples):
            return
        seconds = len(samples) / fmt.rate
        cap = self.limits.max_buffer_seconds
        if self.pending_seconds() + seconds > cap:
            raise RealtimeError("input_audio_buffer_full", f"the session holds {self.pending_seconds():.1f} s of audio "
                                f"whose transcript is not final, and its limit is {cap:g} s (--max-buffer-seconds): "
                                "this append was dropped; send audio no faster than real time, or commit",
                                param="audio")
        stream = self._stream()
        try:
            await asyncio.to_thread(stream.feed, samples, fmt.rate)
        except RuntimeError as e:  # the stream failed: reported by its thread too
            raise RealtimeError("server_error", str(e), type="server_error") from None
        self.metrics.realtime_audio_seconds += seconds

    async def _commit(self, event: dict) -> None:
        stream = self.stream
        # (an item a commit inside speech opened, with no audio since: nothing to commit either)
        if stream is None or stream.open_index is None or not stream.open_seconds:
            raise RealtimeError("input_audio_buffer_commit_empty", "nothing to commit: no audio since the last commit"
                                + (" that the VAD took for speech" if self.config.turn_detection else ""))
        await asyncio.to_thread(stream.commit)

    async def _clear(self, event: dict) -> None:
        stream = self.stream
        if stream is not None:
            index = stream.open_index
            await asyncio.to_thread(stream.clear)
            if index is not None:
                self.dropped.add((self.serial, index))
                self.items.pop((self.serial, index), None)
        self.emit({"type": "input_audio_buffer.cleared"})

    # -- the stream --------------------------------------------------------------------------
    async def _apply(self, config: SessionConfig) -> None:
        """Take a new configuration; a stream made for the old one finishes first (its open item
        is committed and its final comes) when the new one would decode differently."""
        if self.stream is not None and config.changes_stream(self.config):
            stream, self.stream = self.stream, None
            try:
                await asyncio.to_thread(stream.finish)
            except RuntimeError:
                pass  # a failed stream: its thread reports it
            self.offset_ms += stream.time * 1000.0
        self.config = config

    def _stream(self) -> Any:
        if self.stream is not None:
            return self.stream
        options = self.config.stream_options(self.server.options)
        try:
            stream = self.server.model.stream(options, partials=self.limits.partials,
                                              partial_interval=self.limits.partial_interval)
        except (ValueError, RuntimeError) as e:
            raise RealtimeError("server_error", f"cannot start the transcription: {e}", type="server_error") from None
        self.serial += 1
        serial, offset = self.serial, self.offset_ms
        self.stream_vad[serial] = self.config.turn_detection is not None
        events = iter(stream)  # here, before the first feed: from now on every event goes to the iterator

        def forward() -> None:
            try:
                for ev in events:
                    self._call(self._on_event, serial, offset, ev)
            except Exception as e:  # noqa: BLE001 - the stream failed: the session ends with it
                self._call(self._on_failure, e)

        threading.Thread(target=forward, name="funasr-cpp-realtime", daemon=True).start()
        self.stream = stream
        return stream

    def _call(self, fn: Any, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone (server stopped): nobody to tell
            pass

    def _on_event(self, serial: int, offset_ms: float, ev: Any) -> None:
        key = (serial, ev.index)
        if key in self.dropped:
            return
        vad = self.stream_vad[serial]
        if isinstance(ev, SpeechStarted):
            item = self.items[key] = _Item(f"item_{uuid.uuid4().hex[:24]}", offset_ms + ev.time * 1000.0)
            # an item that starts where the last one stopped (a commit, or a length cut, inside
            # speech that goes on) is announced once it has audio (a partial or its end), and
            # dropped if it ends empty: a commit at the end of the audio leaves no empty item
            item.held = vad and self.last_stop.get(serial) == ev.time
            if vad and not item.held:
                self._announce(item)
            return
        item = self.items.get(key)
        if item is None:
            return
        if isinstance(ev, SpeechStopped):
            self.last_stop[serial] = ev.time
        if isinstance(ev, SpeechStopped) and item.held and offset_ms + ev.time * 1000.0 <= item.start_ms:
            del self.items[key]
            self.dropped.add(key)  # its (empty) final is not sent either
            return
        if item.held:
            item.held = False
            self._announce(item)
        if isinstance(ev, PartialText):
            if ev.text == item.sent:
                return
            extends = ev.text.startswith(item.sent)
            delta = ev.text[len(item.sent):] if extends else ev.text
            item.sent = ev.text
            self.emit({"type": "conversation.item.input_audio_transcription.delta", "item_id": item.id,
                       "content_index": 0, "delta": delta, "replace": not extends})
        elif isinstance(ev, SpeechStopped):
            if vad:
                self.emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": round(offset_ms + ev.time * 1000),
                           "item_id": item.id})
            self.emit({"type": "input_audio_buffer.committed", "item_id": item.id,
                       "previous_item_id": self.previous_item_id})
            self.previous_item_id = item.id
        elif isinstance(ev, FinalSegment):
            del self.items[key]
            seg = ev.segment
            self.emit({"type": "conversation.item.input_audio_transcription.completed", "item_id": item.id,
                       "content_index": 0, "transcript": seg.text,
                       "usage": {"type": "duration", "seconds": round(max(0.0, seg.end - seg.start), 3)}})

    def _announce(self, item: _Item) -> None:
        self.emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": round(item.start_ms),
                   "item_id": item.id})

    def _on_failure(self, exc: BaseException) -> None:
        self.emit(RealtimeError("server_error", f"the transcription failed: {exc}", type="server_error").event())
        if self.close_code is None:
            self.close_code = (CLOSE_ERROR, "transcription failed")
            self.out.put_nowait(("close", *self.close_code))

    def pending_seconds(self) -> float:
        """Audio this session holds whose transcript is not final: from the stream's oldest unfinished
        audio on (asked of the stream, not of the events on their way here). With server_vad the
        open item is left out: it must grow for the VAD to close it (refusing its audio would keep
        it open for ever), and the VAD cuts it at max_segment_seconds anyway; what piles up when
        decoding falls behind are the closed items. A stream an update finished has no unfinished
        audio: finish() waited for its finals."""
        stream = self.stream
        if stream is None:
            return 0.0
        since = stream.unfinished_since(include_open=self.config.turn_detection is None)
        return 0.0 if since is None else max(0.0, stream.time - since)


HANDLERS = {
    "session.update": Session._session_update,
    "transcription_session.update": Session._legacy_session_update,
    "input_audio_buffer.append": Session._append,
    "input_audio_buffer.commit": Session._commit,
    "input_audio_buffer.clear": Session._clear,
}
