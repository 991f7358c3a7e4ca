"""A model's autoscaling settings: set, read with the scaler's state, and stopped (issue #23).

The settings live on the model's row (`autoscaling`), the template's secrets apart (store.template_secrets,
write-only: the views show their names). Setting them replaces them whole, as a PUT does, and forgets the
scaler's memory of failed creates: a new template is tried afresh. Stopping autoscaling leaves the replicas as
they are; the scaler's replicas stay marked `autoscaled` and go as any other replica does.
"""

from __future__ import annotations

import time
from typing import Any

from pynamodb.exceptions import TransactWriteError

from chalicelib.admin import replicas, scaler
from chalicelib.admin.schemas import AUTOSCALING
from chalicelib.core.clock import iso
from chalicelib.core.errors import NotFound, ValidationFailed
from chalicelib.core.validation import validate
from chalicelib.store import model_load, template_secrets
from chalicelib.store.lookups import model_by_id
from chalicelib.store.tables import Bookkeeping, LlmModel
from chalicelib.store.transactions import failed_conditions, transaction

SETTINGS = ("min_replicas", "max_replicas", "target_requests_per_minute", "scale_in_after_seconds",
            "hibernate_after_seconds", "rate_limit")


def put(model_id: int, body: Any) -> dict[str, Any]:
    request = validate(AUTOSCALING, body)
    errors: dict[str, list[str]] = {}
    if request["min_replicas"] > request["max_replicas"]:
        errors["min_replicas"] = [f"min_replicas ({request['min_replicas']}) must not be above max_replicas "
                                  f"({request['max_replicas']})."]
    details = request["vm_creation_details"]
    try:
        replicas.check_vm_details(details)
    except ValidationFailed as refused:
        errors.update(refused.errors)
    if errors:
        raise ValidationFailed(errors)
    model = _model_or_404(model_id)
    secrets = details.pop("secrets", None) or {}
    settings = {name: request[name] for name in SETTINGS if request.get(name) is not None}
    settings |= {"vm_creation_details": details, "secret_names": sorted(secrets), "updated_at": int(time.time())}
    _write(model, [LlmModel.autoscaling.set(settings), LlmModel.scaling_state.remove()],
           template_secrets.item(model.id, secrets) if secrets else None)
    return describe(LlmModel.get(model.name, consistent_read=True))


def get(model_id: int) -> dict[str, Any]:
    model = _model_or_404(model_id)
    if model.autoscaling is None:
        raise NotFound(f"Model {model_id} has no autoscaling.")
    return describe(model)


def delete(model_id: int) -> None:
    """Stop autoscaling (none set: nothing to do); the replicas stay as they are."""
    model = _model_or_404(model_id)
    _write(model, [LlmModel.autoscaling.remove(), LlmModel.scaling_state.remove()], None)
    model_load.forget(int(model.id))


def describe(model: LlmModel) -> dict[str, Any]:
    settings = model.autoscaling.as_dict()
    fleet = scaler.fleet_of(replicas.of_model(int(model.id)))
    state = model.scaling_state.as_dict() if model.scaling_state is not None else {}
    failures = state.get("failures") or []
    return {
        "model_id": int(model.id),
        **{name: settings.get(name) for name in SETTINGS},
        "vm_creation_details": {**settings["vm_creation_details"], "secrets": settings.get("secret_names") or []},
        "updated_at": iso(int(settings["updated_at"])),
        "state": {
            "desired_replicas": _int(state.get("desired")),
            "reason": state.get("reason") or "not decided yet: the scaler has not run since the settings were set",
            "decided_at": iso(_int(state.get("decided_at"))),
            "load_requests_per_minute": state.get("load_requests_per_minute"),
            "serving": fleet.serving, "starting": fleet.starting, "waking": fleet.waking,
            "hibernating": fleet.hibernating, "hibernated": fleet.hibernated,
            "failed_creates": [{"replica_id": int(f["replica_id"]), "at": iso(int(f["at"])), "reason": f["reason"]}
                               for f in failures],
        },
    }


def _write(model: LlmModel, actions: list[Any], secrets: Bookkeeping | None) -> None:
    """The model's settings and its template's secrets together, or neither; never on a model being deleted."""
    try:
        with transaction() as tx:
            tx.update(model, actions=actions, condition=(LlmModel.id == model.id) & LlmModel.deleting.does_not_exist())
            if secrets is not None:
                tx.save(secrets)
            else:
                tx.delete(Bookkeeping(template_secrets.key(int(model.id))))
    except TransactWriteError as error:
        if failed_conditions(error):  # the model's is the one condition
            raise NotFound(f"Model not found: model {model.id} was deleted, or is being deleted.") from None
        raise


def _model_or_404(model_id: int) -> LlmModel:
    model = model_by_id(model_id)
    if model is None:
        raise NotFound("Model not found")
    return model


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None
