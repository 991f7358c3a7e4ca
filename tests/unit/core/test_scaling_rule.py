"""The autoscaler's rule (issue #23): desired count from load, warm pool first, max never passed, slow scale in."""

import pytest

from chalicelib.core.scaling_rule import (
    CREATE_BACKOFF_SECONDS,
    FAILED_CREATES_TO_BACK_OFF,
    Fleet,
    ScalingSettings,
    below_since,
    decide,
    desired_count,
)

SETTINGS = ScalingSettings(min_replicas=0, max_replicas=4, target_requests_per_minute=60, scale_in_after_seconds=300)


@pytest.mark.parametrize(("load", "desired"), [(0, 0), (1, 1), (60, 1), (61, 2), (240, 4), (10_000, 4)])
def test_desired_is_load_over_target_rounded_up_within_min_and_max(load, desired):
    assert desired_count(load, SETTINGS) == desired


def test_min_replicas_is_kept_with_no_load():
    assert desired_count(0, ScalingSettings(2, 4, 60, 300)) == 2


def test_scale_out_wakes_hibernated_replicas_before_creating_any():
    decision = decide(180, Fleet(serving=1, hibernated=1), SETTINGS, None, now=0)
    assert (decision.desired, decision.wake, decision.create) == (3, 1, 1)


def test_scale_out_never_passes_max_replicas_counting_every_replica_the_model_has():
    # 2 serving, 1 starting, 1 hibernating: 4 claimed of 4; the load asks for 6.
    decision = decide(360, Fleet(serving=2, starting=1, hibernating=1), SETTINGS, None, now=0)
    assert (decision.wake, decision.create) == (0, 0)
    assert "at max_replicas (4)" in decision.reason


def test_replicas_already_starting_or_waking_count_as_coming():
    decision = decide(120, Fleet(serving=1, starting=1), SETTINGS, None, now=0)
    assert (decision.wake, decision.create, decision.scale_in) == (0, 0, 0)


def test_failed_creates_hold_creating_back_but_not_waking():
    fleet = Fleet(serving=1, hibernated=1, failed_creates=FAILED_CREATES_TO_BACK_OFF)
    decision = decide(240, fleet, SETTINGS, None, now=0)
    assert (decision.wake, decision.create) == (1, 0)
    assert f"creates failed in the last {CREATE_BACKOFF_SECONDS // 60} minutes" in decision.reason


def test_scale_in_waits_until_load_has_stayed_below_for_its_time():
    early = decide(30, Fleet(serving=2), SETTINGS, below_since=1000, now=1000 + 299)
    late = decide(30, Fleet(serving=2), SETTINGS, below_since=1000, now=1000 + 300)
    assert early.scale_in == 0 and "299 s so far" in early.reason
    assert late.scale_in == 1


def test_scale_in_is_one_replica_at_a_time_and_never_below_min():
    assert decide(0, Fleet(serving=4), SETTINGS, below_since=0, now=10_000).scale_in == 1
    at_min = ScalingSettings(2, 4, 60, 300)
    assert decide(0, Fleet(serving=2), at_min, below_since=0, now=10_000).scale_in == 0


def test_scale_to_zero_hibernates_the_last_replica_after_its_time():
    assert decide(0, Fleet(serving=1), SETTINGS, below_since=0, now=300).scale_in == 1


def test_below_since_starts_when_fewer_replicas_would_carry_the_load_and_resets_when_not():
    assert below_since(None, 50, 2, SETTINGS, now=100) == 100  # 1 replica carries 60
    assert below_since(100, 50, 2, SETTINGS, now=160) == 100
    assert below_since(100, 61, 2, SETTINGS, now=220) is None  # 1 replica no longer would
    assert below_since(None, 0, 0, SETTINGS, now=100) is None  # nothing to scale in


@pytest.mark.parametrize("fleet", [Fleet(serving=2, starting=1), Fleet(serving=2, waking=1)])
def test_no_scale_in_while_a_replica_is_still_starting_or_waking(fleet):
    decision = decide(0, fleet, SETTINGS, below_since=0, now=10_000)

    assert decision.scale_in == 0 and "still starting or waking" in decision.reason
