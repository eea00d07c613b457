"""The app: what the routes share, the routes, and the metrics middleware around them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ..options import TranscribeOptions
from .errors import ApiError

if TYPE_CHECKING:
    from .admission import Admission

TRANSCRIPTIONS = "/v1/audio/transcriptions"


@dataclass
class Server:
    """What the routes share (``request.app.state.server``)."""
    model: Any
    model_name: str
    api_key: Optional[str]
    options: TranscribeOptions       # the server's options, which each request's form fields change
    max_upload_mb: float
    request_timeout: float
    admission: "Admission"

    def check_key(self, request) -> None:
        if self.api_key is not None and request.headers.get("authorization", "") != f"Bearer {self.api_key}":
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)", type="authentication_error",
                           code="invalid_api_key")


def create_app(model, *, model_name: str = "fun-asr-nano", api_key: Optional[str] = None, max_concurrency: int = 4,
               max_queue: int = 16, max_upload_mb: float = 100.0, request_timeout: float = 600.0,
               options: Optional[TranscribeOptions] = None, max_sessions: int = 8,
               session_idle_timeout: float = 120.0, max_buffer_seconds: float = 60.0,
               partials: Optional[str] = "auto", partial_interval: Optional[float] = 0.5):
    """The ASGI app around a loaded :class:`funasr_cpp.Model` (not closed by the app). ``options``:
    the server's TranscribeOptions, which each request's form fields and each realtime session
    change. Realtime sessions: at most ``max_sessions`` at once, closed after
    ``session_idle_timeout`` s without a client event, each holding at most ``max_buffer_seconds``
    of audio whose transcript is not final; ``partials`` / ``partial_interval`` as for
    :meth:`funasr_cpp.Model.stream`."""
    # imported here: `import funasr_cpp.server` works without the server extra
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from starlette.routing import WebSocketRoute

    from ..streaming import TranscriptionStream
    from . import routes
    from .admission import Admission
    from .metrics import Metrics, MetricsMiddleware
    from .page import page_routes
    from .realtime import REALTIME, Limits, realtime
    from .transcriptions import transcriptions

    if max_concurrency < 1 or max_queue < 0 or not max_upload_mb > 0 or not request_timeout > 0:
        raise ValueError("max_concurrency >= 1, max_queue >= 0, max_upload_mb > 0 and request_timeout > 0 are required")
    if max_sessions < 0 or not session_idle_timeout > 0 or not max_buffer_seconds > 0:
        raise ValueError("max_sessions >= 0, session_idle_timeout > 0 and max_buffer_seconds > 0 are required")
    TranscriptionStream.check_partials(model, partials, partial_interval)  # ValueError now, not per session
    limits = Limits(max_sessions=max_sessions, idle_timeout=session_idle_timeout,
                    max_buffer_seconds=max_buffer_seconds, partials=partials, partial_interval=partial_interval)
    metrics = Metrics(lag_seconds=limits.lag_seconds)
    server = Server(model=model, model_name=model_name, api_key=api_key, options=TranscribeOptions.build(options),
                    max_upload_mb=max_upload_mb, request_timeout=request_timeout,
                    admission=Admission(metrics, max_concurrency, max_queue))
    app = Starlette(routes=[Route(TRANSCRIPTIONS, transcriptions, methods=["POST"]),
                            Route("/v1/models", routes.models, methods=["GET"]),
                            Route("/health", routes.health, methods=["GET"]),
                            Route("/metrics", routes.metrics, methods=["GET"]),
                            WebSocketRoute(REALTIME, realtime), *page_routes()],
                    middleware=[Middleware(MetricsMiddleware, metrics=metrics, path=TRANSCRIPTIONS)])
    app.state.server = server
    app.state.metrics = metrics
    app.state.realtime = limits
    return app


def serve(model, *, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """Run the app with uvicorn until interrupted; ``kwargs`` go to :func:`create_app`."""
    import uvicorn

    uvicorn.run(create_app(model, **kwargs), host=host, port=port, log_level="info")
