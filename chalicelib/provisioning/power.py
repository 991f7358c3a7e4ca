"""The steps of the hibernate and wake workflows (infra/hibernate.asl.json, infra/wake.asl.json).

A replica moves SUCCESS -> HIBERNATING -> HIBERNATED -> WAKING -> SUCCESS, each move a conditional write
from the status before, so two workflows never both act on one replica; a step that finds its replica in
another status (deleted: DELETING; woken meanwhile) raises ReplicaGone and its workflow ends without
touching it. No step here makes a VM: a teardown running beside them deletes the one recorded, and their
compensation (delete the VM, mark FAILED) is provisioning's. Steps are idempotent like provisioning's:
Hyperstack's hibernate and restore succeed when the VM is already where they send it, and a step delivered
again after its own status move landed finds the replica moved there by its execution and ends as if it
had moved it (step_helpers.live and advance).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chalicelib.core import replica_statuses as statuses
from chalicelib.core.idle_rule import last_used_at, used_minute
from chalicelib.provisioning import outcomes, workflow
from chalicelib.provisioning.errors import HibernationRefused, NotIdle, ProvisioningFailed, StillHibernating
from chalicelib.provisioning.idle_check import idle
from chalicelib.provisioning.step_helpers import (
    Hyperstack,
    advance,
    call,
    endpoint,
    failure_reason,
    live,
    model_poll,
    vm_poll,
)

REFUSED_REASON = "Not hibernated: {reason} Hibernation is off for this replica (hibernate_after_seconds cleared)."
FAILED_REASON = "Hibernation failed, the replica serves on: {reason}"


def start_hibernate(event: dict[str, Any]) -> dict[str, Any]:
    """SUCCESS -> HIBERNATING: no chat instance routes to it once its replica cache expires (the drain's first
    wait). Returns the VM and the minute of use it saw, which the drain compares with what it reads later."""
    replica = live(event, allowed=(statuses.SUCCESS,), done=(statuses.HIBERNATING,), take_over=True)
    if replica.vm_id is None:
        raise ProvisioningFailed(f"Replica {replica.id} has no VM to hibernate.")
    if event.get("if_idle") and replica.vm_status == statuses.SUCCESS and not idle(replica, time.time()):
        # The idle check read an eventually consistent index: this read is consistent, and a request may
        # have come since. It keeps serving; the next idle check judges again.
        raise NotIdle(f"Replica {replica.id} was used since the idle check read it.")
    advance(event, statuses.HIBERNATING, allowed=(statuses.SUCCESS,), hibernated_at=int(time.time()))
    return {"vm_id": int(replica.vm_id), "last_used_minute": _minute(replica)}


def check_drained(event: dict[str, Any]) -> dict[str, Any]:
    """One look at a HIBERNATING replica's requests in flight, before its VM goes: {drained, polls: polls + 1}.

    A request in flight records each new minute of use (chalicelib/chat/routing.py UseMarks), so the replica
    is drained once the minute it last recorded has ended, and `drain_poll_seconds` more have passed without
    a newer one. An idle check's hibernation (if_idle) used meanwhile (a request routed from a cache read
    before the replica was marked) is called off: the replica serves on (NotIdle).
    """
    replica = live(event, allowed=(statuses.HIBERNATING,), done=(statuses.SUCCESS,))
    if replica.vm_status == statuses.SUCCESS:  # delivered again after this step put it back to serving
        raise NotIdle(f"Replica {replica.id} was used while it drained; it serves on.")
    now = time.time()
    last_used = _minute(replica)
    if event.get("if_idle") and last_used != event.get("last_used_minute"):
        advance(event, statuses.SUCCESS, allowed=(statuses.HIBERNATING,), serving_since=int(now),
                hibernated_at=None, wake_requested_at=None)
        raise NotIdle(f"Replica {replica.id} was used while it drained; it serves on.")
    quiet_since = last_used_at(last_used, 0.0) + int(event.get("drain_poll_seconds") or 0)
    return {"drained": now >= quiet_since, "polls": int(event.get("polls") or 0) + 1}


def hibernate_vm(event: dict[str, Any], hyperstack: Hyperstack) -> dict[str, Any]:
    from chalicelib.hyperstack.client import HibernationUnsupported

    live(event, allowed=(statuses.HIBERNATING,))
    client = hyperstack()

    def hibernate() -> None:
        try:
            client.hibernate_vm(int(event["vm_id"]), retain_ip=True)
        except HibernationUnsupported as refused:  # its flavor never will: no retry, no compensation
            raise HibernationRefused(f"Hyperstack refused: {refused}") from None

    call(hibernate)
    return {}


def check_hibernated(event: dict[str, Any], hyperstack: Hyperstack) -> dict[str, Any]:
    live(event, allowed=(statuses.HIBERNATING,))
    vm = call(lambda: hyperstack().get_vm(int(event["vm_id"])))
    polls = int(event.get("polls") or 0) + 1
    if vm is None:
        raise ProvisioningFailed("The VM disappeared from Hyperstack while it was being hibernated.")
    status = vm.status if vm.status in ("HIBERNATED", "ERROR") else "HIBERNATING"
    return {"status": status, "polls": polls}


def mark_hibernated(event: dict[str, Any]) -> dict[str, Any]:
    replica = live(event, allowed=(statuses.HIBERNATING,), done=(statuses.HIBERNATED,))
    advance(event, statuses.HIBERNATED, allowed=(statuses.HIBERNATING,))
    if replica.wake_requested_at is not None:  # a request came while it hibernated: wake it right away
        workflow.start_wake(int(replica.id), int(replica.wake_requested_at))
    return outcomes.repeated(replica.vm_status == statuses.HIBERNATED)


def hibernation_refused(event: dict[str, Any]) -> dict[str, Any]:
    replica = live(event, allowed=(statuses.HIBERNATING,), done=(statuses.SUCCESS,))
    reason = REFUSED_REASON.format(reason=failure_reason(event.get("error")))
    advance(event, statuses.SUCCESS, allowed=(statuses.HIBERNATING,), error_message=reason,
            hibernate_after_seconds=None, hibernated_at=None, wake_requested_at=None)
    return {"reason": reason, **outcomes.repeated(replica.vm_status == statuses.SUCCESS)}


def hibernation_failed(event: dict[str, Any], hyperstack: Hyperstack) -> dict[str, Any]:
    """Where a hibernation that went wrong leaves the VM, read from Hyperstack again: {outcome}.

    `serving`: the VM is ACTIVE, the replica SUCCESS again. `hibernated`: it hibernated after all, the replica
    HIBERNATED. `lost`: Hyperstack says the VM is gone or in ERROR, and compensation deletes it. `unsettled`:
    anything else (still on its way): the replica stays HIBERNATING, the execution fails, and the idle check
    takes the hibernation over. Never a delete because Hyperstack could not be asked (that error ends the
    execution the same way).
    """
    replica = live(event, allowed=(statuses.HIBERNATING,), done=(statuses.SUCCESS, statuses.HIBERNATED))
    if replica.vm_status != statuses.HIBERNATING:  # delivered again after its own move landed
        return {"outcome": "serving" if replica.vm_status == statuses.SUCCESS else "hibernated",
                **outcomes.repeated(True)}
    vm = call(lambda: hyperstack().get_vm(int(event["vm_id"])))
    if vm is None or vm.status == "ERROR":
        return {"outcome": "lost"}
    if vm.status == "HIBERNATED":
        mark_hibernated(event)
        return {"outcome": "hibernated"}
    if vm.status != "ACTIVE":
        return {"outcome": "unsettled", "vm_status": vm.status}
    reason = FAILED_REASON.format(reason=failure_reason(event.get("error")))
    # A new serving period: the idle check names its next hibernation after it.
    advance(event, statuses.SUCCESS, allowed=(statuses.HIBERNATING,), error_message=reason,
            serving_since=int(time.time()), last_used_minute=replica.last_used_minute, hibernated_at=None,
            wake_requested_at=None)
    return {"outcome": "serving"}


def start_wake(event: dict[str, Any]) -> dict[str, Any]:
    replica = live(event, allowed=(statuses.HIBERNATING, statuses.HIBERNATED), done=(statuses.WAKING,),
                   take_over=True)
    if replica.vm_status == statuses.HIBERNATING:  # asked for mid-hibernation: restore once it is hibernated
        raise StillHibernating(f"Replica {replica.id} is still hibernating.")
    advance(event, statuses.WAKING, allowed=(statuses.HIBERNATED,), wake_started_at=int(time.time()),
            wake_requested_at=None, hibernated_at=None, error_message=None)
    # The polls' timings from this function's settings: a starter (the chat function) passes the replica only.
    timings = {name: value for name, value in workflow.execution_input("waking", int(replica.id)).items()
               if name not in ("action", "replica_id")}
    return {"vm_id": int(replica.vm_id), **timings}


def restore_vm(event: dict[str, Any], hyperstack: Hyperstack) -> dict[str, Any]:
    live(event, allowed=(statuses.WAKING,))
    client = hyperstack()
    call(lambda: client.restore_vm(int(event["vm_id"])))
    return {}


def check_restored(event: dict[str, Any], hyperstack: Hyperstack) -> dict[str, Any]:
    live(event, allowed=(statuses.WAKING,))
    return vm_poll(call(lambda: hyperstack().get_vm(int(event["vm_id"]))), event, waiting="RESTORING",
                   doing="restored")


def check_awake(event: dict[str, Any]) -> dict[str, Any]:
    return model_poll(event, allowed=(statuses.WAKING,))


def wake_failed(event: dict[str, Any], hyperstack: Hyperstack) -> dict[str, Any]:
    """Where a wake that went wrong leaves the VM, read from Hyperstack again: {outcome}. `lost` (gone or in
    ERROR): compensation deletes it and marks the replica FAILED. Otherwise `unsettled`: the replica stays
    WAKING, the execution fails, and the idle check takes the wake over; its VM and disk are kept."""
    live(event, allowed=(statuses.WAKING,))
    vm = call(lambda: hyperstack().get_vm(int(event["vm_id"])))
    if vm is None or vm.status == "ERROR":
        return {"outcome": "lost"}
    return {"outcome": "unsettled", "vm_status": vm.status}


def mark_awake(event: dict[str, Any]) -> dict[str, Any]:
    replica = live(event, allowed=(statuses.WAKING,), done=(statuses.SUCCESS,))
    now = time.time()
    took = now - float(replica.wake_started_at) if replica.wake_started_at is not None else None
    # Served from now, and counted as used now: the requests that woke it are about to come.
    advance(event, statuses.SUCCESS, allowed=(statuses.WAKING,), endpoint=endpoint(event["floating_ip"], replica),
            serving_since=int(now), last_used_minute=used_minute(now), error_message=None,
            wake_seconds=max(1, round(took)) if took is not None else None)
    return outcomes.repeated(replica.vm_status == statuses.SUCCESS)


HYPERSTACK_STEPS: dict[str, Callable[[dict[str, Any], Hyperstack], dict[str, Any]]] = {
    "hibernate_vm": hibernate_vm,
    "check_hibernated": check_hibernated,
    "hibernation_failed": hibernation_failed,
    "restore_vm": restore_vm,
    "check_restored": check_restored,
    "wake_failed": wake_failed,
}
STEPS_WITHOUT_HYPERSTACK: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "start_hibernate": start_hibernate,
    "check_drained": check_drained,
    "mark_hibernated": mark_hibernated,
    "hibernation_refused": hibernation_refused,
    "start_wake": start_wake,
    "check_awake": check_awake,
    "mark_awake": mark_awake,
}


def _minute(replica: Any) -> int | None:
    return int(replica.last_used_minute) if replica.last_used_minute is not None else None
