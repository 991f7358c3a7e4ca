"""The one error model: plain domain exceptions, each carrying its HTTP status and message.

No web framework here: they are turned into responses at the two edges, the admin API's
(`chalicelib.api.http_edge`: the original toolkit's `{"error": ...}` / `{"errors": {...}}`, which
`body()` gives) and the chat route's (`chalicelib.chat.openai_errors`: OpenAI's shape).
"""

from __future__ import annotations

from typing import Any

FieldErrors = dict[str, Any]


class ApiError(Exception):
    status = 500

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
        """The original toolkit's JSON for this error."""
        return {"error": self.message}


class BadRequest(ApiError):
    status = 400


class ValidationFailed(BadRequest):
    """A request body that breaks its schema: `{"errors": {field: [messages]}}`."""

    def __init__(self, errors: FieldErrors) -> None:
        super().__init__("Invalid request.")
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {"errors": self.errors}


class ReplicaRefused(BadRequest):
    """A replica's own 4xx, passed on with its status and message: the replica refused, not the proxy."""


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405

    def __init__(self, message: str, allowed: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"allow": allowed})


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class RateLimited(ApiError):
    """Over a key's requests per minute; the body keeps the original toolkit's fields too."""

    status = 429

    def __init__(self, allowed_rpm: int, headers: dict[str, str]) -> None:
        super().__init__(f"Rate limit exceeded: allowed {allowed_rpm} requests per minute.",
                         code="rate_limit_exceeded", headers=headers)
        self.allowed_rpm = allowed_rpm


class QuotaExceeded(ApiError):
    """A key's monthly token budget is spent: OpenAI's 429 `insufficient_quota`."""

    status = 429

    def __init__(self, token_budget: int) -> None:
        super().__init__(f"This API key has used its monthly budget of {token_budget} tokens; it renews on the "
                         "first day of next month (UTC).", code="insufficient_quota")


class UpstreamFailed(ApiError):
    status = 502


class UpstreamTimedOut(ApiError):
    status = 504


class ServiceUnavailable(ApiError):
    status = 503
