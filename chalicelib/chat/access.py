"""Who may call, and how often: authentication and the per-key rate limit in one write.

A key's item holds its current window (the Unix minute) and the requests admitted in it. The
common case is a single conditional UpdateItem that at once proves the key exists, is enabled,
has not expired, may use the model, and is under its limit, and counts the request. DynamoDB
applies it atomically, so with a limit of L exactly L requests get through in a minute, however
many Lambda instances race. Only a refusal or the first request of a new minute needs more.
"""

from __future__ import annotations

from dataclasses import dataclass

from pynamodb.exceptions import UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from chalicelib.api_keys import hash_key
from chalicelib.errors import Forbidden, RateLimited, Unauthorized
from chalicelib.store.tables import ApiKey

WINDOW_SECONDS = 60
_ATTEMPTS = 3  # a new minute can race with other requests rolling the window over


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
    key = ApiKey(hash_key(plaintext_key))
    window = int(now // WINDOW_SECONDS)
    usable = _usable(model, now)
    for _ in range(_ATTEMPTS):
        if _try(key, [ApiKey.rl_count.add(1)], usable & (ApiKey.rl_window == window)
                & (ApiKey.rl_count < ApiKey.allowed_rpm)):
            return _caller(key, now)
        current = _refusal_reason(key.key_hash, model, now)
        if current.rl_window == window:
            raise _over_limit(current, now)
        new_window = ApiKey.rl_window.does_not_exist() | (ApiKey.rl_window < window)
        if _try(key, [ApiKey.rl_window.set(window), ApiKey.rl_count.set(1)], usable & new_window):
            return _caller(key, now)
    raise _over_limit(current, now)


def _over_limit(key: ApiKey, now: float) -> RateLimited:
    reset = _reset_seconds(now)
    limit = int(key.allowed_rpm)
    return RateLimited(limit, _headers(limit, 0, reset) | {"retry-after": str(reset)})


def _usable(model: str, now: float) -> Condition:
    return (
        (ApiKey.enabled == True)  # noqa: E712 - builds a DynamoDB condition, not a Python test
        & (ApiKey.expires_at.does_not_exist() | (ApiKey.expires_at > int(now)))
        & (ApiKey.models.does_not_exist() | ApiKey.models.contains(model))
    )


def _try(key: ApiKey, actions: list[Action], condition: Condition) -> bool:
    try:
        key.update(actions=actions, condition=condition)
        return True
    except UpdateError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise


def _refusal_reason(key_hash: str, model: str, now: float) -> ApiKey:
    """Read the key after a refused update; raise unless the reason is its rate-limit window."""
    try:
        current = ApiKey.get(key_hash, consistent_read=True)
    except ApiKey.DoesNotExist:
        raise Unauthorized("Incorrect API key provided.", code="invalid_api_key") from None
    if not current.enabled:
        raise Unauthorized("This API key is disabled.", code="invalid_api_key")
    if current.expires_at is not None and current.expires_at <= now:
        raise Unauthorized("This API key has expired.", code="invalid_api_key")
    if current.models is not None and model not in current.models:
        raise Forbidden(f"This API key may not use the model {model!r}.", code="model_not_allowed", param="model")
    return current


def _caller(key: ApiKey, now: float) -> Caller:
    return Caller(key_id=int(key.id), user_id=key.user_id, allowed_rpm=int(key.allowed_rpm),
                  remaining=max(0, int(key.allowed_rpm) - int(key.rl_count)), reset_seconds=_reset_seconds(now))


def _reset_seconds(now: float) -> int:
    return max(1, WINDOW_SECONDS - int(now) % WINDOW_SECONDS)


def _headers(limit: int, remaining: int, reset_seconds: int) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": f"{reset_seconds}s",
    }
