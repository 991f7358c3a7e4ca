"""`make cost`'s fleet model (tests/bench/fleet_cost.py): fixed, hibernating and autoscaled replicas over a week."""

from chalicelib.core.scaling_rule import ScalingSettings
from tests.bench import fleet_cost
from tests.bench.fleet_cost import (
    CAPACITY_RPM,
    HIBERNATED,
    MINUTE,
    SERVING,
    replay_autoscaled,
    replay_fixed,
    replay_hibernating,
)

SETTINGS = ScalingSettings(min_replicas=0, max_replicas=3, target_requests_per_minute=60, scale_in_after_seconds=300)


def test_fixed_replicas_bill_every_minute_and_refuse_only_what_exceeds_their_capacity():
    outcome = replay_fixed([0, CAPACITY_RPM * 2 + 5, 10], 2, "two")

    assert outcome.gpu_hours() == 2 * 3 * MINUTE / 3600
    assert (outcome.refused, outcome.cold, outcome.requests) == (5, 0, CAPACITY_RPM * 2 + 15)


def test_a_spike_brings_replicas_up_to_max_replicas_never_beyond_and_they_go_once_it_ends():
    demand = [50] * 5 + [400] * 60 + [0] * 60

    outcome = replay_autoscaled(demand, SETTINGS)

    assert len(outcome.replicas) == SETTINGS.max_replicas and outcome.most_serving == SETTINGS.max_replicas
    assert [replica.state for replica in outcome.replicas] == [HIBERNATED] * 3


def test_an_empty_fleet_serves_its_first_requests_cold_while_its_first_replica_starts():
    outcome = replay_autoscaled([5] * 30, SETTINGS)

    assert outcome.cold == 5 * fleet_cost.CREATE_SECONDS // MINUTE + 5  # the first minute, then the start
    assert outcome.replicas[0].state == SERVING


def test_a_request_to_a_model_scaled_to_zero_wakes_a_hibernated_replica_and_waits_for_it():
    demand = [30] * 5 + [0] * 60 + [1] + [0] * 10

    outcome = replay_autoscaled(demand, SETTINGS)

    assert outcome.cold == 5 * 30 + 1  # all five busy minutes wait for the start; then the one woken for
    assert len(outcome.replicas) == 1 and outcome.replicas[0].seconds[HIBERNATED] > 0
    assert outcome.replicas[0].seconds["WAKING"] == fleet_cost.WAKE_SECONDS  # woken once, then back to sleep


def test_a_hibernating_replica_bills_less_than_always_on_over_a_quiet_stretch():
    demand = [10] * 10 + [0] * 120

    hibernating, always_on = replay_hibernating(demand, 300), replay_fixed(demand, 1, "on")

    assert hibernating.gpu_hours() < always_on.gpu_hours()
    assert hibernating.replicas[0].state == HIBERNATED


def test_the_week_is_seeded_and_busier_in_office_hours_than_at_night():
    rates = fleet_cost.week_rates()

    assert fleet_cost.week_demand() == fleet_cost.week_demand()
    assert len(rates) == fleet_cost.WEEK_MINUTES and rates[10 * 60] >= fleet_cost.OFFICE_RPM > rates[3 * 60]
