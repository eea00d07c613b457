"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``."""
from __future__ import annotations

from typing import Optional


class ApiError(Exception):
    """An error answer: HTTP ``status`` and OpenAI's error fields (``headers`` go with it, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    @classmethod
    def internal(cls, exc: BaseException) -> "ApiError":
        """A 500 for a failure nothing expected (still in OpenAI's shape)."""
        return cls(500, f"{type(exc).__name__}: {exc}", type="server_error")

    def response(self):
        from starlette.responses import JSONResponse

        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)
