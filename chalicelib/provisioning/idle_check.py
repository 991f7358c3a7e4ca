"""The scheduled idle check: hibernate replicas idle for their `hibernate_after_seconds`.

Every IDLE_CHECK_SECONDS (an EventBridge schedule; each second under `make run`) it reads the replicas
(the `listing` index: an admin's handful of rows, eventually consistent, which the workflows' conditional
writes make harmless) and starts the hibernate workflow of each SUCCESS provisioned replica that the idle
rule (chalicelib/core/idle_rule.py) calls idle. It also starts the wake of a hibernated replica whose wake was
asked for a while ago without one serving it (its asker died between its write and the start, or its
execution failed). Starting is idempotent by execution name, so overlapping checks start each workflow
once; a workflow whose execution of that name failed is started again under a new name (no dead end: a
failed wake or hibernation is retried a minute later, and so on until one succeeds or the replica moves).
An autoscaled model's replicas hibernate when idle only down to its min_replicas.
A replica left PENDING, CREATING_VM, BOOTING, HIBERNATING or WAKING by an execution that ended without
finishing (Hyperstack unreachable for longer than its retries, a VM still on its way, an execution
stopped by hand) gets a new execution of that workflow, whose first step takes the replica over
(step_helpers.live) and carries on; a minute later again if that one fails too.
A teardown that failed (DELETE_FAILED) is tried again TEARDOWN_RETRY_SECONDS after it started, and one lost
(DELETING for longer than any teardown lasts, TEARDOWN_STALL_SECONDS) is started again: a replica asked to go
goes, without an admin's second DELETE.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from chalicelib.core import replica_statuses as statuses
from chalicelib.core.idle_rule import is_idle
from chalicelib.core.observability import logger
from chalicelib.core.settings import get_provision_settings
from chalicelib.core.step_functions import WorkflowNotDeployed
from chalicelib.provisioning import workflow
from chalicelib.store.tables import LlmModel, Replica

# Statuses a workflow moves a replica through: left there by an execution that ended, a new one takes it over.
_TAKEN_OVER = (*statuses.IN_PROGRESS, statuses.HIBERNATING, statuses.WAKING)
MISSING = "idle check has no workflows to start: nothing is hibernated, woken or taken over"
# A wake asked this long ago (ms) with the replica still HIBERNATED was never started: start it.
STALE_WAKE_REQUEST_MS = 30_000


def run(now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    outcome: dict[str, Any] = {"hibernating": [], "waking": [], "taken_over": [], "tearing_down": []}
    missing = workflow.missing()
    if missing:
        workflow.say_missing_once(MISSING, missing)
        return {**outcome, "missing": missing}
    try:
        _check_each(now, outcome)
    except WorkflowNotDeployed as error:  # named (chalice deploy) but its companion stack is not deployed yet
        workflow.say_missing_once(MISSING, [error.message])
        return {**outcome, "missing": [error.message]}
    return outcome


def _check_each(now: float, outcome: dict[str, list[int]]) -> None:
    replicas = list(Replica.listing_index.query("replicas"))
    spare = _spare_serving(replicas)
    for replica in replicas:
        mover = replica.moved_by or replica.execution_arn
        if replica.vm_status in _TAKEN_OVER and mover:
            if workflow.take_over_if_ended(int(replica.id), replica.vm_status, mover, now):
                outcome["taken_over"].append(int(replica.id))
                logger.info("stalled workflow taken over", extra={"replica_id": int(replica.id),
                                                                  "vm_status": replica.vm_status})
        elif idle(replica, now) and spare.get(int(replica.model_id), 1) > 0:
            spare[int(replica.model_id)] = spare.get(int(replica.model_id), 1) - 1
            workflow.start_hibernate(int(replica.id), int(serving_since(replica)), restart_failed=True)
            outcome["hibernating"].append(int(replica.id))
            logger.info("idle replica hibernating", extra={
                "replica_id": int(replica.id), "hibernate_after_seconds": int(replica.hibernate_after_seconds),
                "last_used_minute": replica.last_used_minute})
        elif (started_at := _teardown_to_retry(replica, now)) is not None:
            workflow.retry_teardown(int(replica.id), started_at)
            outcome["tearing_down"].append(int(replica.id))
            logger.info("teardown retried", extra={"replica_id": int(replica.id), "vm_status": replica.vm_status,
                                                   "error_message": replica.error_message})
        elif _wake_never_started(replica, now):
            workflow.start_wake(int(replica.id), int(replica.wake_requested_at), restart_failed=True)
            outcome["waking"].append(int(replica.id))
            logger.info("stalled wake started", extra={"replica_id": int(replica.id)})


def _spare_serving(replicas: list[Replica]) -> dict[int, int]:
    """Per autoscaled model, how many of its serving replicas may hibernate: those above its min_replicas (the
    scaler would only wake them again). Models without autoscaling are not in it: any idle replica may go."""
    floors = {int(model.id): int(model.autoscaling.as_dict()["min_replicas"])
              for model in LlmModel.listing_index.query("llm_models") if model.autoscaling is not None}
    serving = Counter(int(r.model_id) for r in replicas if r.vm_status == statuses.SUCCESS and r.model_id in floors)
    return {model_id: serving[model_id] - floor for model_id, floor in floors.items()}


def idle(replica: Replica, now: float) -> bool:
    """The idle rule applied to a replica row: a serving replica with a VM, unused for its time."""
    if replica.vm_status != statuses.SUCCESS or replica.vm_id is None:
        return False
    last_used = int(replica.last_used_minute) if replica.last_used_minute is not None else None
    after = int(replica.hibernate_after_seconds) if replica.hibernate_after_seconds else None
    return is_idle(last_used, serving_since(replica), after, now)


def serving_since(replica: Replica) -> float:
    """When the replica's current serving period began (its creation, for a row from before the field)."""
    return float(replica.serving_since if replica.serving_since is not None else replica.created_at)


def _wake_never_started(replica: Replica, now: float) -> bool:
    return (replica.vm_status == statuses.HIBERNATED and replica.wake_requested_at is not None
            and now * 1000 - int(replica.wake_requested_at) > STALE_WAKE_REQUEST_MS)


def _teardown_to_retry(replica: Replica, now: float) -> int | None:
    """When the replica's latest teardown started, if it is due another: failed (DELETE_FAILED) a while ago, or
    lost (DELETING for longer than any teardown runs). None otherwise."""
    settings = get_provision_settings()
    waits = {statuses.DELETE_FAILED: settings.teardown_retry_seconds,
             statuses.DELETING: settings.teardown_stall_seconds}
    if replica.vm_status not in waits:
        return None
    started_at = int(replica.teardown_started_at if replica.teardown_started_at is not None else replica.created_at)
    return started_at if now - started_at >= waits[replica.vm_status] else None
