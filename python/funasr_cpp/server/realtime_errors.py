"""A Realtime session's error events: ``{"type": "error", "error": {type, code, message, param,
event_id}}`` (OpenAI's shape). The session goes on after one, unless it is closed with it."""
from __future__ import annotations

from typing import Optional


class RealtimeError(Exception):
    """An error event for the client; ``event_id`` is the client event's that caused it."""

    def __init__(self, code: str, message: str, *, param: Optional[str] = None, type: str = "invalid_request_error",
                 event_id: Optional[str] = None):
        super().__init__(message)
        self.code, self.message, self.param, self.type, self.event_id = code, message, param, type, event_id

    def event(self) -> dict:
        return {"type": "error", "error": {"type": self.type, "code": self.code, "message": self.message,
                                           "param": self.param, "event_id": self.event_id}}
