"""The one error model: domain exceptions that carry their HTTP status.

They derive from Chalice's `ChaliceUnhandledError` only so that Chalice lets them reach the
middleware in `chalicelib.http`, which turns them into JSON in one place.
"""

from __future__ import annotations

from typing import Any

from chalice.app import ChaliceUnhandledError

FieldErrors = dict[str, Any]


class ApiError(ChaliceUnhandledError):
    status = 500
    openai_type = "server_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status  # a status passed on from elsewhere (a replica's 4xx)
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.message}


class BadRequest(ApiError):
    status = 400
    openai_type = "invalid_request_error"


class ValidationFailed(BadRequest):
    """A request body that breaks its schema: `{"errors": {field: [messages]}}`."""

    def __init__(self, errors: FieldErrors) -> None:
        super().__init__("Invalid request.")
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {"errors": self.errors}


class Unauthorized(ApiError):
    status = 401
    openai_type = "authentication_error"


class Forbidden(ApiError):
    status = 403
    openai_type = "permission_error"


class NotFound(ApiError):
    status = 404
    openai_type = "invalid_request_error"


class Conflict(ApiError):
    status = 409
    openai_type = "invalid_request_error"


class PayloadTooLarge(ApiError):
    status = 413
    openai_type = "invalid_request_error"


class RateLimited(ApiError):
    """Over a key's requests per minute; the body keeps the original toolkit's fields too."""

    status = 429
    openai_type = "requests"

    def __init__(self, allowed_rpm: int, headers: dict[str, str]) -> None:
        super().__init__(f"Rate limit exceeded: allowed {allowed_rpm} requests per minute.",
                         code="rate_limit_exceeded", headers=headers)
        self.allowed_rpm = allowed_rpm


class UpstreamFailed(ApiError):
    status = 502
    openai_type = "server_error"


class UpstreamTimedOut(ApiError):
    status = 504
    openai_type = "server_error"


class ServiceUnavailable(ApiError):
    status = 503
    openai_type = "server_error"
