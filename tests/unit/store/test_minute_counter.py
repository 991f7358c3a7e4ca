"""The per-minute counter that keys and replicas share: exact at the turn of a minute.

Races are made deterministic by a write injected at the network edge: a botocore hook runs a
competing request's update right after our own update is refused, before we read the item.
"""

import time
from collections.abc import Callable, Iterator

import pytest

from chalicelib.chat.access import admit
from chalicelib.chat.routing import Target, reserve
from chalicelib.core.errors import RateLimited
from chalicelib.store.minute_counter import count_request, reset_seconds, window_of
from chalicelib.store.tables import ApiKey, Replica

MINUTE_START = (int(time.time()) // 60 + 2) * 60  # whole minutes ahead: no real boundary interferes


@pytest.fixture
def after_refused_update() -> Iterator[Callable[[Callable[[], None]], None]]:
    """Run a competing write once, right after the first UpdateItem that DynamoDB refuses."""
    clients = [table._get_connection().connection.client for table in (ApiKey, Replica)]
    hooks = []

    def install(competing_write: Callable[[], None]) -> None:
        done = []

        def hook(http_response, parsed, **_):  # botocore's after-call signature
            refused = parsed.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
            if refused and not done:
                done.append(True)
                competing_write()

        for client in clients:
            client.meta.events.register("after-call.dynamodb.UpdateItem", hook)
            hooks.append((client, hook))

    yield install
    for client, hook in hooks:
        client.meta.events.unregister("after-call.dynamodb.UpdateItem", hook)


def open_window(table, key, window: int, count: int = 1) -> None:
    table(key).update(actions=[table.rl_window.set(window), table.rl_count.set(count)])


def key_hash(plaintext: str) -> str:
    from chalicelib.admin.api_keys import hash_key

    return hash_key(plaintext)


def test_request_racing_the_one_that_opens_a_minute_is_counted_not_refused(api, after_refused_update):
    key = api.create_key(allowed_rpm=5)["api_key"]
    admit(key, "m/x", MINUTE_START - 30)  # last minute's window is on the item
    after_refused_update(lambda: open_window(ApiKey, key_hash(key), window_of(MINUTE_START)))

    caller = admit(key, "m/x", MINUTE_START + 1)

    assert caller.remaining == 3  # the competitor's request and ours: 2 of 5


def test_request_racing_into_a_full_window_is_refused(api, after_refused_update):
    key = api.create_key(allowed_rpm=2)["api_key"]
    admit(key, "m/x", MINUTE_START - 30)
    after_refused_update(lambda: open_window(ApiKey, key_hash(key), window_of(MINUTE_START), count=2))

    with pytest.raises(RateLimited):
        admit(key, "m/x", MINUTE_START + 1)


def test_first_requests_of_a_fresh_key_all_count_when_they_race(api, after_refused_update):
    key = api.create_key(allowed_rpm=2)["api_key"]
    after_refused_update(lambda: open_window(ApiKey, key_hash(key), window_of(MINUTE_START)))

    assert admit(key, "m/x", MINUTE_START).remaining == 0
    with pytest.raises(RateLimited):
        admit(key, "m/x", MINUTE_START)


def test_replica_request_racing_the_one_that_opens_a_minute_is_counted(api, after_refused_update):
    replica_id = api.create_replica(api.create_model(), rate_limit=2)
    reserve(Target(replica_id, "http://10.0.0.1:8000/v1", 2), MINUTE_START - 30)
    after_refused_update(lambda: open_window(Replica, replica_id, window_of(MINUTE_START)))

    assert reserve(Target(replica_id, "http://10.0.0.1:8000/v1", 2), MINUTE_START + 1) is True
    assert reserve(Target(replica_id, "http://10.0.0.1:8000/v1", 2), MINUTE_START + 2) is False


def test_caller_whose_clock_is_behind_counts_in_the_newer_minute(api):
    replica_id = api.create_replica(api.create_model(), rate_limit=2)
    open_window(Replica, replica_id, window_of(MINUTE_START) + 1)

    counted, item = count_request(Replica, replica_id, Replica.rate_limit, MINUTE_START,
                                  precondition=Replica.id.exists())

    assert counted and (item.rl_window, item.rl_count) == (window_of(MINUTE_START) + 1, 2)


def test_missing_item_is_not_created_by_counting(api):
    with pytest.raises(Replica.DoesNotExist):
        count_request(Replica, 999, Replica.rate_limit, MINUTE_START, precondition=Replica.id.exists())

    assert Replica.count() == 0


def test_reset_is_never_zero_seconds():
    assert reset_seconds(MINUTE_START) == 60
    assert reset_seconds(MINUTE_START + 59.9) == 1
