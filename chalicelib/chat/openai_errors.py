"""Errors on the chat route, in OpenAI's shape, so the SDKs raise the right exception.

Beside `error`, the body keeps what the original toolkit's clients read: the `errors` map of a
validation failure, and `allowed_rpm` / `message` on a 429.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib.chat import request_metrics
from chalicelib.chat.response import ChatResponse, json_response
from chalicelib.core.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)

# OpenAI's `error.type` per error class; the SDKs pick their exception by status, clients read the type.
_TYPES: tuple[tuple[type[ApiError], str], ...] = (
    (RateLimited, "requests"),
    (QuotaExceeded, "insufficient_quota"),
    (Unauthorized, "authentication_error"),
    (Forbidden, "permission_error"),
    (BadRequest, "invalid_request_error"),
    (NotFound, "invalid_request_error"),
    (MethodNotAllowed, "invalid_request_error"),
    (Conflict, "invalid_request_error"),
    (PayloadTooLarge, "invalid_request_error"),
)
INTERNAL_ERROR = "Internal server error"


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> ChatResponse:
    return json_response(error.status, error_body(error), {**(headers or {}), **error.headers})


def error_body(error: ApiError) -> dict[str, Any]:
    message, param = error.message, error.param
    if isinstance(error, ValidationFailed):
        param, first = _first_error(error.errors)
        message = f"Invalid value for '{param}': {first}"
    body: dict[str, Any] = {"error": {"message": message, "type": openai_type(error), "param": param,
                                      "code": error.code}}
    if isinstance(error, ValidationFailed):
        body["errors"] = error.errors
    if isinstance(error, RateLimited):
        body["allowed_rpm"] = error.allowed_rpm
        body["message"] = error.message
    return body


def openai_type(error: ApiError) -> str:
    return next((name for kind, name in _TYPES if isinstance(error, kind)), "server_error")


def internal_error_response() -> ChatResponse:
    """A failure of our own: nothing about it is told to the client but that it happened (counted as a 5xx)."""
    error = ApiError(INTERNAL_ERROR)
    response = error_response(error)
    response.on_close = lambda: request_metrics.emit_refused(error)
    return response


def sse_error_event(error: ApiError) -> bytes:
    """A mid-stream failure: the headers are gone, so the error travels as the last event."""
    return b"data: " + json.dumps(error_body(error)).encode() + b"\n\n"


def _first_error(errors: Any, path: str = "") -> tuple[str, str]:
    """The dotted path and message of the first failure in a nested errors map."""
    if isinstance(errors, dict):
        name, inner = next(iter(errors.items()))
        return _first_error(inner, f"{path}.{name}" if path else str(name))
    if isinstance(errors, list) and errors:
        return path, str(errors[0])
    return path, "Invalid value."
