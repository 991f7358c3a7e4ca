"""The backstop: a scheduled sweep that holds "no VM outlives its replica" without trusting the workflow.

It lists this deployment's VMs (by the name prefix of chalicelib/core/vm_naming.py; other deployments' VMs
never match) and

- deletes a VM that no replica owns once it is older than the grace period. A replica owns its VM while
  its row is being provisioned (PENDING, CREATING_VM, BOOTING: the workflow may not have recorded the
  VM id yet, and its own compensation deletes what it made), or is SUCCESS (or hibernating, hibernated,
  waking) with that VM's id. A VM
  whose row is gone, FAILED, DELETING or DELETE_FAILED, or a second VM beside a SUCCESS replica's, is
  unowned. The grace period (longer than a create call) spares a VM whose create answer is still on
  its way; a VM of unknown age is spared too.
- marks a SUCCESS or HIBERNATED replica FAILED, with the reason, when its VM is gone or in ERROR: routing then
  stops sending it requests, and no request waits for a wake that cannot succeed (an autoscaled model's scaler
  then makes another). The write holds only if the row is still in that status with that VM.

Each action is one structured log line; a sweep that deleted VMs counts them in the VMS_DELETED_BY_BACKSTOP
metric. A failure on one VM is logged and the sweep goes on: the next run retries it (Hyperstack answers
409 to deleting a VM that is still building).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.core import replica_statuses as statuses
from chalicelib.core.metric_names import VMS_DELETED_BY_BACKSTOP
from chalicelib.core.observability import COUNT, emit_metrics, logger
from chalicelib.core.settings import get_provision_settings
from chalicelib.core.vm_naming import deployment_prefix, replica_id_of
from chalicelib.store.conditional import update_if
from chalicelib.store.deployment import deployment_id
from chalicelib.store.tables import Replica

# Rows whose workflow may hold a VM it has not recorded yet.
_PROVISIONING = frozenset(statuses.IN_PROGRESS)
_BROKEN_VM_STATUSES = frozenset({"ERROR", "FAILED"})
_SETTLED = frozenset({statuses.SUCCESS, statuses.HIBERNATED})  # replicas whose VM no workflow is moving
VANISHED_REASON = "The replica's VM {vm_id} vanished from Hyperstack (found by the reconciler)."
BROKEN_REASON = "The replica's VM {vm_id} is in {status} on Hyperstack (found by the reconciler)."


@dataclass
class Summary:
    deployment: str
    vms_seen: int = 0
    deleted_vms: list[int] = field(default_factory=list)
    failed_replicas: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "vms_seen": self.vms_seen, "deleted_vms": self.deleted_vms,
                "failed_replicas": self.failed_replicas, "errors": self.errors}


def hyperstack_client() -> Any:
    from chalicelib.hyperstack import configured_client

    client = configured_client()
    if client is None:
        raise RuntimeError("No Hyperstack API key is configured (HYPERSTACK_API_KEY).")
    return client


def reconcile(client: Any, now: datetime, grace_seconds: float | None = None,
              deployment: str | None = None) -> Summary:
    """One sweep at `now` (aware); `client` has HyperstackClient's methods."""
    from chalicelib.hyperstack.client import HyperstackError

    deployment = deployment or deployment_id()
    grace = get_provision_settings().reconcile_grace_seconds if grace_seconds is None else grace_seconds
    summary = Summary(deployment)
    vms = client.find_vms_by_prefix(deployment_prefix(deployment))
    summary.vms_seen = len(vms)
    for vm in vms:
        _guarded(summary, HyperstackError, lambda vm=vm: _sweep_vm(client, vm, now, grace, summary))
    listed = {vm.id: vm for vm in vms}
    for replica in _replicas_holding_a_vm():
        _guarded(summary, HyperstackError, lambda replica=replica: _check_vm_of(client, replica, listed, summary))
    if summary.deleted_vms:  # a sweep that deleted nothing says nothing (every 5 s under `make run`)
        emit_metrics({}, [(VMS_DELETED_BY_BACKSTOP, COUNT, len(summary.deleted_vms))])
    return summary


def _sweep_vm(client: Any, vm: Any, now: datetime, grace: float, summary: Summary) -> None:
    replica_id = replica_id_of(vm.name, summary.deployment)
    if replica_id is None:
        return  # the search matched a name that is not one of ours
    row = _row(replica_id)
    if _owns(row, vm.id):
        return
    age = (now - vm.created_at).total_seconds() if vm.created_at is not None else None
    if age is None or age < grace:
        return
    client.delete_vm(vm.id)
    summary.deleted_vms.append(vm.id)
    logger.info("reconciler deleted vm", extra={
        "deployment": summary.deployment, "vm_id": vm.id, "vm_name": vm.name, "vm_status": vm.status,
        "replica_id": replica_id, "replica_status": row.vm_status if row else None,
        "age_seconds": round(age), "reason": "no replica owns it"})


def _owns(row: Replica | None, vm_id: int) -> bool:
    if row is None:
        return False
    if row.vm_status in _PROVISIONING:
        return True
    # Serving, or dormant (hibernating, hibernated, waking): the VM is the one recorded.
    return row.vm_status in statuses.HOLDING_VM and row.vm_id is not None and int(row.vm_id) == int(vm_id)


def _check_vm_of(client: Any, replica: Replica, listed: dict[int, Any], summary: Summary) -> None:
    vm_id = int(replica.vm_id)
    vm = listed.get(vm_id)
    if vm is None:
        vm = client.get_vm(vm_id)  # not in the listing: confirm by id before failing the replica
    if vm is not None and vm.status not in _BROKEN_VM_STATUSES:
        return
    reason = (VANISHED_REASON.format(vm_id=vm_id) if vm is None
              else BROKEN_REASON.format(vm_id=vm_id, status=vm.status))
    marked = update_if(Replica(replica.id),
                       [Replica.vm_status.set(statuses.FAILED), Replica.error_message.set(reason)],
                       (Replica.vm_status == replica.vm_status) & (Replica.vm_id == vm_id))
    if not marked:
        return  # it moved on meanwhile (deleted, or re-provisioned): not ours to fail
    summary.failed_replicas.append(int(replica.id))
    logger.info("reconciler marked replica failed", extra={
        "deployment": summary.deployment, "replica_id": int(replica.id), "vm_id": vm_id,
        "vm_status": vm.status if vm else None, "reason": reason})


def _replicas_holding_a_vm() -> list[Replica]:
    """SUCCESS and HIBERNATED replicas with a VM (replicas given by URL have none); the ones on their way
    (hibernating, waking) are their workflow's to check. The index may lag; the write checks."""
    return [replica for replica in Replica.listing_index.query("replicas")
            if replica.vm_status in _SETTLED and replica.vm_id is not None]


def _row(replica_id: int) -> Replica | None:
    try:
        return Replica.get(replica_id, consistent_read=True)
    except Replica.DoesNotExist:
        return None


def _guarded(summary: Summary, expected: type[Exception], action: Callable[[], None]) -> None:
    try:
        action()
    except expected as error:
        summary.errors.append(str(error))
        logger.warning("reconciler action failed", extra={"deployment": summary.deployment, "error": str(error)})


def run() -> Summary:
    """One scheduled sweep, now, with the configured client and grace period."""
    return reconcile(hyperstack_client(), datetime.now(UTC))
