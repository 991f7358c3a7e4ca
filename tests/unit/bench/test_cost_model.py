"""`make cost`'s replay (tests/bench/cost.py) on hand-made traces: the idle rule, wakes, waits and billing."""

import pytest

from tests.bench.cost import (
    FLAVORS,
    HIBERNATED,
    HIBERNATING,
    SERVING,
    WAKING,
    WEEK_SECONDS,
    dollars,
    gpu_hours,
    replay,
    week_trace,
)

TRANSITIONS = {"hibernate_seconds": 120, "wake_seconds": 240}


def test_always_on_replica_bills_every_hour_of_the_week():
    replica = replay([30.0, 5000.0], None, **TRANSITIONS)
    assert gpu_hours(replica) == 168 and replica.wakes == 0 and replica.waits == []


def test_replica_used_once_hibernates_when_the_rule_says_on_the_next_check_tick():
    # Used in minute 0, so busy until 60 s; idle from 60 + 300 = 360 s, a check tick.
    replica = replay([30.0], 300, end=3600, **TRANSITIONS)
    assert replica.seconds[SERVING] == 360
    assert replica.seconds[HIBERNATING] == 120
    assert replica.seconds[HIBERNATED] == 3600 - 360 - 120


def test_idle_time_falling_between_ticks_waits_for_the_next_tick():
    # Idle from 60 + 330 = 390 s; the checks run at 360 and 420 s.
    replica = replay([30.0], 330, end=3600, **TRANSITIONS)
    assert replica.seconds[SERVING] == 420


def test_never_used_replica_counts_idle_from_when_it_began_serving():
    replica = replay([], 300, end=3600, **TRANSITIONS)
    assert replica.seconds[SERVING] == 300


def test_requests_during_one_wake_start_one_wake_and_all_wait_for_its_end():
    replica = replay([1000.0, 1100.0, 1200.0], 300, end=3600, **TRANSITIONS)
    assert replica.wakes == 1
    assert replica.waits == [240.0, 140.0, 40.0]
    assert replica.seconds[WAKING] == 240


def test_request_during_hibernation_waits_for_it_to_finish_then_for_the_wake():
    replica = replay([30.0, 400.0], 300, end=3600, **TRANSITIONS)  # hibernating from 360 to 480 s
    assert replica.wakes == 1 and replica.waits == [80.0 + 240.0]


def test_woken_replica_counts_its_use_from_the_wake_and_hibernates_again():
    # Woken at 1000 s, serving from 1240 s (minute 20, busy until 1260 s): idle again at 1560 s.
    replica = replay([1000.0], 300, end=3600, **TRANSITIONS)
    assert replica.seconds[SERVING] == 300 + 1560 - 1240


def test_request_while_serving_keeps_the_replica_awake_and_does_not_wait():
    replica = replay([30.0, 300.0, 590.0], 300, end=3600, **TRANSITIONS)
    assert replica.waits == [] and replica.seconds[SERVING] == 600 + 300


def test_every_second_of_the_week_is_in_exactly_one_state():
    replica = replay(week_trace(), 900)
    assert sum(replica.seconds.values()) == pytest.approx(WEEK_SECONDS)


def test_hibernated_replica_bills_only_its_disk_and_ip():
    always_on, hibernating = replay([], None, end=3600), replay([], 60, end=3600, **TRANSITIONS)
    assert dollars(hibernating, FLAVORS[0]) < 0.1 * dollars(always_on, FLAVORS[0])


def test_the_trace_is_the_same_every_run_and_busier_on_weekdays():
    trace = week_trace()
    assert trace == week_trace()
    weekend = [at for at in trace if at >= 5 * 24 * 3600]
    assert len(weekend) < 0.05 * len(trace)
