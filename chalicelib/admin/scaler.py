"""The scaler: each autoscaled model's replicas brought to what its load needs (issue #23).

Scheduled (every SCALE_CHECK_SECONDS; a minute in AWS). Each run reads the replicas once (the `listing`
index: an admin's fleet of rows, as the idle check reads them), and for each model with autoscaling takes the
model's lease (one conditional write, so that runs of one model take turns), reads its demand
(store.model_load), applies the rule (chalicelib/core/scaling_rule.py) and acts through the workflows:

- out: wake hibernated replicas first (the warm pool), then create from the template. Each create holds one of
  the model's scaling slots, inserted with the replica on condition that no other replica holds it, and a model
  has max_replicas slots less those of its replicas made by hand: however many runs race, no more VMs are made
  than max_replicas allows;
- in: one replica per decision, after scale_in_after_seconds below the need: a serving provisioned one, those
  the scaler made first and the newest first, hibernated (drained first: never cut off mid-request) into the
  warm pool; one whose flavor cannot hibernate is deleted if the scaler made it, and a hand-made one is never
  deleted;
- a replica the scaler made that failed to provision is deleted (its slot freed) and its failure remembered:
  FAILED_CREATES_TO_BACK_OFF of them within CREATE_BACKOFF_SECONDS stop further creates, and the state says why.

It acts as an admin would, through the admin's own replica operations (chalicelib/admin/replicas.py: create_vm's
insert, wake, teardown), which is why it lives in this package. Every act is safe to repeat: wakes are one per
ask, a scale-in's hibernation is named after the replica's serving period, a teardown of a replica already going
is harmless, and slots bound the creates.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from typing import Any

from chalicelib.admin import replicas as replica_admin
from chalicelib.core import metric_names as mn
from chalicelib.core import replica_statuses as statuses
from chalicelib.core.errors import ApiError, Conflict
from chalicelib.core.observability import COUNT, emit_metrics, logger
from chalicelib.core.scaling_rule import (
    CREATE_BACKOFF_SECONDS,
    Decision,
    Fleet,
    ScalingSettings,
    below_since,
    decide,
    desired_count_unbounded,
)
from chalicelib.provisioning import workflow
from chalicelib.provisioning.idle_check import serving_since
from chalicelib.store import model_load, template_secrets
from chalicelib.store.conditional import update_if
from chalicelib.store.tables import LlmModel, Replica

LEASE_SECONDS = 120  # longer than a run takes; a run that died frees its models after this
REFUSED_PREFIX = "Not hibernated:"  # power.REFUSED_REASON: the flavor cannot hibernate
MISSING = "scaler has no workflows to start: no replica is woken, made or hibernated"


def handle(event: dict[str, Any]) -> dict[str, Any]:
    """The scale function's event: its schedule's (every model), or a nudge's (chalicelib/chat/nudge.py: the one
    model in its `detail`)."""
    model_id = (event.get("detail") or {}).get("model_id")
    return run(only=int(model_id) if model_id is not None else None)


def run(now: float | None = None, only: int | None = None) -> dict[str, Any]:
    """One pass over every autoscaled model (`only`: that one): {model id: its decision as recorded}
    ("missing": no workflows)."""
    now = time.time() if now is None else now
    missing = workflow.missing()
    if missing:
        workflow.say_missing_once(MISSING, missing)
        return {"missing": missing}
    by_model: dict[int, list[Replica]] = defaultdict(list)
    for replica in Replica.listing_index.query("replicas"):
        by_model[int(replica.model_id)].append(replica)
    outcome: dict[str, Any] = {}
    for model in LlmModel.listing_index.query("llm_models"):
        if model.autoscaling is None or model.deleting or only not in (None, int(model.id)):
            continue
        try:
            state = scale(model, by_model.get(int(model.id), []), now)
        except Exception:  # noqa: BLE001 - one model's failure must not stop the others' scaling
            logger.exception("scaling failed", extra={"model_id": int(model.id)})
            continue
        if state is not None:
            outcome[str(model.id)] = state
    return outcome


def scale(model: LlmModel, replicas: list[Replica], now: float) -> dict[str, Any] | None:
    """Decide and act for one model; the state recorded, or None if another run holds the model."""
    if not _take_lease(model, now):
        return None
    try:
        settings = scaling_settings(model.autoscaling.as_dict())
        previous = model.scaling_state.as_dict() if model.scaling_state is not None else {}
        failures = _failures(previous.get("failures") or [], replicas, now)
        fleet = fleet_of(replicas, failed_creates=len(failures))
        load = model_load.per_minute(int(model.id), now)
        # Replicas starting or waking were wanted a moment ago: the time below the need counts from when they serve.
        since = None if fleet.starting or fleet.waking else below_since(previous.get("below_since"), load,
                                                                        fleet.active, settings, now)
        decision = decide(load, fleet, settings, since, now)
        if decision.backing_off:  # say why the creates failed, as the last one did
            decision = replace(decision, reason=f"{decision.reason}; the last: {failures[-1]['reason']}")
        acted: dict[str, list[int]] = {"woken": [], "created": [], "hibernating": [], "deleted": []}
        try:
            _act(model, decision, replicas, settings, now, acted)
        finally:  # what it did, and the failed creates it tore down, are remembered even if an act failed
            state = {"desired": decision.desired, "reason": decision.reason, "decided_at": int(now),
                     "load_requests_per_minute": load, "below_since": since, "failures": failures, **acted}
            recorded = update_if(model, [LlmModel.scaling_state.set(state)],
                                 (LlmModel.id == model.id) & LlmModel.deleting.does_not_exist())
        if recorded:
            _log(model, decision, acted)
            _emit(model, decision, fleet, acted, at_max=desired_count_unbounded(load, settings) > settings.max_replicas)
        return state
    finally:
        update_if(model, [LlmModel.scaler_lease_until.remove()], LlmModel.scaler_lease_until == _lease_end(now))


def scaling_settings(autoscaling: dict[str, Any]) -> ScalingSettings:
    return ScalingSettings(int(autoscaling["min_replicas"]), int(autoscaling["max_replicas"]),
                           int(autoscaling["target_requests_per_minute"]), int(autoscaling["scale_in_after_seconds"]))


def fleet_of(replicas: list[Replica], failed_creates: int = 0) -> Fleet:
    """A model's replicas by where they stand (those failed or going are not counted)."""
    count = {status: sum(1 for replica in replicas if replica.vm_status == status)
             for status in (statuses.WAKING, statuses.HIBERNATING, statuses.HIBERNATED)}
    serving = sum(1 for replica in replicas if statuses.takes_requests(replica.vm_status, replica.endpoint))
    return Fleet(serving=serving, starting=sum(1 for r in replicas if r.vm_status in statuses.IN_PROGRESS),
                 waking=count[statuses.WAKING], hibernating=count[statuses.HIBERNATING],
                 hibernated=count[statuses.HIBERNATED], failed_creates=failed_creates)


def _act(model: LlmModel, decision: Decision, replicas: list[Replica], settings: ScalingSettings,
         now: float, acted: dict[str, list[int]]) -> None:
    """Act on the decision, noting each act in `acted` as it is done."""
    for replica in _failed_autoscaled(replicas):  # its slot freed once its rows go
        _tear_down(replica, acted)
    for replica in sorted((r for r in replicas if r.vm_status == statuses.HIBERNATED), key=_newest_first):
        if len(acted["woken"]) >= decision.wake:
            break
        try:
            replica_admin.wake(int(replica.id))
        except Conflict:
            continue  # a wake is already asked for, or it moved on: not one to count
        acted["woken"].append(int(replica.id))
    if decision.create:
        _create(model, decision.create, replicas, settings, acted["created"])
    if decision.scale_in:
        _scale_in(replicas, acted, settings, now)


def _create(model: LlmModel, count: int, replicas: list[Replica], settings: ScalingSettings,
            created: list[int]) -> None:
    autoscaling = model.autoscaling.as_dict()
    details = {**autoscaling["vm_creation_details"], "secrets": template_secrets.read(int(model.id)) or None}
    by_hand = sum(1 for replica in replicas if replica.scale_slot is None and _claims(replica))
    held = {int(replica.scale_slot) for replica in replicas if replica.scale_slot is not None}
    free = [slot for slot in range(1, settings.max_replicas - by_hand + 1) if slot not in held]
    for slot in free:  # a slot another run took since the replicas were read is refused: the next one is tried
        if len(created) >= count:
            break
        try:
            created.append(replica_admin.create_provisioned(
                model, details, autoscaling.get("rate_limit"), autoscaling.get("hibernate_after_seconds"),
                scale_slot=slot))
        except replica_admin.SlotTaken:
            continue
        except ApiError as error:  # its workflow did not start (its rows were taken back): the next run tries again
            logger.warning("scaler's create not started", extra={"model_id": int(model.id), "why": error.message})
            break


def _scale_in(replicas: list[Replica], acted: dict[str, Any], settings: ScalingSettings, now: float) -> None:
    """One replica out: a serving provisioned one that has served at least scale_in_after_seconds (one just
    woken or made was wanted a moment ago)."""
    settled = now - settings.scale_in_after_seconds
    serving = [replica for replica in replicas
               if replica.vm_status == statuses.SUCCESS and replica_admin.is_provisioned(replica)
               and serving_since(replica) <= settled]
    for replica in sorted(serving, key=lambda r: (r.scale_slot is None, _newest_first(r))):
        cannot_hibernate = (replica.error_message or "").startswith(REFUSED_PREFIX)
        if cannot_hibernate and replica.scale_slot is None:
            continue  # made by hand: hibernated, never deleted, and this one cannot hibernate
        if cannot_hibernate:
            _tear_down(replica, acted)
        else:
            workflow.start_scale_in(int(replica.id), int(serving_since(replica)))
            acted["hibernating"].append(int(replica.id))
        return


def _tear_down(replica: Replica, acted: dict[str, Any]) -> None:
    try:
        replica_admin.delete(int(replica.id))
    except ApiError as error:  # gone meanwhile, or its teardown could not start (marked DELETE_FAILED)
        logger.warning("scaler's teardown not started", extra={"replica_id": int(replica.id), "why": error.message})
        return
    acted["deleted"].append(int(replica.id))


def _failures(previous: list[dict[str, Any]], replicas: list[Replica], now: float) -> list[dict[str, Any]]:
    """Creates that failed within CREATE_BACKOFF_SECONDS: those remembered, and those failed since."""
    known = {int(failure["replica_id"]) for failure in previous}
    failures = [failure for failure in previous if now - float(failure["at"]) < CREATE_BACKOFF_SECONDS]
    for replica in _failed_autoscaled(replicas):
        if int(replica.id) not in known:
            failures.append({"replica_id": int(replica.id), "at": int(now),
                             "reason": replica.error_message or "provisioning failed"})
    return failures


def _failed_autoscaled(replicas: list[Replica]) -> list[Replica]:
    return [replica for replica in replicas if replica.vm_status == statuses.FAILED and replica.scale_slot is not None]


def _claims(replica: Replica) -> bool:
    """Counts against max_replicas: serving, on its way, or hibernated."""
    return replica.vm_status not in (statuses.FAILED, statuses.DELETING, statuses.DELETE_FAILED)


def _newest_first(replica: Replica) -> tuple[int, int]:
    return -int(replica.created_at), -int(replica.id)


def _take_lease(model: LlmModel, now: float) -> bool:
    free = LlmModel.scaler_lease_until.does_not_exist() | (LlmModel.scaler_lease_until < now)
    return update_if(model, [LlmModel.scaler_lease_until.set(_lease_end(now))],
                     (LlmModel.id == model.id) & LlmModel.deleting.does_not_exist() & free)


def _emit(model: LlmModel, decision: Decision, fleet: Fleet, acted: dict[str, Any], at_max: bool) -> None:
    """The model's desired and serving replicas, what this run did, and whether its demand outgrows max_replicas."""
    by_model = [(mn.REPLICAS_DESIRED, COUNT, decision.desired), (mn.REPLICAS_SERVING, COUNT, fleet.serving),
                (mn.SCALE_OUTS, COUNT, len(acted["woken"]) + len(acted["created"])),
                (mn.SCALE_INS, COUNT, len(acted["hibernating"]) + len(acted["deleted"]))]
    emit_metrics({mn.MODEL: model.name}, by_model)
    emit_metrics({}, [(mn.MODELS_AT_MAX_REPLICAS, COUNT, 1 if at_max else 0)])


def _lease_end(now: float) -> int:
    return int(now) + LEASE_SECONDS


def _log(model: LlmModel, decision: Decision, acted: dict[str, Any]) -> None:
    if any(acted.values()):
        logger.info("model scaled", extra={"model_id": int(model.id), "desired": decision.desired,
                                           "reason": decision.reason, "acted": acted})
