"""Sending a chat request to the replicas in turn: failover, capacity, and the deadline.

The replicas are small HTTP servers on 127.0.0.1, so failures happen where they do in production,
on the socket; the replicas' rate-limit items are in DynamoDB emulated by moto.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.chat import routing, upstream
from chalicelib.chat.routing import Target
from chalicelib.core.errors import ServiceUnavailable, UpstreamFailed, UpstreamTimedOut
from chalicelib.core.settings import get_chat_settings
from tests.unit.plain_replica import PlainReplica

BODY = b'{"model":"m/x","messages":[{"role":"user","content":"Hi"}]}'
ANSWER = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"}}]}'
FIRST_BYTE_TIMEOUT = 0.5
MODEL_NUMBERS = itertools.count()


@pytest.fixture
def replica() -> Iterator[Callable[[int | None], PlainReplica]]:
    """Starts replicas answering every chat request with `status` (None: never answering)."""
    started: list[PlainReplica] = []

    def start(status: int | None = 200) -> PlainReplica:
        started.append(PlainReplica(status, ANSWER))
        return started[-1]

    yield start
    for each in started:
        each.stop()


@pytest.fixture
def refused_endpoint() -> str:
    """An address where nothing listens: a port just freed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(autouse=True)
def short_first_byte_timeout(monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("UPSTREAM_TIMEOUT_SECONDS", str(FIRST_BYTE_TIMEOUT))
    get_chat_settings.cache_clear()
    routing._failed_at.clear()  # process-wide, as in a Lambda instance
    yield
    get_chat_settings.cache_clear()
    routing._failed_at.clear()


def target(replica_id: int, endpoint: str, rate_limit: int | None = None) -> Target:
    return Target(replica_id, endpoint, rate_limit)


def answer_of(sent: tuple[Target, Any]) -> tuple[int, bytes]:
    _, response = sent
    try:
        return response.status, response.read()
    finally:
        upstream.discard(response)


def send(targets: list[Target], deadline: float | None = None, stream: bool = False) -> tuple[Target, Any]:
    return upstream.send(targets, BODY, stream, time.time(), deadline)


# Failover


def test_request_is_posted_to_the_replicas_chat_completions(replica):
    serving = replica(200)

    chosen, response = send([target(1, serving.endpoint)])

    assert chosen.replica_id == 1 and answer_of((chosen, response)) == (200, ANSWER)
    ((path, headers, body),) = serving.requests
    assert (path, body, headers["accept"]) == ("/v1/chat/completions", BODY, "application/json")


def test_streamed_request_asks_for_an_event_stream(replica):
    serving = replica(200)

    answer_of(send([target(1, serving.endpoint)], stream=True))

    assert serving.requests[0][1]["accept"] == "text/event-stream"


def test_refused_connection_fails_over_to_the_next_replica(replica, refused_endpoint):
    serving = replica(200)

    chosen, response = send([target(1, refused_endpoint), target(2, serving.endpoint)])

    assert chosen.replica_id == 2 and answer_of((chosen, response))[0] == 200
    assert 1 in routing._failed_at and 2 not in routing._failed_at


def test_5xx_before_the_first_byte_fails_over_to_the_next_replica(replica):
    failing, serving = replica(500), replica(200)

    chosen, response = send([target(1, failing.endpoint), target(2, serving.endpoint)])

    assert chosen.replica_id == 2 and answer_of((chosen, response))[0] == 200
    assert len(failing.requests) == 1 and 1 in routing._failed_at


def test_4xx_is_the_answer_not_a_reason_to_fail_over(replica):
    refusing, serving = replica(400), replica(200)

    chosen, response = send([target(1, refusing.endpoint), target(2, serving.endpoint)])

    assert chosen.replica_id == 1 and answer_of((chosen, response))[0] == 400
    assert serving.requests == []


def test_replica_silent_past_the_first_byte_timeout_fails_over_to_the_next(replica):
    silent, serving = replica(None), replica(200)

    chosen, response = send([target(1, silent.endpoint), target(2, serving.endpoint)])

    assert chosen.replica_id == 2 and answer_of((chosen, response))[0] == 200
    assert 1 in routing._failed_at


def test_every_replica_failing_is_502(replica, refused_endpoint):
    failing = replica(503)

    with pytest.raises(UpstreamFailed) as failure:
        send([target(1, refused_endpoint), target(2, failing.endpoint)])

    assert failure.value.status == 502 and failure.value.code == "upstream_unavailable"


def test_none_serving_after_one_timed_out_is_504(replica, refused_endpoint):
    silent = replica(None)

    with pytest.raises(UpstreamTimedOut) as failure:
        send([target(1, silent.endpoint), target(2, refused_endpoint)])

    assert failure.value.status == 504


# Each replica's own rate limit


def rate_limited_replica(api, endpoint: str, rate_limit: int = 1) -> Target:
    model_id = api.create_model(f"org/model-{next(MODEL_NUMBERS)}")
    return target(api.create_replica(model_id, endpoint=endpoint, rate_limit=rate_limit), endpoint, rate_limit)


def test_replica_full_this_minute_is_skipped_without_a_request(api, replica):
    full_server, serving = replica(200), replica(200)
    full = rate_limited_replica(api, full_server.endpoint)
    assert routing.reserve(full, time.time())  # its one request this minute

    chosen, response = send([full, target(99, serving.endpoint)])

    assert chosen.replica_id == 99 and answer_of((chosen, response))[0] == 200
    assert full_server.requests == []


def test_replica_with_room_this_minute_is_used_and_counted(api, replica):
    limited_server = replica(200)
    limited = rate_limited_replica(api, limited_server.endpoint, rate_limit=1)

    assert answer_of(send([limited]))[0] == 200

    with pytest.raises(ServiceUnavailable):
        send([limited])
    assert len(limited_server.requests) == 1


def test_every_replica_at_capacity_is_503_with_retry_after(api, replica):
    servers = [replica(200), replica(200)]
    targets = [rate_limited_replica(api, server.endpoint) for server in servers]
    for each in targets:
        assert routing.reserve(each, time.time())

    with pytest.raises(ServiceUnavailable) as failure:
        send(targets)

    assert failure.value.status == 503 and failure.value.headers == {"retry-after": "1"}
    assert [server.requests for server in servers] == [[], []]


def test_some_at_capacity_and_the_rest_failing_is_502_not_503(api, replica, refused_endpoint):
    full_server = replica(200)
    full = rate_limited_replica(api, full_server.endpoint)
    assert routing.reserve(full, time.time())

    with pytest.raises(UpstreamFailed):
        send([full, target(99, refused_endpoint)])


# The deadline


def test_deadline_caps_the_wait_for_the_first_byte(replica, monkeypatch):
    monkeypatch.setenv("UPSTREAM_TIMEOUT_SECONDS", "60")
    get_chat_settings.cache_clear()
    silent = replica(None)
    started = time.monotonic()

    with pytest.raises(UpstreamTimedOut):
        send([target(1, silent.endpoint)], deadline=time.time() + 0.5)

    assert time.monotonic() - started < 5  # not the 60 s the replica would be given
    assert 1 not in routing._failed_at  # the deadline cut the wait short, not the replica


def test_deadline_that_expires_on_one_replica_leaves_the_next_untried(replica, monkeypatch):
    monkeypatch.setenv("UPSTREAM_TIMEOUT_SECONDS", "60")
    get_chat_settings.cache_clear()
    silent, serving = replica(None), replica(200)

    with pytest.raises(UpstreamTimedOut):
        send([target(1, silent.endpoint), target(2, serving.endpoint)], deadline=time.time() + 0.5)

    assert serving.requests == []


def test_request_past_its_deadline_reaches_no_replica(replica):
    serving = replica(200)

    with pytest.raises(UpstreamTimedOut):
        send([target(1, serving.endpoint)], deadline=time.time() - 1)

    assert serving.requests == []
