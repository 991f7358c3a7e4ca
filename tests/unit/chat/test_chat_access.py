"""Authentication and the per-key rate limit of the chat route, against DynamoDB (moto)."""

import time

import pytest

from chalicelib.chat.access import admit
from chalicelib.core.errors import Forbidden, RateLimited, Unauthorized
from chalicelib.store.tables import ApiKey

MINUTE_START = (int(time.time()) // 60 + 1) * 60  # a whole minute ahead, so no window boundary interferes


def test_limit_admits_exactly_allowed_rpm_in_one_minute(api):
    key = api.create_key(allowed_rpm=3)["api_key"]

    admitted = [admit(key, "m/x", MINUTE_START + 1) for _ in range(3)]

    assert [caller.remaining for caller in admitted] == [2, 1, 0]
    with pytest.raises(RateLimited) as raised:
        admit(key, "m/x", MINUTE_START + 2)
    assert raised.value.headers["retry-after"] == "58"
    assert raised.value.allowed_rpm == 3


def test_a_new_minute_opens_a_new_window(api):
    key = api.create_key(allowed_rpm=1)["api_key"]
    admit(key, "m/x", MINUTE_START + 59)

    caller = admit(key, "m/x", MINUTE_START + 60)

    assert caller.remaining == 0


def test_refused_requests_do_not_count(api):
    key = api.create_key(allowed_rpm=1, models=["m/allowed"])["api_key"]
    with pytest.raises(Forbidden):
        admit(key, "m/other", MINUTE_START)

    assert admit(key, "m/allowed", MINUTE_START).remaining == 0


def test_unknown_key_is_unauthorized_and_leaves_no_item(api):
    with pytest.raises(Unauthorized):
        admit("hsk_unknown", "m/x", MINUTE_START)

    assert ApiKey.count() == 0


def test_missing_key_is_unauthorized(api):
    with pytest.raises(Unauthorized):
        admit(None, "m/x", MINUTE_START)


def test_disabled_key_is_unauthorized(api):
    created = api.create_key()
    ApiKey.get(created_hash(created["api_key"])).update(actions=[ApiKey.enabled.set(False)])

    with pytest.raises(Unauthorized):
        admit(created["api_key"], "m/x", MINUTE_START)


def test_expired_key_is_unauthorized(api):
    created = api.create_key(expires_at=int(time.time()) + 30)

    assert admit(created["api_key"], "m/x", time.time())
    with pytest.raises(Unauthorized):
        admit(created["api_key"], "m/x", time.time() + 31)


def created_hash(plaintext: str) -> str:
    from chalicelib.admin.api_keys import hash_key

    return hash_key(plaintext)
