"""Replicas: OpenAI-compatible servers behind a model, given by URL or provisioned as a VM.

A replica's endpoint is unique per model. DynamoDB has no unique constraint beside the
primary key, so a guard item (`endpoint#<model id>#<endpoint>` in the bookkeeping table) is
written in the same transaction as the replica, on condition that it does not exist yet.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pynamodb.exceptions import TransactWriteError

from chalicelib.admin.schemas import CREATE_REPLICA, UPDATE_REPLICA
from chalicelib.core import replica_statuses as statuses
from chalicelib.core.clock import iso, now
from chalicelib.core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from chalicelib.core.observability import logger
from chalicelib.core.settings import get_settings
from chalicelib.core.step_functions import ENDED_UNDONE, WorkflowNotDeployed, wake_execution_name
from chalicelib.core.validation import field_error, validate
from chalicelib.provisioning import workflow
from chalicelib.provisioning.cloud_init import FRONT_PORT
from chalicelib.store import replica_secrets
from chalicelib.store.conditional import update_if
from chalicelib.store.lookups import model_by_id
from chalicelib.store.replica_rows import delete_rows, endpoint_guard, slot_guard
from chalicelib.store.sequences import next_id
from chalicelib.store.tables import Bookkeeping, LlmModel, Replica, ReplicaSecurityRule
from chalicelib.store.transactions import failed_conditions, transaction
from chalicelib.store.wake_requests import renew_wake, request_wake

SUCCESS = statuses.SUCCESS
_CHAT_SUFFIX = "/chat/completions"
MIN_KEY_LENGTH_TO_HINT = 16
# A provisioned VM's bearer is fixed when it boots, and spliced into its TLS front's configuration.
_MADE_BY_THE_PROXY = "A provisioned replica's api_key is made by the proxy for its VM; it cannot be set."
_ONLY_PROVISIONED = "Only a provisioned replica (create_vm) can hibernate."
_ASLEEP = (statuses.HIBERNATING, statuses.HIBERNATED)  # the statuses a wake may be asked in
PUBLIC_FIELDS = (
    "id", "model_id", "endpoint", "rate_limit", "vm_status", "vm_id", "error_message",
    "name", "environment_name", "image_name", "flavor_name", "key_name", "port",
    "run_command", "assign_floating_ip", "created_at", "hibernate_after_seconds", "wake_seconds",
)


class SlotTaken(Conflict):
    """Another replica holds the scaling slot a scaler's insert asked for: it tries the next one."""


def describe(replica: Replica) -> dict[str, Any]:
    row = {field: getattr(replica, field) for field in PUBLIC_FIELDS}
    return {**row, "created_at": iso(replica.created_at), "autoscaled": replica.scale_slot is not None}


def describe_row(replica: Replica) -> dict[str, Any]:
    """The raw table view: the public fields, the api_key masked, the secrets by name only."""
    secrets = replica.secret_names or (replica.secrets.as_dict() if replica.secrets is not None else None)
    return {**describe(replica), "api_key": masked_api_key(replica.api_key),
            "secrets": sorted(secrets) if secrets is not None else None, "tls_fingerprint": replica.tls_fingerprint}


def masked_api_key(api_key: str | None) -> str | None:
    """`...abcd`, like a user key; the last 4 only of a key long enough that they give little away."""
    if api_key is None:
        return None
    return "..." + (api_key[-4:] if len(api_key) >= MIN_KEY_LENGTH_TO_HINT else "")


def of_model(model_id: int) -> list[Replica]:
    """The model's replicas, whole (the by_model index holds only what routing reads)."""
    return list(Replica.listing_index.query("replicas", filter_condition=Replica.model_id == model_id))


def list_for_model(model_id: int) -> list[dict[str, Any]]:
    _model_or_404(model_id)
    return [describe(replica) for replica in of_model(model_id)]


def create(model_id: int, body: Any) -> int:
    request = validate(CREATE_REPLICA, body)
    model = _model_or_404(model_id)
    details = request.get("vm_creation_details")
    if not request["create_vm"]:
        if not request.get("endpoint"):
            raise field_error("endpoint", "LLM EndPoint URL must not be empty.")
        if request.get("hibernate_after_seconds"):
            raise field_error("hibernate_after_seconds", _ONLY_PROVISIONED)
        endpoint = normalize_endpoint(request["endpoint"])
        replica = _existing_replica(model, endpoint, request.get("rate_limit"))
        replica.api_key = request.get("api_key")
        _insert(model, replica, [])
        return replica.id
    if details is None:
        raise field_error("vm_creation_details", "VM creation details must be provided when create_vm is True.")
    if request.get("api_key"):
        raise field_error("api_key", _MADE_BY_THE_PROXY)
    check_vm_details(details)
    return create_provisioned(model, details, request.get("rate_limit"), request.get("hibernate_after_seconds"))


def check_vm_details(details: dict[str, Any]) -> None:
    """What create_vm refuses in VM creation details beyond their schema."""
    if details["port"] == FRONT_PORT:
        raise field_error("vm_creation_details", f"Port {FRONT_PORT} is the replica's TLS front on the VM: "
                                                 "choose another port.")
    _check_port_ranges(details.get("security_rules") or [])


def create_provisioned(model: LlmModel, details: dict[str, Any], rate_limit: int | None,
                       hibernate_after_seconds: int | None, scale_slot: int | None = None) -> int:
    """Insert a replica whose VM the provisioning workflow makes, and start that workflow; its id. A scaler's
    (`scale_slot`) holds that slot of its model in the insert (SlotTaken if another holds it)."""
    workflow.require_configured()
    replica, rules = _provisioned_replica(model, rate_limit, details)
    replica.hibernate_after_seconds = hibernate_after_seconds
    replica.scale_slot = scale_slot
    _insert(model, replica, rules, details.get("secrets") or None)
    _start_provisioning(replica)
    return replica.id


def update(replica_id: int, body: Any) -> None:
    """Set the fields given (null clears one); those not given stay as they are."""
    request = validate(UPDATE_REPLICA, body)
    replica = _replica_or_404(replica_id)
    if "api_key" in request and is_provisioned(replica):
        raise field_error("api_key", _MADE_BY_THE_PROXY)
    if request.get("hibernate_after_seconds") and not is_provisioned(replica):
        raise field_error("hibernate_after_seconds", _not_provisioned(replica_id, "hibernate"))
    attributes = {"rate_limit": Replica.rate_limit, "api_key": Replica.api_key,
                  "hibernate_after_seconds": Replica.hibernate_after_seconds}
    actions = [attributes[name].set(value) if value else attributes[name].remove() for name, value in request.items()]
    if not update_if(replica, actions, Replica.id.exists()):  # it went away between the read and the write
        raise NotFound("Replica not found")


def delete(replica_id: int) -> None:
    """A replica given by URL goes at once; a provisioned one goes when its VM is gone.

    A provisioned replica already DELETING or DELETE_FAILED gets a new teardown: teardowns are
    idempotent, so a second one running beside a slow first one does no harm.
    """
    replica = _replica_or_404(replica_id)
    if is_provisioned(replica):
        _start_teardown(replica)
    else:
        delete_rows([replica])


def hibernate(replica_id: int) -> None:
    """Hibernate a serving provisioned replica now, idle or not (its workflow checks it is SUCCESS)."""
    replica = _replica_or_404(replica_id)
    if not is_provisioned(replica):
        raise Conflict(_not_provisioned(replica_id, "hibernate"))
    if replica.vm_status != statuses.SUCCESS:
        raise Conflict(f"Replica {replica_id} is {replica.vm_status}, not SUCCESS: only a serving replica can "
                       "hibernate.")
    workflow.start_hibernate(replica_id, None)


def wake(replica_id: int) -> None:
    """Wake a hibernated (or hibernating) replica: one wake however many ask (a conditional write), and a wake
    asked before whose execution failed is started again (no dead end)."""
    replica = _replica_or_404(replica_id)
    if (asleep := _cannot_wake(replica)) is not None:
        raise Conflict(asleep)
    requested_at = request_wake(replica_id, time.time_ns() // 1_000_000)
    if requested_at is not None:
        workflow.start_wake(replica_id, requested_at)
        return
    # Asked before: while that ask's wake runs (or woke it), a 409. One that never started is started; one
    # whose execution failed is asked anew and started (an execution's name stays taken for 90 days).
    replica = _replica_or_404(replica_id)
    asked = replica.wake_requested_at
    status = workflow.wake_status(replica_id, int(asked)) if asked is not None else None
    if asked is not None and status is None:
        workflow.start_wake(replica_id, int(asked))
        return
    if asked is None or status not in ENDED_UNDONE:
        raise Conflict(_wake_refused(replica, status))
    renewed = renew_wake(replica_id, int(asked), time.time_ns() // 1_000_000)
    if renewed is None:  # renewed by another caller, or it woke meanwhile: read again to say which
        raise Conflict(_wake_refused(_replica_or_404(replica_id)))
    workflow.start_wake(replica_id, renewed)


def _not_provisioned(replica_id: int, action: str) -> str:
    return (f"Replica {replica_id} was registered by URL, with no VM: only a provisioned replica (create_vm) can "
            f"{action}.")


def _cannot_wake(replica: Replica) -> str | None:
    """Why the replica's status keeps it from being asked to wake; None if it may be."""
    if not is_provisioned(replica):
        return _not_provisioned(replica.id, "wake")
    if replica.vm_status == statuses.WAKING:
        return f"Replica {replica.id} is already waking (WAKING)."
    if replica.vm_status not in _ASLEEP:
        return (f"Replica {replica.id} is {replica.vm_status}, not {' or '.join(_ASLEEP)}: only a hibernated "
                "replica can wake.")
    return None


def _wake_refused(replica: Replica, execution_status: str | None = None) -> str:
    """Why a wake was not started, from the replica read after its conditional write failed: it moved on out of
    hibernation, or a wake is asked already (its execution named after the ask, to look up)."""
    if (moved_on := _cannot_wake(replica)) is not None:
        return moved_on
    if replica.wake_requested_at is None:  # the ask was cleared meanwhile: it woke, or is about to
        return f"Replica {replica.id} is no longer hibernated."
    execution = wake_execution_name(replica.id, int(replica.wake_requested_at))
    return (f"Replica {replica.id} is already waking: its wake execution {execution} is "
            f"{execution_status or 'starting'}.")


def delete_all(model: LlmModel) -> None:
    """The model and its replicas: rows at once, provisioned ones once their VMs are gone.

    The race: a replica inserted while the model is being deleted would be left with no model,
    its VM still being made. So the model is marked `deleting` first (an insert checks the mark
    is absent, in its transaction), and only then are its replicas read, with a consistent scan
    of the base table: the `by_model` index is eventually consistent and could miss one just
    added. The replicas table holds an admin's handful of rows, so the scan is cheap.
    """
    if not update_if(model, [LlmModel.deleting.set(True)], LlmModel.id == model.id):
        raise NotFound("Model not found")
    replicas = list(Replica.scan(Replica.model_id == model.id, consistent_read=True))
    for replica in replicas:
        if is_provisioned(replica):
            _start_teardown(replica)
    delete_rows([replica for replica in replicas if not is_provisioned(replica)], model=model)


def is_provisioned(replica: Replica) -> bool:
    """Created with `create_vm`: a VM may exist for it, so its rows go only after the VM."""
    return replica.name is not None


def normalize_endpoint(raw: str) -> str:
    """One form for an endpoint: the OpenAI base URL, e.g. `http://host:8000/v1`."""
    raw = raw.strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise field_error("endpoint", "Not a valid URL: it must start with http:// or https://.")
    if not parts.hostname:
        raise field_error("endpoint", "Not a valid URL: it names no host.")
    if parts.query or parts.fragment:
        raise field_error("endpoint", "Not a valid URL: an endpoint has no query (?) or fragment (#).")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise field_error("endpoint", "Not a valid URL: its port must be a number from 0 to 65535.") from None
    path = parts.path.rstrip("/")
    if path.endswith(_CHAT_SUFFIX):
        path = path[: -len(_CHAT_SUFFIX)]
    return urlunsplit((parts.scheme, parts.netloc.lower(), path or "/v1", "", ""))


def _existing_replica(model: LlmModel, endpoint: str, rate_limit: int | None) -> Replica:
    return Replica(
        next_id("replicas"), model_id=model.id, endpoint=endpoint, rate_limit=rate_limit,
        vm_status=statuses.SUCCESS, created_at=now(),
    )


def _provisioned_replica(
    model: LlmModel, rate_limit: int | None, details: dict[str, Any]
) -> tuple[Replica, list[ReplicaSecurityRule]]:
    replica = Replica(
        next_id("replicas"), model_id=model.id, rate_limit=rate_limit, vm_status=statuses.PENDING, created_at=now(),
        name=details["name"], environment_name=details["environment_name"], image_name=details["image_name"],
        flavor_name=details["flavor_name"], key_name=details["key_name"], port=details["port"],
        run_command=details["run_command"], assign_floating_ip=details["assign_floating_ip"],
        secret_names=sorted(details.get("secrets") or {}) or None,
    )
    only_the_port = {"direction": "ingress", "protocol": "tcp", "ethertype": "IPv4"}
    only_the_port |= {"port_range_min": details["port"], "port_range_max": details["port"]}
    rule_requests = details.get("security_rules") or [only_the_port]
    rules = [_security_rule(replica.id, rule) for rule in rule_requests]
    return replica, rules


def _check_port_ranges(rules: list[dict[str, Any]]) -> None:
    errors = {
        str(index): {"port_range_min": ["port_range_min must be less than or equal to port_range_max."]}
        for index, rule in enumerate(rules)
        if rule["port_range_min"] > rule["port_range_max"]
    }
    if errors:
        raise ValidationFailed({"vm_creation_details": {"security_rules": errors}})


def _security_rule(replica_id: int, rule: dict[str, Any]) -> ReplicaSecurityRule:
    return ReplicaSecurityRule(
        replica_id, next_id("replica_security_rules"),
        direction=rule["direction"], protocol=rule["protocol"], ethertype=rule["ethertype"],
        remote_ip_prefix=rule.get("remote_ip_prefix") or get_settings().replica_ingress_cidr,
        port_range_min=rule["port_range_min"], port_range_max=rule["port_range_max"],
    )


def _insert(model: LlmModel, replica: Replica, rules: list[ReplicaSecurityRule],
            secrets: dict[str, str] | None = None) -> None:
    try:
        with transaction() as tx:
            tx.condition_check(LlmModel, model.name,
                               condition=(LlmModel.id == model.id) & LlmModel.deleting.does_not_exist())
            if replica.endpoint:
                tx.save(Bookkeeping(endpoint_guard(replica)), condition=Bookkeeping.pk.does_not_exist())
            elif replica.scale_slot is not None:
                tx.save(Bookkeeping(slot_guard(replica)), condition=Bookkeeping.pk.does_not_exist())
            tx.save(replica, condition=Replica.id.does_not_exist())
            for rule in rules:
                tx.save(rule)
            if secrets:  # kept apart from the row, for the create step alone (store.replica_secrets)
                tx.save(replica_secrets.item(replica.id, secrets))
    except TransactWriteError as error:
        failed = failed_conditions(error)
        if 0 in failed:
            raise NotFound(_why_model_refused(model)) from None
        if replica.endpoint and 1 in failed:  # the form the guard holds, which the request may not have had
            raise Conflict(f"Endpoint already exists: model {model.id} has a replica at {replica.endpoint} "
                           "already.") from None
        if replica.scale_slot is not None and 1 in failed:
            raise SlotTaken(f"Model {model.id}'s scaling slot {replica.scale_slot} is held.") from None
        raise


def _why_model_refused(model: LlmModel) -> str:
    """The model's condition failed in the insert's transaction: deleted, or being deleted (delete_all)."""
    try:
        deleting = LlmModel.get(model.name, consistent_read=True).deleting
    except LlmModel.DoesNotExist:
        return "Model not found"
    return f"Model {model.id} is being deleted: no replica can be added to it." if deleting else "Model not found"


def _start_provisioning(replica: Replica) -> None:
    try:
        execution_arn = workflow.start("create", replica.id)
    except Exception as error:
        delete_rows([replica])  # nothing was asked of Hyperstack yet: the request leaves no trace
        logger.exception("provisioning workflow did not start", extra={"replica_id": replica.id})
        reason = f" {error.message}" if isinstance(error, WorkflowNotDeployed) else ""
        raise ServiceUnavailable(f"The provisioning workflow could not start; nothing was created.{reason}") from None
    # Only onto a row still there: a DELETE may already have torn it down, and an unconditional
    # update would bring back a partial row that nothing owns.
    update_if(replica, [Replica.execution_arn.set(execution_arn)], Replica.id.exists())


def _start_teardown(replica: Replica) -> None:
    # DELETING is final for the workflow (no step moves a replica out of it), so once it is written
    # every later step of a create execution compensates instead of going on.
    marked = [Replica.vm_status.set(statuses.DELETING), Replica.error_message.remove(),
              Replica.teardown_started_at.set(int(time.time()))]  # the idle check's clock for a lost teardown
    if not update_if(replica, marked, Replica.id.exists()):
        return  # torn down meanwhile
    try:
        workflow.start("delete", replica.id)
    except Exception as error:  # visible as DELETE_FAILED, never silently dropped
        failed = [Replica.vm_status.set(statuses.DELETE_FAILED),
                  Replica.error_message.set(f"The teardown workflow could not start: {error}")]
        update_if(replica, failed, Replica.id.exists())
        raise ServiceUnavailable("The teardown could not start; the replica is marked DELETE_FAILED.") from None


def _model_or_404(model_id: int) -> LlmModel:
    model = model_by_id(model_id)
    if model is None:
        raise NotFound("Model not found")
    return model


def _replica_or_404(replica_id: int) -> Replica:
    try:
        return Replica.get(replica_id, consistent_read=True)
    except Replica.DoesNotExist:
        raise NotFound("Replica not found") from None
