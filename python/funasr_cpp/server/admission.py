"""Admission: at most ``max_concurrency`` requests transcribe at once and ``max_queue`` more wait
for a slot; a request beyond that is answered 503 at once."""
from __future__ import annotations

import asyncio

from .errors import ApiError
from .metrics import Metrics


class Admission:
    def __init__(self, metrics: Metrics, max_concurrency: int, max_queue: int):
        self.metrics = metrics
        self.limit = max_concurrency + max_queue
        self.slots = asyncio.Semaphore(max_concurrency)

    def enter(self) -> "Ticket":
        """A place in the queue, or ApiError 503 when the slots and the queue are taken."""
        m = self.metrics
        # on arrival, in the one event loop: the check and the count cannot interleave
        if m.running + m.waiting >= self.limit:
            raise ApiError(503, "the server is busy: all transcription slots and the queue are taken",
                           type="server_error", code="overloaded", headers={"Retry-After": "1"})
        m.waiting += 1
        return Ticket(self)


class Ticket:
    """One request's place: waiting, then running (holding a slot), then closed. ``close`` gives
    back whatever it holds, so every way out of a request ends with one call."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self.state = "waiting"

    async def start(self, timeout: float) -> None:
        """Wait for a slot (ApiError 504 after ``timeout`` seconds)."""
        a = self._admission
        try:
            await asyncio.wait_for(a.slots.acquire(), timeout=timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, "timed out waiting for a transcription slot", type="server_error",
                           code="timeout") from None
        a.metrics.waiting -= 1
        a.metrics.running += 1
        self.state = "running"

    def close(self) -> None:
        a = self._admission
        if self.state == "waiting":
            a.metrics.waiting -= 1
        elif self.state == "running":
            a.metrics.running -= 1
            a.slots.release()
        self.state = "closed"
