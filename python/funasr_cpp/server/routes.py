"""The small GET routes: /v1/models, /health, /metrics."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from .errors import ApiError


async def models(request: Request) -> Response:
    server = request.app.state.server
    try:
        server.check_key(request)
    except ApiError as e:
        return e.response()
    return JSONResponse({"object": "list", "data": [{"id": server.model_name, "object": "model", "created": 0,
                                                     "owned_by": "funasr-cpp"}]})


async def health(request: Request) -> Response:
    ok = not request.app.state.server.model.closed
    return JSONResponse({"status": "ok" if ok else "closed"}, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    return PlainTextResponse(request.app.state.metrics.text(), media_type="text/plain; version=0.0.4")
