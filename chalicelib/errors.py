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

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
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


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class ServiceUnavailable(ApiError):
    status = 503
