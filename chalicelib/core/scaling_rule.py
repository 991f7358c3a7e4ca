"""How many replicas a model should have, and what to do about it: the autoscaler's one rule (issue #23).

Pure, so that the scaler (a scheduled function, still to be built) and `make bench` can share it: the scaler
will read the model's load and replicas, call `decide`, and act on the decision through the workflows.
Load is requests per minute; demand refused for want of capacity counts as load, since it is load the
replicas did not take. The rule:

- desired = load / target_requests_per_minute, rounded up, within [min_replicas, max_replicas];
- scale out at once: wake hibernated replicas first (minutes cheaper than a new VM), then create, never above
  max_replicas counting every replica the model has or is making, and create nothing while the template's
  recent creates failed (backing off, so that a template that cannot boot does not bill GPUs in a loop);
- scale in slowly: only after load has stayed below what one replica fewer would carry for
  scale_in_after_seconds, one replica per decision, never below min_replicas, and never while a replica is
  still starting or waking (whatever asked for it is still waiting for it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Creates that failed within this window hold further creates back (a template whose VMs do not boot).
CREATE_BACKOFF_SECONDS = 15 * 60
FAILED_CREATES_TO_BACK_OFF = 2


@dataclass(frozen=True)
class ScalingSettings:
    min_replicas: int
    max_replicas: int
    target_requests_per_minute: int
    scale_in_after_seconds: int


@dataclass(frozen=True)
class Fleet:
    """A model's replicas by where they stand."""

    serving: int = 0  # SUCCESS
    starting: int = 0  # PENDING, CREATING_VM, BOOTING: created, not serving yet
    waking: int = 0  # WAKING
    hibernating: int = 0  # HIBERNATING
    hibernated: int = 0  # HIBERNATED: the warm pool
    failed_creates: int = 0  # creates of this model's template that failed within CREATE_BACKOFF_SECONDS

    @property
    def active(self) -> int:
        """Replicas serving or on their way to serve: what the load can count on soon."""
        return self.serving + self.starting + self.waking

    @property
    def claimed(self) -> int:
        """Every replica the model has or is making: what max_replicas bounds."""
        return self.active + self.hibernating + self.hibernated


@dataclass(frozen=True)
class Decision:
    desired: int
    wake: int = 0
    create: int = 0
    scale_in: int = 0
    reason: str = ""
    backing_off: bool = False  # creates wanted, withheld: the template's recent creates failed


def desired_count(load_rpm: float, settings: ScalingSettings) -> int:
    return max(settings.min_replicas, min(settings.max_replicas, desired_count_unbounded(load_rpm, settings)))


def desired_count_unbounded(load_rpm: float, settings: ScalingSettings) -> int:
    """Replicas the load would take, were there no max_replicas."""
    return math.ceil(load_rpm / settings.target_requests_per_minute) if load_rpm > 0 else 0


def decide(load_rpm: float, fleet: Fleet, settings: ScalingSettings, below_since: float | None,
           now: float) -> Decision:
    """What to do now. `below_since`: since when load has stayed below what `fleet.active - 1` replicas carry
    (None if it is not below)."""
    desired = desired_count(load_rpm, settings)
    if desired > fleet.active:
        return _scale_out(desired, fleet, settings, load_rpm)
    if desired < fleet.active and (fleet.starting or fleet.waking):
        # They were asked for (by load, or by a request that woke one) and are not serving yet: no scale-in
        # until they are, or a replica would be hibernated while the request that woke it waits for it.
        return Decision(desired, reason=f"load {load_rpm:g}/min needs {desired}; {fleet.active} active, "
                                        f"{fleet.starting + fleet.waking} still starting or waking: no scale-in yet")
    if desired < fleet.active:  # desired is at least min_replicas, so this never goes below it
        if below_since is None or now - below_since < settings.scale_in_after_seconds:
            waited = 0 if below_since is None else int(now - below_since)
            return Decision(desired, reason=f"load {load_rpm:g}/min needs {desired}; {fleet.active} active: "
                                            f"scaling in after {settings.scale_in_after_seconds} s below "
                                            f"({waited} s so far)")
        return Decision(desired, scale_in=1, reason=f"load {load_rpm:g}/min has needed {desired} for "
                                                    f"{settings.scale_in_after_seconds} s; {fleet.active} active")
    return Decision(desired, reason=f"load {load_rpm:g}/min needs {desired}; {fleet.active} active")


def _scale_out(desired: int, fleet: Fleet, settings: ScalingSettings, load_rpm: float) -> Decision:
    missing = desired - fleet.active
    wake = min(missing, fleet.hibernated)
    room = max(0, settings.max_replicas - fleet.claimed)  # hibernated ones woken take no new room
    create = min(missing - wake, room)
    reason = f"load {load_rpm:g}/min needs {desired}; {fleet.active} active"
    if create and fleet.failed_creates >= FAILED_CREATES_TO_BACK_OFF:
        return Decision(desired, wake=wake, backing_off=True,
                        reason=f"{reason}; not creating: {fleet.failed_creates} creates failed in the last "
                               f"{CREATE_BACKOFF_SECONDS // 60} minutes")
    if missing - wake > room or desired_count_unbounded(load_rpm, settings) > settings.max_replicas:
        reason += f"; at max_replicas ({settings.max_replicas})"
    return Decision(desired, wake=wake, create=create, reason=reason)


def below_since(previous: float | None, load_rpm: float, active: int, settings: ScalingSettings,
                now: float) -> float | None:
    """The scaler's memory between runs: since when load has been below what `active - 1` replicas carry."""
    if active <= 0 or load_rpm > (active - 1) * settings.target_requests_per_minute:
        return None
    return previous if previous is not None else now
