"""POST /v1/audio/transcriptions: OpenAI's multipart form -> TranscribeOptions -> the model -> the
answer in the asked format, or server-sent events (see the package's docstring for the fields)."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .. import formats
from ..options import TranscribeOptions, vad_mode
from .admission import Ticket
from .errors import ApiError
from .metrics import AUDIO_SECONDS
from .responses import MEDIA_TYPES, RESPONSE_FORMATS, verbose_json

@dataclass(frozen=True)
class TranscriptionRequest:
    """What a form asks for."""
    options: TranscribeOptions
    format: str
    words: bool     # timestamp_granularities has "word"
    stream: bool


async def transcriptions(request: Request) -> Response:
    server = request.app.state.server
    t0 = time.perf_counter()
    ticket: Optional[Ticket] = None
    form = None
    streaming = False  # the event stream then owns the ticket and the form
    try:
        server.check_key(request)
        ticket = server.admission.enter()
        form = await read_form(request, server.max_upload_mb)
        upload = audio_upload(form)
        asked = parse_form(form, server.options, server.model)
        await ticket.start(server.request_timeout)
        try:
            pending = await asyncio.to_thread(server.model.start, upload.file, asked.options)
        except ValueError as e:  # unreadable, truncated or empty audio; a bad option for this model
            raise ApiError(400, str(e), param="file") from None
        if asked.stream:
            streaming = True
            return event_stream(request, pending, ticket, form)
        result = await wait_for_result(request, pending, t0 + server.request_timeout, server.request_timeout)
        setattr(request.state, AUDIO_SECONDS, result.duration)
        return render(result, asked)
    except Exception as e:  # noqa: BLE001 - every failure answers in OpenAI's error shape
        return (e if isinstance(e, ApiError) else ApiError.internal(e)).response()
    finally:
        if not streaming:
            if ticket is not None:
                ticket.close()
            if form is not None:
                await form.close()


class _TooLarge(Exception):
    pass


async def read_form(request: Request, max_upload_mb: float):
    """The multipart form, with the upload counted as it streams in (413 past the limit)."""
    limit = int(max_upload_mb * 1024 * 1024)
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415 if ctype else 400, f"expected a multipart/form-data upload, got {ctype or 'no content type'!r}")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"upload of {int(length)} bytes is over the limit of {max_upload_mb:g} MB",
                       code="file_too_large")
    received = 0
    receive = request.receive

    async def counting_receive():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge()
        return message

    try:
        return await Request(request.scope, counting_receive).form(max_files=1, max_fields=64)
    except _TooLarge:
        raise ApiError(413, f"upload is over the limit of {max_upload_mb:g} MB", code="file_too_large") from None
    except Exception as e:  # noqa: BLE001 - a malformed body
        raise ApiError(400, f"malformed multipart form: {e}") from None


def audio_upload(form):
    """The form's non-empty ``file`` upload, not of a non-audio content type."""
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "the form has no file field (the audio upload)", param="file")
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    if ctype.startswith(("text/", "image/", "video/")) or ctype in ("application/json", "application/pdf"):
        raise ApiError(415, f"the upload's content type {ctype!r} is not audio", param="file",
                       code="unsupported_media_type")
    upload.file.seek(0, 2)
    if upload.file.tell() == 0:
        raise ApiError(400, "the uploaded file is empty", param="file")
    upload.file.seek(0)
    return upload


def parse_form(form, base: TranscribeOptions, model) -> TranscriptionRequest:
    """The form's fields over the server's options ``base`` (a field left out keeps base's value)."""
    fmt = (form.get("response_format") or "json").strip()
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {fmt!r}",
                       param="response_format")
    words = _word_granularity(form)
    _check_temperature(form.get("temperature"))
    vad = _vad(form.get("vad"), base, model)
    hotwords = _words(form.get("hotwords")) + _words(form.get("prompt"))
    try:
        opts = base.replace(language=form.get("language") or base.language, itn=_bool(form.get("itn"), "itn", base.itn),
                            hotwords=hotwords or base.hotwords, word_timestamps=words, vad=vad)
    except (ValueError, TypeError) as e:
        raise ApiError(400, str(e), param="language" if "language" in str(e) else None) from None
    if words:
        try:
            model.check_word_timestamps()
        except ValueError as e:
            raise ApiError(400, str(e), param="timestamp_granularities") from None
    return TranscriptionRequest(opts, fmt, words, _bool(form.get("stream"), "stream", False))


def _word_granularity(form) -> bool:
    grans = set(form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
    if grans - {"segment", "word"}:
        raise ApiError(400, f"timestamp_granularities must be segment and/or word, got {sorted(grans)}",
                       param="timestamp_granularities")
    return "word" in grans


def _check_temperature(t: Optional[str]) -> None:
    """Decoding is greedy: any temperature in [0, 1] is accepted and changes nothing."""
    if t in (None, ""):
        return
    try:
        tv = float(t)
    except ValueError:
        raise ApiError(400, f"temperature must be a number, got {t!r}", param="temperature") from None
    if not 0.0 <= tv <= 1.0:
        raise ApiError(400, f"temperature must be in [0, 1], got {t!r} (decoding is greedy)", param="temperature")


def _vad(name: Optional[str], base: TranscribeOptions, model) -> Optional[str]:
    if name is None or not name.strip():
        return base.vad
    try:
        vad = vad_mode(name.strip())
    except ValueError as e:
        raise ApiError(400, str(e), param="vad") from None
    if vad == "fsmn" and model.vad is None:
        raise ApiError(400, "vad=fsmn: this server has no VAD model (start it with --vad-model)", param="vad")
    return vad


def _bool(value: Optional[str], name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, f"{name} must be true or false, got {value!r}", param=name)


def _words(s: Optional[str]) -> list:
    return [w.strip() for w in (s or "").split(",") if w.strip()]


async def wait_for_result(request: Request, pending, deadline: float, timeout: float):
    """The result, cancelled when the client goes away or ``deadline`` (perf_counter) passes."""
    task = asyncio.ensure_future(asyncio.to_thread(pending.result))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                try:
                    return task.result()
                except RuntimeError as e:
                    raise ApiError(500, str(e), type="server_error") from None
            if await request.is_disconnected():
                pending.cancel()
                raise ApiError(499, "the client closed the request", code="client_closed")
            if time.perf_counter() > deadline:
                pending.cancel()
                raise ApiError(504, f"the transcription took longer than {timeout:g} s", type="server_error",
                               code="timeout")
    finally:
        if not task.done():
            try:
                await task
            except Exception:  # noqa: BLE001 - cancelled above
                pass


def render(result, asked: TranscriptionRequest) -> Response:
    if asked.format == "verbose_json":
        return JSONResponse(verbose_json(result, asked.words))
    if asked.format == "json":
        return JSONResponse({"text": result.text})
    fmt = "txt" if asked.format == "text" else asked.format
    return Response(formats.render(result, fmt), media_type=MEDIA_TYPES[asked.format])


def event_stream(request: Request, pending, ticket: Ticket, form) -> StreamingResponse:
    """``transcript.text.delta`` per finished segment, then ``transcript.text.done``; the ticket and
    the form are let go when the stream ends, however it ends."""
    async def events():
        try:
            segments = pending.segments()
            while (seg := await asyncio.to_thread(next, segments, None)) is not None:
                yield _event({"type": "transcript.text.delta", "delta": _delta(pending, seg)})
            result = await asyncio.to_thread(pending.result)
            setattr(request.state, AUDIO_SECONDS, result.duration)
            yield _event({"type": "transcript.text.done", "text": result.text})
        finally:
            if not pending.finished:
                pending.cancel()
            ticket.close()
            await form.close()

    return StreamingResponse(events(), media_type="text/event-stream")


def _event(obj: dict) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


def _delta(pending, seg) -> str:
    """The text a segment adds to what came before, joined as the final text joins segments."""
    return seg.text if len(pending.done_segments) == 1 else " " + seg.text

