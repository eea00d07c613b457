"""``funasr-cpp serve``: an OpenAI-compatible transcription server (Starlette + uvicorn, the
``funasr-cpp[server]`` extra).

Layout: ``app`` (create_app, serve), one module per route (``transcriptions``; ``routes`` for the
small GET ones; ``realtime`` for the WebSocket, with ``realtime_session`` (its configuration),
``realtime_audio`` (its input formats) and ``realtime_errors``; ``page`` and ``static/`` for the
browser page), ``admission`` (slots and queue), ``metrics`` (the counters and their middleware),
``errors`` (OpenAI's error JSON), ``responses`` (the answer formats).

Endpoints:

- ``POST /v1/audio/transcriptions``: OpenAI's multipart form. ``file`` (required), ``model``
  (any name; there is one model), ``language`` (ISO code or upstream name), ``prompt`` (Fun-ASR
  has no free-text context: it becomes its hotwords, split at commas), ``response_format`` =
  json | text | srt | vtt | verbose_json, ``timestamp_granularities[]`` = segment | word (word
  needs the checkpoint's CTC head), ``temperature`` (decoding is greedy: any value in [0, 1] is
  accepted and changes nothing), ``stream`` (true: server-sent events ``transcript.text.delta``,
  one per finished segment, then ``transcript.text.done``). Extensions: ``hotwords`` (comma
  separated), ``itn`` (true/false), ``vad`` (auto | fsmn | energy | none). A field left out keeps
  the value of the server's options.
- WebSocket ``/v1/realtime?intent=transcription``: OpenAI Realtime transcription sessions over
  :meth:`funasr_cpp.Model.stream` (see :mod:`.realtime` and the README's "Live" section).
- ``GET /``: a page that transcribes the microphone live over that WebSocket and sends files to the
  HTTP endpoint.
- ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text format).

Concurrent requests share the one model: their segments are decoded together in its batched
engine. At most ``max_concurrency`` requests transcribe at a time and ``max_queue`` more wait;
beyond that the answer is 503 with ``Retry-After``. A request over ``request_timeout`` seconds is
ended with 504, and one whose client goes away is cancelled; either way its jobs leave the batch.
Errors come in OpenAI's JSON shape (``{"error": {"message", "type", "param", "code"}}``): 400 for
a malformed form or a bad value (an unreadable upload carries the decoder's message, and so does
audio that is cut short of its header's length or has no samples), 401 for a
wrong or missing API key, 413 for an upload over ``max_upload_mb`` (counted while it streams in),
415 for a non-audio content type, 499 (counted, not seen) for a client that went away. Uploads go to a temporary file that is deleted when the request
ends.
"""
from __future__ import annotations

from .app import create_app, serve
from .responses import RESPONSE_FORMATS, verbose_json

__all__ = ["RESPONSE_FORMATS", "create_app", "serve", "verbose_json"]
