"""The idle rule: minute-granular use, counted to the end of the minute."""

from chalicelib.core.idle_rule import is_idle, last_used_at, used_minute


def test_a_request_marks_the_minute_it_falls_in():
    assert used_minute(119.9) == 1 and used_minute(120.0) == 2


def test_last_use_counts_until_the_end_of_its_minute():
    assert last_used_at(1, serving_since=0) == 120


def test_never_used_replica_counts_from_when_it_began_serving():
    assert last_used_at(None, serving_since=500.0) == 500.0


def test_replica_without_hibernate_after_seconds_is_never_idle():
    assert not is_idle(None, 0, None, now=10**9)


def test_replica_is_idle_once_hibernate_after_seconds_passed_since_its_last_minute_ended():
    assert not is_idle(1, 0, 300, now=419.9)
    assert is_idle(1, 0, 300, now=420.0)


def test_use_before_a_replica_began_serving_again_does_not_count():
    assert last_used_at(1, serving_since=1000.0) == 1000.0
