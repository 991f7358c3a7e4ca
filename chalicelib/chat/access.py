"""Who may call, and how often: authentication and the per-key rate limit in one write.

The common case is a single conditional UpdateItem on the key's item that at once proves the key
exists, is enabled, has not expired, may use the model, and is under its limit, and counts the
request (`store.minute_counter`: exact however many Lambda instances race). Only a refusal or
the first request of a new minute needs more.
"""

from __future__ import annotations

from dataclasses import dataclass

from pynamodb.expressions.condition import Condition

from chalicelib.errors import Forbidden, RateLimited, Unauthorized
from chalicelib.key_hashing import hash_key
from chalicelib.store.minute_counter import count_request, reset_seconds
from chalicelib.store.tables import ApiKey


@dataclass(frozen=True)
class Caller:
    key_id: int
    user_id: str
    allowed_rpm: int
    remaining: int
    reset_seconds: int

    def rate_limit_headers(self) -> dict[str, str]:
        return _headers(self.allowed_rpm, self.remaining, self.reset_seconds)


def admit(plaintext_key: str | None, model: str, now: float) -> Caller:
    if not plaintext_key:
        raise Unauthorized("You didn't provide an API key.", code="invalid_api_key")
    try:
        counted, key = count_request(ApiKey, hash_key(plaintext_key), ApiKey.allowed_rpm, now,
                                     precondition=_usable(model, now),
                                     explain=lambda current: _check_usable(current, model, now))
    except ApiKey.DoesNotExist:
        raise Unauthorized("Incorrect API key provided.", code="invalid_api_key") from None
    if not counted:
        raise _over_limit(key, now)
    return _caller(key, now)


def _over_limit(key: ApiKey, now: float) -> RateLimited:
    reset = reset_seconds(now)
    limit = int(key.allowed_rpm)
    return RateLimited(limit, _headers(limit, 0, reset) | {"retry-after": str(reset)})


def _usable(model: str, now: float) -> Condition:
    return (
        (ApiKey.enabled == True)  # noqa: E712 - builds a DynamoDB condition, not a Python test
        & (ApiKey.expires_at.does_not_exist() | (ApiKey.expires_at > int(now)))
        & (ApiKey.models.does_not_exist() | ApiKey.models.contains(model))
    )


def _check_usable(current: ApiKey, model: str, now: float) -> None:
    """Raise the reason a key read after a refused update may not be used, unless it is the limit."""
    if not current.enabled:
        raise Unauthorized("This API key is disabled.", code="invalid_api_key")
    if current.expires_at is not None and current.expires_at <= now:
        raise Unauthorized("This API key has expired.", code="invalid_api_key")
    if current.models is not None and model not in current.models:
        raise Forbidden(f"This API key may not use the model {model!r}.", code="model_not_allowed", param="model")


def _caller(key: ApiKey, now: float) -> Caller:
    return Caller(key_id=int(key.id), user_id=key.user_id, allowed_rpm=int(key.allowed_rpm),
                  remaining=max(0, int(key.allowed_rpm) - int(key.rl_count)), reset_seconds=reset_seconds(now))


def _headers(limit: int, remaining: int, reset_seconds: int) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": f"{reset_seconds}s",
    }
