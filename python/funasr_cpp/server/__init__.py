"""``funasr-cpp serve``: an OpenAI-compatible transcription server (Starlette + uvicorn, the
``funasr-cpp[server]`` extra).

Endpoints:

- ``POST /v1/audio/transcriptions``: OpenAI's multipart form. ``file`` (required), ``model``
  (any name; there is one model), ``language`` (ISO code or upstream name), ``prompt`` (Fun-ASR
  has no free-text context: it becomes its hotwords, split at commas), ``response_format`` =
  json | text | srt | vtt | verbose_json, ``timestamp_granularities[]`` = segment | word (word
  needs the checkpoint's CTC head), ``temperature`` (decoding is greedy: any value in [0, 1] is
  accepted and changes nothing), ``stream`` (true: server-sent events ``transcript.text.delta``,
  one per finished segment, then ``transcript.text.done``). Extensions: ``hotwords`` (comma
  separated), ``itn`` (true/false), ``vad`` (fsmn | energy | none).
- ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text format).

Concurrent requests share the one model: their segments are decoded together in its batched
engine. At most ``max_concurrency`` requests transcribe at a time and ``max_queue`` more wait;
beyond that the answer is 503 with ``Retry-After``. A request over ``request_timeout`` seconds is
ended with 504, and one whose client goes away is cancelled; either way its jobs leave the batch.
Errors come in OpenAI's JSON shape (``{"error": {"message", "type", "param", "code"}}``): 400 for
a malformed form or a bad value (an unreadable upload carries the decoder's message), 401 for a
wrong or missing API key, 413 for an upload over ``max_upload_mb`` (counted while it streams in),
415 for a non-audio content type. Uploads go to a temporary file that is deleted when the request
ends.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .. import formats
from ..options import TranscribeOptions

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
_MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "text": "text/plain; charset=utf-8",
                "srt": "application/x-subrip; charset=utf-8", "vtt": "text/vtt; charset=utf-8"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


class _TooLarge(Exception):
    pass


@dataclass
class Metrics:
    requests: dict = field(default_factory=dict)   # status code -> count
    audio_seconds: float = 0.0
    processing_seconds: float = 0.0
    running: int = 0
    waiting: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int) -> None:
        with self.lock:
            self.requests[status] = self.requests.get(status, 0) + 1

    def text(self) -> str:
        lines = ["# HELP funasr_requests_total Transcription requests by HTTP status.",
                 "# TYPE funasr_requests_total counter"]
        with self.lock:
            lines += [f'funasr_requests_total{{status="{k}"}} {v}' for k, v in sorted(self.requests.items())]
            lines += ["# HELP funasr_audio_seconds_total Seconds of audio transcribed.",
                      "# TYPE funasr_audio_seconds_total counter", f"funasr_audio_seconds_total {self.audio_seconds:.3f}",
                      "# HELP funasr_processing_seconds_total Wall seconds spent transcribing.",
                      "# TYPE funasr_processing_seconds_total counter",
                      f"funasr_processing_seconds_total {self.processing_seconds:.3f}",
                      "# HELP funasr_requests_in_progress Requests transcribing now.",
                      "# TYPE funasr_requests_in_progress gauge", f"funasr_requests_in_progress {self.running}",
                      "# HELP funasr_queue_depth Requests waiting for a transcription slot.",
                      "# TYPE funasr_queue_depth gauge", f"funasr_queue_depth {self.waiting}"]
        return "\n".join(lines) + "\n"


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


def verbose_json(result, words: bool) -> dict:
    """OpenAI's verbose_json: task, language, duration, text, segments (and words)."""
    out = {"task": "transcribe", "language": result.language or "", "duration": result.duration, "text": result.text,
           "segments": [{"id": i, "seek": 0, "start": s.start, "end": s.end, "text": s.text, "tokens": list(s.tokens),
                         "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0}
                        for i, s in enumerate(result.segments)]}
    if words:
        out["words"] = [{"word": w.text, "start": w.start, "end": w.end} for s in result.segments for w in s.words]
    return out


def create_app(model, *, model_name: str = "fun-asr-nano", api_key: Optional[str] = None, max_concurrency: int = 4,
               max_queue: int = 16, max_upload_mb: float = 100.0, request_timeout: float = 600.0,
               options: Optional[TranscribeOptions] = None):
    """The ASGI app around a loaded :class:`funasr_cpp.Model` (not closed by the app). ``options``:
    the server's TranscribeOptions, which each request's form fields change."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    if max_concurrency < 1 or max_queue < 0 or not max_upload_mb > 0 or not request_timeout > 0:
        raise ValueError("max_concurrency >= 1, max_queue >= 0, max_upload_mb > 0 and request_timeout > 0 are required")
    base = TranscribeOptions.build(options)
    metrics = Metrics()
    slots = asyncio.Semaphore(max_concurrency)
    limit = int(max_upload_mb * 1024 * 1024)

    def error_response(e: ApiError) -> JSONResponse:
        metrics.count(e.status)
        body = {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}}
        return JSONResponse(body, status_code=e.status, headers=e.headers)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {api_key}":
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)", type="authentication_error",
                           code="invalid_api_key")

    async def read_form(request: Request):
        """The multipart form, with the upload counted as it streams in (413 past the limit)."""
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
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed body
            raise ApiError(400, f"malformed multipart form: {e}") from None

    def options_from(form) -> tuple[TranscribeOptions, str, bool, bool]:
        fmt = (form.get("response_format") or "json").strip()
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {fmt!r}",
                           param="response_format")
        grans = set(form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
        if grans - {"segment", "word"}:
            raise ApiError(400, f"timestamp_granularities must be segment and/or word, got {sorted(grans)}",
                           param="timestamp_granularities")
        words = "word" in grans
        t = form.get("temperature")
        if t not in (None, ""):
            try:
                tv = float(t)
            except ValueError:
                raise ApiError(400, f"temperature must be a number, got {t!r}", param="temperature") from None
            if not 0.0 <= tv <= 1.0:
                raise ApiError(400, f"temperature must be in [0, 1], got {t!r} (decoding is greedy)", param="temperature")
        vad = (form.get("vad") or "auto").strip()
        if vad not in ("auto", "fsmn", "energy", "none"):
            raise ApiError(400, f"vad must be fsmn, energy or none, got {vad!r}", param="vad")
        hotwords = _words(form.get("hotwords")) + _words(form.get("prompt"))
        try:
            opts = base.replace(language=(form.get("language") or None), itn=_bool(form.get("itn"), "itn", base.itn),
                                hotwords=hotwords or base.hotwords, word_timestamps=words,
                                vad=None if vad == "none" else vad)
        except (ValueError, TypeError) as e:
            param = "language" if "language" in str(e) else None
            raise ApiError(400, str(e), param=param) from None
        if vad == "fsmn" and model.vad is None:
            raise ApiError(400, "vad=fsmn: this server has no VAD model (start it with --vad-model)", param="vad")
        if words:
            try:
                model.check_word_timestamps()
            except ValueError as e:
                raise ApiError(400, str(e), param="timestamp_granularities") from None
        return opts, fmt, words, _bool(form.get("stream"), "stream", False)

    async def transcriptions(request: Request) -> Response:
        t0 = time.perf_counter()
        form = None
        admitted = False
        try:
            check_key(request)
            # admission at arrival (one event loop: the check and the count cannot interleave)
            if metrics.running + metrics.waiting >= max_concurrency + max_queue:
                raise ApiError(503, "the server is busy: all transcription slots and the queue are taken",
                               type="server_error", code="overloaded", headers={"Retry-After": "1"})
            metrics.waiting += 1
            admitted = True
            form = await read_form(request)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "the form has no file field (the audio upload)", param="file")
            ctype = (upload.content_type or "").split(";")[0].strip().lower()
            if ctype.startswith(("text/", "image/", "video/")) or ctype in ("application/json", "application/pdf"):
                raise ApiError(415, f"the upload's content type {ctype!r} is not audio", param="file",
                               code="unsupported_media_type")
            opts, fmt, words, stream = options_from(form)
            upload.file.seek(0, 2)
            if upload.file.tell() == 0:
                raise ApiError(400, "the uploaded file is empty", param="file")
            upload.file.seek(0)
            try:
                await asyncio.wait_for(slots.acquire(), timeout=request_timeout)
            except asyncio.TimeoutError:
                raise ApiError(504, "timed out waiting for a transcription slot", type="server_error",
                               code="timeout") from None
            metrics.waiting -= 1
            admitted = False
            metrics.running += 1
            handed_over = False  # to the event stream, which releases the slot when it ends
            try:
                try:
                    pending = await asyncio.to_thread(model.start, upload.file, opts)
                except ValueError as e:  # unreadable audio, bad option for this model
                    raise ApiError(400, str(e), param="file") from None
                if stream:
                    handed_over = True
                    return streaming(pending, form, t0)
                result = await run(request, pending, t0)
            finally:
                if not handed_over:
                    metrics.running -= 1
                    slots.release()
        except Exception as e:  # noqa: BLE001 - every failure answers in OpenAI's error shape
            if admitted:
                metrics.waiting -= 1
            if form is not None:
                await form.close()
            if not isinstance(e, ApiError):
                e = ApiError(500, f"{type(e).__name__}: {e}", type="server_error")
            return error_response(e)
        await form.close()
        metrics.count(200)
        with metrics.lock:
            metrics.audio_seconds += result.duration
            metrics.processing_seconds += time.perf_counter() - t0
        if fmt == "verbose_json":
            return JSONResponse(verbose_json(result, words))
        if fmt == "json":
            return JSONResponse({"text": result.text})
        return Response(formats.render(result, "txt" if fmt == "text" else fmt), media_type=_MEDIA_TYPES[fmt])

    async def run(request: Request, pending, t0: float):
        """The result, cancelled when the client goes away or the time is up."""
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
                if time.perf_counter() - t0 > request_timeout:
                    pending.cancel()
                    raise ApiError(504, f"the transcription took longer than {request_timeout:g} s", type="server_error",
                                   code="timeout")
        finally:
            if not task.done():
                try:
                    await task
                except Exception:  # noqa: BLE001 - cancelled above
                    pass

    def streaming(pending, form, t0: float) -> StreamingResponse:
        async def events():
            it = pending.segments()
            try:
                while True:
                    seg = await asyncio.to_thread(next, it, None)
                    if seg is None:
                        break
                    yield "data: " + json.dumps({"type": "transcript.text.delta", "delta": _delta(pending, seg)},
                                                ensure_ascii=False) + "\n\n"
                result = await asyncio.to_thread(pending.result)
                yield "data: " + json.dumps({"type": "transcript.text.done", "text": result.text},
                                            ensure_ascii=False) + "\n\n"
                metrics.count(200)
                with metrics.lock:
                    metrics.audio_seconds += result.duration
                    metrics.processing_seconds += time.perf_counter() - t0
            finally:
                if not pending.finished:
                    pending.cancel()
                metrics.running -= 1
                slots.release()
                await form.close()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        try:
            check_key(request)
        except ApiError as e:
            return error_response(e)
        return JSONResponse({"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                                         "owned_by": "funasr-cpp"}]})

    async def health(request: Request) -> Response:
        ok = not model.closed
        return JSONResponse({"status": "ok" if ok else "closed"}, status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4")

    app = Starlette(routes=[Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
                            Route("/v1/models", models, methods=["GET"]), Route("/health", health, methods=["GET"]),
                            Route("/metrics", metrics_endpoint, methods=["GET"])])
    app.state.metrics = metrics
    return app


def _delta(pending, seg) -> str:
    """The text a segment adds to what came before, joined as the final text joins segments."""
    return seg.text if len(pending.done_segments) == 1 else " " + seg.text


def serve(model, *, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(model, **kwargs), host=host, port=port, log_level="info")


__all__ = ["RESPONSE_FORMATS", "create_app", "serve", "verbose_json"]
