"""Users' API keys: issued once in plaintext, stored only as a SHA-256 hash."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from chalicelib.admin.schemas import DELETE_API_KEY, GENERATE_API_KEY
from chalicelib.core.clock import iso, now
from chalicelib.core.errors import Conflict, NotFound
from chalicelib.core.key_hashing import hash_key
from chalicelib.core.validation import field_error, validate
from chalicelib.store.conditional import delete_if, update_if
from chalicelib.store.lookups import api_key_by_id
from chalicelib.store.month_spend import tokens_this_month
from chalicelib.store.sequences import next_id
from chalicelib.store.tables import ApiKey, Metric

KEY_PREFIX = "hsk_"  # recognisable in logs and by secret scanners


def masked(key: ApiKey) -> str:
    return f"{key.key_prefix}...{key.last4}"


def generate(body: Any) -> dict[str, Any]:
    request = validate(GENERATE_API_KEY, body)
    expires_at = _parse_expiry(request.get("expires_at"))
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        hash_key(plaintext),
        id=next_id("api_key"),
        user_id=request["user_id"],
        key_prefix=KEY_PREFIX,
        last4=plaintext[-4:],
        allowed_rpm=request["allowed_rpm"],
        enabled=True,
        models=_unique(request.get("models")),
        expires_at=expires_at,
        token_budget=request.get("token_budget"),
        created_at=now(),
    )
    key.save(condition=ApiKey.key_hash.does_not_exist())
    return {**describe(key), "api_key": plaintext}


def describe(key: ApiKey) -> dict[str, Any]:
    """A key as admins see it: never the secret, never its hash."""
    return {
        "id": key.id,
        "user_id": key.user_id,
        "api_key": masked(key),
        "allowed_rpm": key.allowed_rpm,
        "enabled": key.enabled,
        "models": key.models,
        "expires_at": iso(key.expires_at),
        "created_at": iso(key.created_at),
        "token_budget": key.token_budget,
        "month_tokens": tokens_this_month(key, time.time()),
    }


def delete(body: Any) -> str:
    """Delete a key never used, disable one that was (its usage rows must keep their owner)."""
    request = validate(DELETE_API_KEY, body)
    key = api_key_by_id(request["api_key_id"])
    if key is None or key.user_id != request["user_id"]:
        raise NotFound("API key not found for the given user_id and api_key_id")
    if not key.enabled:
        raise Conflict("API key already disabled")
    still_enabled = ApiKey.enabled == True  # noqa: E712 - builds a DynamoDB condition, not a Python test
    if _was_used(key):
        if update_if(key, [ApiKey.enabled.set(False)], still_enabled):
            return "API key disabled successfully"
    elif delete_if(key, still_enabled):
        return "API key deleted successfully"
    raise Conflict("API key already disabled")  # another request disabled or deleted it in between


def _was_used(key: ApiKey) -> bool:
    return any(True for _ in Metric.by_api_key.query(key.id, limit=1))


def _unique(names: list[str] | None) -> list[str] | None:
    return None if names is None else list(dict.fromkeys(names))


def _parse_expiry(value: str | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) or re.fullmatch(r" *[0-9]{1,12} *", value):  # ASCII digits: int() takes others
        moment = int(value)
    else:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise field_error("expires_at", "Not a valid datetime.") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        moment = int(parsed.timestamp())
    if not time.time() < moment < 253402300800:  # before year 10000, so it prints as ISO 8601
        raise field_error("expires_at", "Must be a moment in the future.")
    return moment
