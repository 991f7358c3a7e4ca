"""`make cost`: what hibernating idle GPU replicas saves over keeping them on, for a week of bursty use.

The trace is a synthetic week, seeded (SEED) so every run prints the same table. Monday 00:00 is t = 0.
Users arrive in bursts (a chat session: several requests a reader's pause apart, EXPONENTIAL gaps of
mean BURST_GAP_SECONDS) whose starts are a Poisson process with a rate set per hour of the day:
weekdays 09:00-18:00 are office hours (4 bursts an hour of about 6 requests) with a lunch dip
(12:00-13:00, 1 an hour), 18:00-22:00 is a sparse evening (one every two hours), the night is quiet
(a stray request every 20 hours on average) and the weekend nearly silent (a stray request every
12 hours or so).

Each (flavor, hibernate_after_seconds) replays the same trace through one replica's states, using
the proxy's own idle rule (chalicelib/core/idle_rule.py) as is: a request records its `used_minute`, the
idle check ticks every IDLE_CHECK_SECONDS and hibernates the replica once `is_idle` says so.
  SERVING ──idle──▶ HIBERNATING (HIBERNATE_SECONDS) ──▶ HIBERNATED ──request──▶ WAKING (WAKE_SECONDS) ──▶ SERVING
A request arriving while the replica is hibernating or hibernated starts one wake (after the
hibernation has finished); every request arriving before the wake ends waits for it: those are the
cold requests, and their wait is printed. "never" is the always-on baseline the other rows are
compared to, replayed in the same run.

Billing, conservatively: the GPU flavor is billed while SERVING and through both transitions
(Hyperstack says HIBERNATING and RESTORING are not billed, so each wake and hibernation here bills a
few minutes too many); while HIBERNATED only the root disk saved to storage is billed. A public IP
is billed all week either way. Prices are the PRICES table below with its date and source: offline
by design, `make cost` never calls the network. The SDK can answer live prices
(`hyperstack.PricebookApi(client).get_pricebook()`, a list of `PricebookModel` name/value per hour);
compare them with the table by hand when refreshing it.
"""

from __future__ import annotations

import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from chalicelib.core.idle_rule import is_idle, used_minute  # noqa: E402

SEED = 12
HOUR = 3600
DAY = 24 * HOUR
WEEK_SECONDS = 7 * DAY
IDLE_CHECK_SECONDS = 60  # the idle check's schedule in AWS
HIBERNATE_AFTER = (300, 900, 3600, None)  # None: never hibernate, the always-on baseline

# Assumed transition times, one set for every flavor: Hyperstack's hibernation saves the root disk to
# storage; a wake is the restore, the VM's boot and vLLM loading the model from the root disk.
HIBERNATE_SECONDS = 120
WAKE_SECONDS = 120 + 30 + 90  # restore + boot + model load and health check

# (first hour, end hour, bursts per hour, mean requests per burst), per hour of the day.
WEEKDAY = ((0, 9, 0.05, 1), (9, 12, 4.0, 6), (12, 13, 1.0, 4), (13, 18, 4.0, 6), (18, 22, 0.5, 2),
           (22, 24, 0.05, 1))
WEEKEND = ((0, 24, 0.08, 1),)
BURST_GAP_SECONDS = 45.0


@dataclass(frozen=True)
class Flavor:
    name: str
    dollars_per_hour: float
    root_disk_gb: int


# Hyperstack's on-demand prices per hour, hyperstack.cloud/gpu-pricing as quoted in issue #12 (A6000
# about $0.50, H100 about $1.90); the A100 is its listed PCIe 80 GB price as remembered, not re-read:
# this table was written offline on 2026-11-30, so treat every figure as an assumption to refresh.
PRICES_AS_OF = "2026-11-30 (assumed; source hyperstack.cloud/gpu-pricing and issue #12)"
FLAVORS = (
    Flavor("n3-RTX-A6000x1", 0.50, 100),
    Flavor("n3-A100x1", 1.35, 100),
    Flavor("n3-H100x1", 1.90, 100),
)
# Assumptions, not read from the pricing page: storage like Hyperstack's volumes at $0.07 per
# GB-month (730 h), and a public IP at $0.005 an hour (AWS's price), billed in every state.
ROOT_DISK_DOLLARS_PER_GB_HOUR = 0.07 / 730
PUBLIC_IP_DOLLARS_PER_HOUR = 0.005

SERVING, HIBERNATING, HIBERNATED, WAKING = "SERVING", "HIBERNATING", "HIBERNATED", "WAKING"
GPU_BILLED = (SERVING, HIBERNATING, WAKING)


def week_trace(seed: int = SEED) -> list[float]:
    """Request arrival times (seconds since Monday 00:00) of the synthetic week."""
    rng = random.Random(seed)
    arrivals: list[float] = []
    for day in range(7):
        for first, end, bursts_per_hour, mean_requests in WEEKDAY if day < 5 else WEEKEND:
            start = day * DAY + first * HOUR
            arrivals += bursts(rng, start, start + (end - first) * HOUR, bursts_per_hour, mean_requests)
    return sorted(arrival for arrival in arrivals if arrival < WEEK_SECONDS)


def bursts(rng: random.Random, start: float, end: float, bursts_per_hour: float, mean_requests: float) -> list[float]:
    """A Poisson process of burst starts in [start, end), each burst a few requests a pause apart."""
    arrivals, at = [], start
    while (at := at + rng.expovariate(bursts_per_hour / HOUR)) < end:
        request_at = at
        arrivals.append(request_at)
        while rng.random() > 1 / mean_requests:  # a geometric number of requests, mean `mean_requests`
            request_at += rng.expovariate(1 / BURST_GAP_SECONDS)
            arrivals.append(request_at)
    return arrivals


@dataclass
class Replica:
    """One replica's states through the week, with the seconds spent in each and the waits it caused."""

    hibernate_after_seconds: int | None
    hibernate_seconds: float = HIBERNATE_SECONDS
    wake_seconds: float = WAKE_SECONDS
    state: str = SERVING
    since: float = 0.0  # when the current state began
    until: float = 0.0  # when the current transition ends
    serving_since: float = 0.0
    last_used_minute: int | None = None
    wake_requested: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys((SERVING, HIBERNATING, HIBERNATED,
                                                                              WAKING), 0.0))
    wakes: int = 0
    waits: list[float] = field(default_factory=list)

    def request(self, at: float) -> float:
        """A request at `at`: served now when SERVING, else it waits for the wake. Returns its wait."""
        self.advance(at)
        if self.state == SERVING:
            self.last_used_minute = used_minute(at)  # the proxy writes this at most once a minute
            return 0.0
        if self.state == HIBERNATED:
            self.enter(WAKING, at, at + self.wake_seconds)
            self.wakes += 1
        ready = self.until if self.state == WAKING else self.until + self.wake_seconds
        self.wake_requested = True
        self.waits.append(ready - at)
        return ready - at

    def idle_check(self, now: float) -> None:
        self.advance(now)
        if self.state == SERVING and is_idle(self.last_used_minute, self.serving_since,
                                             self.hibernate_after_seconds, now):
            self.enter(HIBERNATING, now, now + self.hibernate_seconds)

    def advance(self, now: float) -> None:
        """Finish every transition that has ended by `now`."""
        while self.state in (HIBERNATING, WAKING) and self.until <= now:
            if self.state == WAKING:
                self.enter(SERVING, self.until)
                self.serving_since, self.wake_requested = self.since, False
                self.last_used_minute = used_minute(self.since)  # the waiting requests are served now
            elif self.wake_requested:  # asked for while it was hibernating: wake at once
                self.enter(HIBERNATED, self.until)
                self.enter(WAKING, self.since, self.since + self.wake_seconds)
                self.wakes += 1
            else:
                self.enter(HIBERNATED, self.until)

    def enter(self, state: str, at: float, until: float = 0.0) -> None:
        self.seconds[self.state] += at - self.since
        self.state, self.since, self.until = state, at, until

    def finish(self, end: float) -> None:
        self.advance(end)
        self.enter(self.state, end, self.until)


def replay(arrivals: list[float], hibernate_after_seconds: int | None, end: float = WEEK_SECONDS,
           **transitions: float) -> Replica:
    """The replica's week: requests in order, the idle check on every tick between them."""
    replica, pending = Replica(hibernate_after_seconds, **transitions), iter(sorted(arrivals))
    arrival = next(pending, None)
    for tick in range(IDLE_CHECK_SECONDS, int(end) + 1, IDLE_CHECK_SECONDS):
        while arrival is not None and arrival <= tick:
            replica.request(arrival)
            arrival = next(pending, None)
        replica.idle_check(tick)
    replica.finish(end)
    return replica


def gpu_hours(replica: Replica) -> float:
    return sum(replica.seconds[state] for state in GPU_BILLED) / HOUR


def dollars(replica: Replica, flavor: Flavor) -> float:
    """The week's bill: the flavor while billed, the saved root disk while hibernated, the IP throughout."""
    disk = replica.seconds[HIBERNATED] / HOUR * flavor.root_disk_gb * ROOT_DISK_DOLLARS_PER_GB_HOUR
    ip = sum(replica.seconds.values()) / HOUR * PUBLIC_IP_DOLLARS_PER_HOUR
    return gpu_hours(replica) * flavor.dollars_per_hour + disk + ip


def waits_cell(replica: Replica) -> str:
    if not replica.waits:
        return "-"
    return f"{statistics.mean(replica.waits):.0f} s mean, {max(replica.waits):.0f} s max"


def rows(arrivals: list[float]) -> list[tuple[str, ...]]:
    replicas = {after: replay(arrivals, after) for after in HIBERNATE_AFTER}
    table = []
    for flavor in FLAVORS:
        baseline = dollars(replicas[None], flavor)
        for after, replica in replicas.items():
            billed = dollars(replica, flavor)
            table.append((flavor.name, "never" if after is None else str(after), f"{gpu_hours(replica):.1f}",
                          f"${billed:.2f}", f"{billed / baseline:.2f}x ({1 - billed / baseline:.0%} saved)",
                          str(replica.wakes), f"{len(replica.waits)} of {len(arrivals)}", waits_cell(replica)))
    return table


HEADER = ("flavor", "hibernate_after_seconds", "GPU-hours", "$ per week", "vs always-on", "wakes", "cold requests",
          "wait per cold request")


def print_table(table: list[tuple[str, ...]], header: tuple[str, ...] = HEADER) -> None:
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, tuple("-" * width for width in widths), *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def main() -> None:
    arrivals = week_trace()
    print(f"A synthetic week of {len(arrivals)} requests (seed {SEED}); idle check every {IDLE_CHECK_SECONDS} s; "
          f"hibernate {HIBERNATE_SECONDS} s, wake {WAKE_SECONDS} s; prices as of {PRICES_AS_OF}.\n")
    print_table(rows(arrivals))


if __name__ == "__main__":
    main()
