"""Retrying a FAILED provisioned replica: its way out without a DELETE.

A replica fails when Hyperstack refuses its VM, the VM goes to ERROR or vanishes, or its model never answers;
its VM is then deleted and its `error_message` says why. Once the cause is fixed (capacity back, a corrected
image), `POST /v1/replicas/{id}/retry` provisions it again under the same id, with the details it was created
with: one conditional write moves it FAILED -> PENDING (so two retries start one), clearing what its failed
attempt left, and a create execution named after the attempt starts. Its secrets were forgotten with its failed
VM, so a replica that had any is retried only with them given again. A VM of the failed attempt that its
compensation could not delete is deleted by the create step before it makes a new one (it would hold old
credentials): see provisioning.tasks.create_vm.
"""

from __future__ import annotations

import time
from typing import Any

from pynamodb.exceptions import TransactWriteError

from chalicelib.admin.schemas import RETRY_REPLICA
from chalicelib.core import replica_statuses as statuses
from chalicelib.core.errors import Conflict, NotFound, ServiceUnavailable
from chalicelib.core.observability import logger
from chalicelib.core.validation import field_error, validate
from chalicelib.provisioning import workflow
from chalicelib.store import replica_secrets
from chalicelib.store.conditional import update_if
from chalicelib.store.tables import Replica
from chalicelib.store.transactions import failed_conditions, transaction

# What a failed attempt leaves on the row that the next one must not inherit: its VM, its credentials' pin and
# bearer, where it served, its hibernation, the execution that moved it last.
_LEFT_BY_THE_ATTEMPT = (Replica.error_message, Replica.vm_id, Replica.endpoint, Replica.api_key,
                        Replica.tls_fingerprint, Replica.serving_since, Replica.last_used_minute,
                        Replica.hibernated_at, Replica.wake_requested_at, Replica.wake_started_at,
                        Replica.moved_by, Replica.execution_arn)


def retry(replica_id: int, body: Any) -> None:
    """Provision the FAILED replica again; 409 if it is not a FAILED replica of the admin's own making."""
    request = validate(RETRY_REPLICA, body)
    try:
        replica = Replica.get(replica_id, consistent_read=True)
    except Replica.DoesNotExist:
        raise NotFound("Replica not found") from None
    why_not = _cannot_retry(replica)
    if why_not:
        raise Conflict(why_not)
    secrets = request.get("secrets") or {}
    missing = sorted(set(replica.secret_names or []) - set(secrets))
    if missing:
        raise field_error("secrets", f"Replica {replica.id}'s secrets are not kept once its create failed: give "
                                     f"{', '.join(missing)} again.")
    workflow.require_configured()
    attempt = int(replica.retries or 0) + 1
    _mark_pending(replica, attempt, secrets)
    try:
        execution_arn = workflow.start("create", int(replica.id), attempt=attempt)
    except Exception as error:
        logger.exception("retried provisioning did not start", extra={"replica_id": int(replica.id)})
        reason = f"The provisioning workflow could not start: {getattr(error, 'message', error)}"
        update_if(Replica(int(replica.id)), [Replica.vm_status.set(statuses.FAILED), Replica.error_message.set(
            reason)], Replica.vm_status == statuses.PENDING)
        replica_secrets.forget(int(replica.id))
        raise ServiceUnavailable(f"{reason} The replica stays FAILED.") from None
    update_if(Replica(int(replica.id)), [Replica.execution_arn.set(execution_arn)], Replica.id.exists())


def _cannot_retry(replica: Replica) -> str | None:
    if replica.name is None:
        return f"Replica {replica.id} was registered by URL, with no VM: only a provisioned replica can be retried."
    if replica.scale_slot is not None:
        return (f"Replica {replica.id} was made by the model's scaler, which deletes its failed replicas and "
                "makes new ones itself.")
    if replica.vm_status != statuses.FAILED:
        return f"Replica {replica.id} is {replica.vm_status}, not FAILED: only a failed replica can be retried."
    return None


def _mark_pending(replica: Replica, attempt: int, secrets: dict[str, str]) -> None:
    """FAILED -> PENDING with the attempt's number and time, and the secrets for its create step, all or none."""
    actions = [Replica.vm_status.set(statuses.PENDING), Replica.retries.set(attempt),
               Replica.retried_at.set(time.time()), *(attribute.remove() for attribute in _LEFT_BY_THE_ATTEMPT)]
    if secrets:
        actions.append(Replica.secret_names.set(sorted(secrets)))
    same_attempt = (Replica.retries == replica.retries if replica.retries is not None
                    else Replica.retries.does_not_exist())  # two retries of one failure: the second is refused
    try:
        with transaction() as tx:
            tx.update(Replica(int(replica.id)), actions=actions,
                      condition=(Replica.vm_status == statuses.FAILED) & same_attempt)
            if secrets:
                tx.save(replica_secrets.item(int(replica.id), secrets))
    except TransactWriteError as error:
        if not failed_conditions(error):
            raise
        try:
            current = Replica.get(int(replica.id), consistent_read=True)
        except Replica.DoesNotExist:
            raise NotFound("Replica not found") from None
        raise Conflict(f"Replica {replica.id} is {current.vm_status} now: it was retried or deleted "
                       "meanwhile.") from None
