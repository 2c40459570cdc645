"""Errors as the OpenAI API shapes them: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error answered to the client with ``status`` and an OpenAI-style JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable line (and the offending parameter) from pydantic's validation errors."""
    parts = []
    param = None
    for error in errors[:3]:
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(location) or "body"
        param = param or (location[0] if location else None)
        parts.append(f"{where}: {error.get('msg', 'invalid value')}")
    return "; ".join(parts), param
