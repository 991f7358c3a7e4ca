"""A replica's minute of use, for the idle check: written after the answer, at most once a minute."""

from __future__ import annotations

import pytest

from chalicelib.chat import routing
from chalicelib.chat.routing import Target
from chalicelib.store.replica_use import mark_used
from chalicelib.store.tables import Replica

MINUTE = 60
NOW = 1_000 * MINUTE + 5.0


@pytest.fixture
def writes(aws, monkeypatch) -> list[tuple[int, int]]:
    routing._used_minute.clear()  # noqa: SLF001 - a fresh function instance
    made: list[tuple[int, int]] = []
    monkeypatch.setattr(routing, "mark_used", lambda replica_id, minute: made.append((replica_id, minute)))
    return made


def target(hibernate_after_seconds: int | None = 300, last_used_minute: int | None = None) -> Target:
    return Target(7, "https://10.0.0.9:8000/v1", None, "sk-x", "ab" * 32, hibernate_after_seconds, last_used_minute)


def test_first_request_of_a_minute_records_it_and_the_rest_of_the_minute_write_nothing(writes):
    for offset in (0, 10, 50):
        routing.note_use(target(), NOW + offset)

    assert writes == [(7, 1000)]


def test_the_next_minute_is_recorded_again(writes):
    routing.note_use(target(), NOW)
    routing.note_use(target(), NOW + MINUTE)

    assert writes == [(7, 1000), (7, 1001)]


def test_a_minute_the_cached_row_already_shows_is_not_written_again(writes):
    routing.note_use(target(last_used_minute=1000), NOW)

    assert writes == []


def test_a_replica_that_never_hibernates_costs_no_write(writes):
    routing.note_use(target(hibernate_after_seconds=None), NOW)

    assert writes == []


def test_mark_used_never_moves_the_minute_back(aws):
    Replica(7, model_id=1, vm_status="SUCCESS", created_at=0).save()

    assert mark_used(7, 1001) is True
    assert mark_used(7, 1000) is False
    assert Replica.get(7, consistent_read=True).last_used_minute == 1001


def test_mark_used_of_a_deleted_replica_creates_no_row(aws):
    assert mark_used(8, 1000) is False
    assert Replica.count() == 0
