"""Waking a model whose replicas all hibernate: which replica, the Retry-After, the wait header."""

from __future__ import annotations

import time

import pytest

from chalicelib.chat import waking
from chalicelib.chat.waking import Dormant
from chalicelib.core import replica_statuses as statuses
from chalicelib.core.errors import BadRequest
from chalicelib.core.settings import get_chat_settings


def dormant(replica_id: int, status: str = statuses.HIBERNATED, wake_seconds: int | None = None,
            wake_started_at: int | None = None, wake_requested: bool = False) -> Dormant:
    return Dormant(replica_id, status, wake_seconds, wake_started_at, wake_requested)


def test_a_replica_already_waking_is_the_one_waited_for_and_no_wake_is_asked(monkeypatch):
    asked = []
    monkeypatch.setattr(waking, "_ask", lambda replica, now: asked.append(replica.replica_id))

    answer = waking.wake("m", [dormant(1, wake_seconds=10), dormant(2, statuses.WAKING, 100, wake_started_at=0)],
                         now=40)

    assert asked == [] and answer.retry_after == 60


def test_the_quickest_to_wake_last_time_is_woken(monkeypatch):
    asked = []
    monkeypatch.setattr(waking, "_ask", lambda replica, now: asked.append(replica.replica_id))

    answer = waking.wake("m", [dormant(1), dormant(2, wake_seconds=300), dormant(3, wake_seconds=90)], now=0)

    assert asked == [3] and answer.retry_after == 90


def test_a_replica_never_woken_is_waited_for_the_default_time(monkeypatch):
    monkeypatch.setattr(waking, "_ask", lambda replica, now: None)

    answer = waking.wake("m", [dormant(1)], now=0)

    assert answer.retry_after == get_chat_settings().default_wake_seconds
    assert (answer.status, answer.code, answer.headers["retry-after"]) == (503, "model_waking",
                                                                          str(answer.retry_after))


def test_a_wake_already_asked_is_not_asked_again(monkeypatch):
    asked = []
    monkeypatch.setattr(waking, "_ask", lambda replica, now: asked.append(replica.replica_id))

    waking.wake("m", [dormant(1, wake_requested=True), dormant(2)], now=0)

    assert asked == []


def test_retry_after_is_at_least_a_second_once_a_wake_overruns(monkeypatch):
    monkeypatch.setattr(waking, "_ask", lambda replica, now: None)

    answer = waking.wake("m", [dormant(1, statuses.WAKING, 30, wake_started_at=0)], now=500)

    assert answer.retry_after == 1


@pytest.mark.parametrize(("raw", "expected"), [("", 0.0), ("0", 0.0), ("30", 30.0), ("2.5", 2.5)])
def test_wait_header_is_read_as_seconds(raw, expected):
    assert waking.wait_seconds({"x-wait-for-model": raw}, deadline=time.time() + 600) == expected


def test_wait_is_capped_by_the_requests_time():
    assert waking.wait_seconds({"x-wait-for-model": "900"}, deadline=time.time() + 10) <= 10


@pytest.mark.parametrize("raw", ["soon", "-5", "1e9", "nan", "5 s", "1234567"])
def test_wait_header_that_is_not_seconds_is_refused(raw):
    with pytest.raises(BadRequest) as refused:
        waking.wait_seconds({"x-wait-for-model": raw}, deadline=time.time() + 600)

    assert refused.value.param == "x-wait-for-model"
