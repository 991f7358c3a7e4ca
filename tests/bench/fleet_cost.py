"""`make cost`, second table: a model's replicas through a busy week, fixed or autoscaled (issue #23).

The trace is a synthetic week, seeded (SEED), in requests per minute: weekday office hours at OFFICE_RPM with a
lunch dip, SPIKES_PER_DAY spikes a day of SPIKE_RPM more for SPIKE_MINUTES, a sparse evening, a quiet night and
a quiet weekend. Each minute's requests are a Poisson draw of its rate.

Each scenario replays the same trace, a minute at a time, through a fleet of replicas, each in one state:
  STARTING (CREATE_SECONDS: a new VM boots and loads its model) ──▶ SERVING ──▶ HIBERNATING (HIBERNATE_SECONDS)
  ──▶ HIBERNATED ──wake──▶ WAKING (WAKE_SECONDS) ──▶ SERVING;  a deleted replica is gone.
A serving replica carries CAPACITY_RPM requests a minute. A minute's requests beyond what the serving replicas
carry are "refused or queued" (503 replicas_at_capacity, or a client's retry); requests that find no replica
serving wait for one to start or wake: they are "cold" (a first request wakes a hibernated replica, as the chat
path does). The autoscaled scenarios run the scaler's own rule (chalicelib/core/scaling_rule.py: `decide` and
`below_since`) once a minute on the demand counted as the proxy counts it (store.model_load: the last whole
minute, or this one so far if more), and act as the scaler does: wake the warm pool first, then create,
scale in one replica at a time by hibernating it.

Billing as in tests/bench/cost.py (GPU while starting, serving and in both transitions; the root disk while
hibernated; the public IP while the replica exists), for one flavor (FLAVOR).
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from chalicelib.core.idle_rule import is_idle, used_minute  # noqa: E402
from chalicelib.core.scaling_rule import Fleet, ScalingSettings, below_since, decide  # noqa: E402
from tests.bench.cost import (  # noqa: E402
    FLAVORS,
    HIBERNATE_SECONDS,
    PRICES_AS_OF,
    PUBLIC_IP_DOLLARS_PER_HOUR,
    ROOT_DISK_DOLLARS_PER_GB_HOUR,
    WAKE_SECONDS,
    Flavor,
    print_table,
)

SEED = 23
MINUTE = 60
HOUR = 3600
WEEK_MINUTES = 7 * 24 * 60
FLAVOR = FLAVORS[1]  # n3-A100x1
CAPACITY_RPM = 90  # what one serving replica answers a minute (an assumption: short chat answers on vLLM)
CREATE_SECONDS = 600  # a new VM: boot, vLLM installed by the run command, the model downloaded and loaded
OFFICE_RPM, LUNCH_RPM, EVENING_RPM, NIGHT_RPM, WEEKEND_RPM = 45.0, 15.0, 4.0, 0.02, 0.05
SPIKES_PER_DAY, SPIKE_MINUTES, SPIKE_RPM = 2, 25, 150.0
MAX_REPLICAS = 3
AUTOSCALED = ScalingSettings(min_replicas=0, max_replicas=MAX_REPLICAS, target_requests_per_minute=60,
                             scale_in_after_seconds=900)
HIBERNATE_AFTER_SECONDS = 900  # the hibernating single replica's

STARTING, SERVING, HIBERNATING, HIBERNATED, WAKING = "STARTING", "SERVING", "HIBERNATING", "HIBERNATED", "WAKING"
GPU_BILLED = (STARTING, SERVING, HIBERNATING, WAKING)


def week_rates(seed: int = SEED) -> list[float]:
    """Requests per minute, for each minute of the week (Monday 00:00 first)."""
    rng = random.Random(seed)
    rates = []
    for day in range(7):
        spikes = [rng.randrange(9 * 60, 18 * 60 - SPIKE_MINUTES) for _ in range(SPIKES_PER_DAY)] if day < 5 else []
        for minute in range(24 * 60):
            hour = minute // 60
            if day >= 5:
                rate = WEEKEND_RPM
            elif 9 <= hour < 18:
                rate = LUNCH_RPM if hour == 12 else OFFICE_RPM
            elif 18 <= hour < 22:
                rate = EVENING_RPM
            else:
                rate = NIGHT_RPM
            rate += sum(SPIKE_RPM for start in spikes if start <= minute < start + SPIKE_MINUTES)
            rates.append(rate)
    return rates


def week_demand(seed: int = SEED) -> list[int]:
    """Requests arriving in each minute of the week: a Poisson draw of its rate."""
    rng = random.Random(seed + 1)
    return [_poisson(rng, rate) for rate in week_rates(seed)]


def _poisson(rng: random.Random, rate: float) -> int:
    if rate > 30:  # a normal approximation: Knuth's product underflows for large rates
        return max(0, round(rng.gauss(rate, math.sqrt(rate))))
    limit, product, count = math.exp(-rate), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


@dataclass
class Replica:
    state: str
    until: float = 0.0  # when its transition ends
    serving_since: float = 0.0
    last_used_minute: int | None = None
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GPU_BILLED + (HIBERNATED,), 0.0))

    def advance(self, now: float) -> None:
        if self.state in (STARTING, WAKING) and now >= self.until:
            self.state, self.serving_since, self.last_used_minute = SERVING, self.until, used_minute(self.until)
        elif self.state == HIBERNATING and now >= self.until:
            self.state = HIBERNATED

    def bill(self, seconds: float) -> None:
        self.seconds[self.state] += seconds


@dataclass
class Outcome:
    name: str
    replicas: list[Replica] = field(default_factory=list)
    requests: int = 0
    cold: int = 0
    refused: int = 0
    most_serving: int = 0

    def gpu_hours(self) -> float:
        return sum(r.seconds[state] for r in self.replicas for state in GPU_BILLED) / HOUR

    def dollars(self, flavor: Flavor) -> float:
        disk = sum(r.seconds[HIBERNATED] for r in self.replicas) / HOUR * flavor.root_disk_gb
        existing = sum(sum(r.seconds.values()) for r in self.replicas) / HOUR
        return (self.gpu_hours() * flavor.dollars_per_hour + disk * ROOT_DISK_DOLLARS_PER_GB_HOUR
                + existing * PUBLIC_IP_DOLLARS_PER_HOUR)


def replay_fixed(demand: list[int], replicas: int, name: str) -> Outcome:
    """`replicas` always serving."""
    outcome = Outcome(name, [Replica(SERVING) for _ in range(replicas)])
    for requests in demand:
        _serve(outcome, requests)
        for replica in outcome.replicas:
            replica.bill(MINUTE)
    return outcome


def replay_hibernating(demand: list[int], hibernate_after_seconds: int) -> Outcome:
    """One replica hibernating when idle (the idle rule), woken by the first request that finds it asleep."""
    replica = Replica(SERVING)
    outcome = Outcome(f"1 replica, hibernate_after_seconds {hibernate_after_seconds}", [replica])
    for minute, requests in enumerate(demand):
        now = minute * MINUTE
        replica.advance(now)
        if requests and replica.state == HIBERNATED:
            replica.state, replica.until = WAKING, now + WAKE_SECONDS
        _serve(outcome, requests, now)
        if replica.state == SERVING and is_idle(replica.last_used_minute, replica.serving_since,
                                                hibernate_after_seconds, now + MINUTE):
            replica.state, replica.until = HIBERNATING, now + MINUTE + HIBERNATE_SECONDS
        replica.bill(MINUTE)
    return outcome


def replay_autoscaled(demand: list[int], settings: ScalingSettings) -> Outcome:
    """The scaler's rule once a minute on the counted demand; a request finding only hibernated replicas wakes one."""
    outcome = Outcome(f"autoscaled {settings.min_replicas}..{settings.max_replicas}")
    since: float | None = None
    previous = 0
    for minute, requests in enumerate(demand):
        now = minute * MINUTE
        for replica in outcome.replicas:
            replica.advance(now)
        asleep = [r for r in outcome.replicas if r.state == HIBERNATED]
        if requests and asleep and not _count(outcome, SERVING, WAKING, STARTING):
            asleep[0].state, asleep[0].until = WAKING, now + WAKE_SECONDS  # the chat path's wake
        _serve(outcome, requests, now)
        load = max(previous, requests)  # at the minute's end: the one before, or this one if more
        previous = requests
        fleet = Fleet(serving=_count(outcome, SERVING), starting=_count(outcome, STARTING),
                      waking=_count(outcome, WAKING), hibernating=_count(outcome, HIBERNATING),
                      hibernated=_count(outcome, HIBERNATED))
        end = now + MINUTE
        since = None if fleet.starting or fleet.waking else below_since(since, load, fleet.active, settings, end)
        _act(outcome, decide(load, fleet, settings, since, end), end)
        for replica in outcome.replicas:
            replica.bill(MINUTE)
    return outcome


def _act(outcome: Outcome, decision, now: float) -> None:  # noqa: ANN001 - scaling_rule.Decision
    for replica in [r for r in outcome.replicas if r.state == HIBERNATED][:decision.wake]:
        replica.state, replica.until = WAKING, now + WAKE_SECONDS
    outcome.replicas += [Replica(STARTING, until=now + CREATE_SECONDS) for _ in range(decision.create)]
    if decision.scale_in:
        serving = [r for r in outcome.replicas if r.state == SERVING]
        newest = max(serving, key=lambda r: r.serving_since)
        newest.state, newest.until = HIBERNATING, now + HIBERNATE_SECONDS


def _serve(outcome: Outcome, requests: int, now: float = 0.0) -> None:
    serving = [r for r in outcome.replicas if r.state == SERVING]
    outcome.requests += requests
    outcome.most_serving = max(outcome.most_serving, len(serving))
    if not serving:
        outcome.cold += requests  # they wait for a replica to start or wake (X-Wait-For-Model), or retry
        return
    outcome.refused += max(0, requests - len(serving) * CAPACITY_RPM)
    if requests:
        for replica in serving:
            replica.last_used_minute = used_minute(now)


def _count(outcome: Outcome, *states: str) -> int:
    return sum(1 for replica in outcome.replicas if replica.state in states)


def scenarios(demand: list[int]) -> list[Outcome]:
    return [replay_fixed(demand, 1, "1 replica always on"),
            replay_fixed(demand, MAX_REPLICAS, f"{MAX_REPLICAS} replicas always on"),
            replay_hibernating(demand, HIBERNATE_AFTER_SECONDS),
            replay_autoscaled(demand, AUTOSCALED),
            replay_autoscaled(demand, ScalingSettings(1, MAX_REPLICAS, AUTOSCALED.target_requests_per_minute,
                                                      AUTOSCALED.scale_in_after_seconds))]


def rows(outcomes: list[Outcome], flavor: Flavor = FLAVOR) -> list[tuple[str, ...]]:
    baseline = outcomes[1].dollars(flavor)  # max_replicas always on: what autoscaling is measured against
    table = []
    for outcome in outcomes:
        billed = outcome.dollars(flavor)
        table.append((outcome.name, f"{outcome.gpu_hours():.1f}", f"${billed:.2f}", f"{billed / baseline:.2f}x",
                      f"{outcome.cold} ({outcome.cold / outcome.requests:.1%})",
                      f"{outcome.refused} ({outcome.refused / outcome.requests:.1%})", str(outcome.most_serving)))
    return table


HEADER = ("scenario", "GPU-hours", "$ per week", f"vs {MAX_REPLICAS} always on", "served cold", "refused or queued",
          "most serving")


def main() -> None:
    demand = week_demand()
    print(f"A busy week of {sum(demand)} requests (seed {SEED}, peaks of {max(demand)} a minute); {FLAVOR.name} at "
          f"${FLAVOR.dollars_per_hour}/h; a replica carries {CAPACITY_RPM} requests a minute; a new replica serves "
          f"{CREATE_SECONDS} s after it is asked for, a woken one {WAKE_SECONDS} s; autoscaled: target "
          f"{AUTOSCALED.target_requests_per_minute}/min, scale-in after {AUTOSCALED.scale_in_after_seconds} s; "
          f"prices as of {PRICES_AS_OF}.\n")
    print_table(rows(scenarios(demand)), HEADER)


if __name__ == "__main__":
    main()
