"""Who may call, and how often: authentication, the per-key rate limit and the monthly token budget in one write.

The common case is a single conditional UpdateItem on the key's item that at once proves the key
exists, is enabled, has not expired, may use the model, has tokens left this month, and is under its
limit, and counts the request (`store.minute_counter`: exact however many Lambda instances race). Only a refusal or
the first request of a new minute needs more.
"""

from __future__ import annotations

from dataclasses import dataclass

from pynamodb.expressions.condition import Condition

from chalicelib.core.errors import Forbidden, QuotaExceeded, RateLimited, Unauthorized
from chalicelib.core.key_hashing import hash_key
from chalicelib.store.minute_counter import count_request, reset_seconds
from chalicelib.store.month_spend import month_of, tokens_this_month
from chalicelib.store.tables import ApiKey


@dataclass(frozen=True)
class Caller:
    key_id: int
    key_hash: str  # the key's item, where its month's tokens are added (store.month_spend)
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
        & _under_budget(month_of(now))
    )


def _under_budget(month: int) -> Condition:
    """No budget, or no tokens counted this month yet, or fewer than the budget. Checked before the request
    only: one that starts under the budget may end over it (its tokens are known at its end)."""
    return (ApiKey.token_budget.does_not_exist() | ApiKey.month.does_not_exist() | (ApiKey.month != month)
            | (ApiKey.month_tokens < ApiKey.token_budget))


def _check_usable(current: ApiKey, model: str, now: float) -> None:
    """Raise the reason a key read after a refused update may not be used, unless it is the limit."""
    if not current.enabled:
        raise Unauthorized("This API key is disabled.", code="invalid_api_key")
    if current.expires_at is not None and current.expires_at <= now:
        raise Unauthorized("This API key has expired.", code="invalid_api_key")
    if current.models is not None and model not in current.models:
        raise Forbidden(f"This API key may not use the model {model!r}.", code="model_not_allowed", param="model")
    if current.token_budget is not None and tokens_this_month(current, now) >= current.token_budget:
        raise QuotaExceeded(int(current.token_budget))


def _caller(key: ApiKey, now: float) -> Caller:
    return Caller(key_id=int(key.id), key_hash=key.key_hash, user_id=key.user_id, allowed_rpm=int(key.allowed_rpm),
                  remaining=max(0, int(key.allowed_rpm) - int(key.rl_count)), reset_seconds=reset_seconds(now))


def _headers(limit: int, remaining: int, reset_seconds: int) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": f"{reset_seconds}s",
    }
