"""Prometheus counters of the transcription requests, kept by a middleware around the route.

The route tells the middleware how much audio a request had through ``request.state.audio_seconds``;
the middleware counts the request by the status it answered with once the last byte is sent (a
stream that breaks off is not counted), so the bookkeeping lives in one place for plain and
streamed answers alike. The gauges (running, waiting) are kept by :mod:`.admission`."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

#: the key in ``request.state`` (``scope["state"]``) with the seconds of audio a request transcribed
AUDIO_SECONDS = "audio_seconds"


@dataclass
class Metrics:
    requests: dict = field(default_factory=dict)   # status code -> count
    audio_seconds: float = 0.0
    processing_seconds: float = 0.0
    running: int = 0
    waiting: int = 0
    realtime_sessions: int = 0          # kept by the realtime sessions (in the event loop)
    realtime_audio_seconds: float = 0.0
    lag_seconds: Callable[[], float] = lambda: 0.0   # the realtime sessions' largest pending audio
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, audio_seconds: Optional[float], seconds: float) -> None:
        """One answered request; audio and wall time count for the successful ones."""
        with self.lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            if status == 200:
                self.audio_seconds += audio_seconds or 0.0
                self.processing_seconds += seconds

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
                      "# TYPE funasr_queue_depth gauge", f"funasr_queue_depth {self.waiting}",
                      "# HELP funasr_realtime_sessions Realtime (WebSocket) sessions open.",
                      "# TYPE funasr_realtime_sessions gauge", f"funasr_realtime_sessions {self.realtime_sessions}",
                      "# HELP funasr_realtime_lag_seconds The most audio a realtime session holds whose transcript is "
                      "not final yet.",
                      "# TYPE funasr_realtime_lag_seconds gauge", f"funasr_realtime_lag_seconds {self.lag_seconds():.3f}",
                      "# HELP funasr_realtime_audio_seconds_total Seconds of audio received by realtime sessions.",
                      "# TYPE funasr_realtime_audio_seconds_total counter",
                      f"funasr_realtime_audio_seconds_total {self.realtime_audio_seconds:.3f}"]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware: counts the ``method`` requests to ``path`` in ``metrics``."""

    def __init__(self, app, *, metrics: Metrics, path: str, method: str = "POST"):
        self.app, self.metrics, self.path, self.method = app, metrics, path, method

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state = scope.setdefault("state", {})  # the dict behind the route's request.state
        status = 500

        async def counting_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # before the last byte goes out: a client that has its answer sees it counted
                self.metrics.record(status, state.get(AUDIO_SECONDS), time.perf_counter() - t0)
            await send(message)

        await self.app(scope, receive, counting_send)
