"""``funasr-cpp serve``: the OpenAI-compatible transcription server (funasr_cpp.server)."""
from __future__ import annotations

import argparse
import sys

from . import common


def add_parser(sub) -> None:
    from ..server.app import create_app, serve

    def default(name: str):
        return common.default_of(serve if name in ("host", "port") else create_app, name)

    sv = sub.add_parser("serve", help="an OpenAI-compatible transcription server (POST /v1/audio/transcriptions, WebSocket "
                             "/v1/realtime, a page at /)",
                        description="Serve POST /v1/audio/transcriptions (OpenAI's API), OpenAI Realtime transcription "
                                    "sessions on the WebSocket /v1/realtime, a browser page at /, GET /v1/models, "
                                    "/health and /metrics with one model; concurrent requests and sessions are "
                                    "decoded together. Needs the server extra: pip install 'funasr-cpp[server]'.")
    common.add_model_args(sv)
    http = sv.add_argument_group("server")
    http.add_argument("--host", default=None, help=f"address to listen on (default {default('host')})")
    http.add_argument("--port", type=int, default=None, help=f"port (default {default('port')})")
    http.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY")
    http.add_argument("--model-name", default=None,
                      help=f"the id /v1/models reports (default {default('model_name')})")
    http.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                      help=f"requests transcribing at once (default {default('max_concurrency')}; their segments "
                           "share the batch)")
    http.add_argument("--max-queue", type=int, default=None, metavar="Q",
                      help=f"requests waiting beyond those; more get 503 with Retry-After (default {default('max_queue')})")
    http.add_argument("--max-upload-mb", type=float, default=None, metavar="M",
                      help=f"largest upload, checked as it streams in (default {default('max_upload_mb'):g})")
    http.add_argument("--request-timeout", type=float, default=None, metavar="S",
                      help=f"a request running longer is ended with 504 (default {default('request_timeout'):g})")
    common.add_max_new_tokens(http)
    live = sv.add_argument_group("realtime (WebSocket /v1/realtime)")
    live.add_argument("--max-sessions", type=int, default=None, metavar="N",
                      help=f"realtime sessions open at once; more are refused (default {default('max_sessions')})")
    live.add_argument("--session-idle-timeout", type=float, default=None, metavar="S",
                      help="a session with no client event for S seconds is closed "
                           f"(default {default('session_idle_timeout'):g})")
    live.add_argument("--max-buffer-seconds", type=float, default=None, metavar="S",
                      help="audio a session may hold whose transcript is not final; appends beyond it are refused "
                           f"(default {default('max_buffer_seconds'):g})")
    common.add_partial_args(live)
    common.add_engine_args(sv.add_argument_group("engine"))
    sv.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..options import TranscribeOptions

    try:
        import python_multipart  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
        import websockets  # noqa: F401
    except ImportError as e:
        return common.error(f"the server needs its extra: pip install 'funasr-cpp[server]' ({e})")
    if not common.check_model_flags(args):
        return 2
    problem = common.check_partial_interval(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        options = TranscribeOptions.build(None, **common.given(args, max_new_tokens="max_new_tokens"))
        model = common.load_model(args, common.load_options(args))
    except common.USER_ERRORS as exc:
        return common.error(exc)
    from ..server import serve

    server = common.given(args, host="host", port="port", api_key="api_key", model_name="model_name",
                          max_concurrency="max_concurrency", max_queue="max_queue", max_upload_mb="max_upload_mb",
                          request_timeout="request_timeout", max_sessions="max_sessions",
                          session_idle_timeout="session_idle_timeout", max_buffer_seconds="max_buffer_seconds")
    server.update(common.partial_overrides(args))
    with model:
        try:
            serve(model, options=options, **server)
        except ValueError as exc:  # a realtime setting this model cannot run (e.g. --partials ctc without CTC)
            return common.error(exc)
    return 0
