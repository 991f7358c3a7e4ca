"""The Task steps of the provisioning workflow (infra/provisioning.asl.json), one Lambda for all
(the hibernate and wake workflows' steps are in chalicelib/provisioning/power.py, dispatched here too).

Each step is idempotent, since Step Functions retries them, and may deliver a step whose invocation ran
(its answer lost): a VM is found by its deterministic name before one is created, a VM that is already
gone counts as deleted, and a step that moves the replica's status and finds it already moved there by
its own execution (`moved_by`, step_helpers.live and advance) ends as if it had made the move. Exceptions end a
step; their class names are the error names the workflow's Retry and Catch rules match:
`HyperstackRetryable` and `StoreRetryable` (DynamoDB or Step Functions throttled or failing) are retried
with backoff, `ProvisioningFailed` and `ReplicaGone` lead to compensation (delete the VM, then mark the
replica FAILED unless it is being deleted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chalicelib.core import replica_statuses as statuses
from chalicelib.core.vm_naming import deployment_label, replica_vm_name
from chalicelib.provisioning import outcomes, power, replica_tls
from chalicelib.provisioning.cloud_init import user_data
from chalicelib.provisioning.errors import HyperstackRetryable, ProvisioningFailed, ReplicaGone, StoreRetryable
from chalicelib.provisioning.replica_store import (
    delete_rows,
    find,
    mark,
    model_name_of,
    security_rules_of,
)
from chalicelib.provisioning.replica_tls import ReplicaCredentials
from chalicelib.provisioning.step_helpers import (
    Hyperstack,
    advance,
    call,
    configured_hyperstack,
    endpoint,
    failure_reason,
    live,
    model_poll,
    vm_poll,
)
from chalicelib.store import replica_secrets
from chalicelib.store.conditional import update_if
from chalicelib.store.deployment import deployment_id
from chalicelib.store.tables import Replica
from chalicelib.store.transient import is_transient

# Compensation may end these: provisioning, and a hibernation or a wake that lost its VM.
_MAY_FAIL = (*statuses.IN_PROGRESS, statuses.HIBERNATING, statuses.WAKING)


def vm_name(replica_id: int) -> str:
    """The replica's VM name in this deployment: only such VMs are adopted, deleted or counted."""
    return replica_vm_name(deployment_id(), replica_id)


def handle(event: dict[str, Any], hyperstack: Hyperstack = configured_hyperstack) -> dict[str, Any]:
    """Run the event's step; `hyperstack` builds the client of the steps that call Hyperstack. A step that ends
    its workflow is counted once it has returned (chalicelib.provisioning.outcomes)."""
    name = event.get("step", "")
    if name not in STEPS_WITH_HYPERSTACK and name not in STEPS_WITHOUT_HYPERSTACK:
        raise ProvisioningFailed(f"Unknown workflow step {event.get('step')!r}.")
    try:
        if name in STEPS_WITH_HYPERSTACK:
            result = STEPS_WITH_HYPERSTACK[name](event, hyperstack)
        else:
            result = STEPS_WITHOUT_HYPERSTACK[name](event)
    except Exception as error:
        if is_transient(error):  # DynamoDB or Step Functions throttled or failed: retried, never compensated
            raise StoreRetryable(f"{type(error).__name__}: {error}") from None
        raise
    outcomes.record(name, event, result)
    return result


def start_create(event: dict[str, Any]) -> dict[str, Any]:
    """PENDING -> CREATING_VM. Run by a create execution the idle check started for a replica whose first one
    ended undone, it takes the replica over where that one left it (a VM may be made, or booting)."""
    replica = live(event, allowed=(statuses.PENDING, statuses.CREATING_VM), done=(statuses.BOOTING,), take_over=True)
    if replica.vm_status != statuses.BOOTING:
        advance(event, statuses.CREATING_VM, allowed=(statuses.PENDING, statuses.CREATING_VM))
    return {}


def create_vm(event: dict[str, Any], hyperstack: Hyperstack = configured_hyperstack) -> dict[str, Any]:
    """Make the replica's VM, or adopt the one an earlier attempt made, and record it with its credentials."""
    replica = live(event, allowed=(statuses.CREATING_VM,), done=(statuses.BOOTING,))
    if replica.vm_id is not None:  # recorded by an attempt whose answer was lost; its credentials are gone
        return {"vm_id": int(replica.vm_id)}
    name = vm_name(int(replica.id))
    credentials = replica_tls.credentials_for(int(replica.id), name)
    client = hyperstack()
    if replica.retried_at is not None:
        _delete_vms_from_before(client, name, float(replica.retried_at))
    vm = call(lambda: client.find_vm_by_name(name) or client.create_vm(_spec(replica, credentials)))
    try:
        # The row loses any secrets it held itself (a replica made before they moved): the VM has them now.
        advance(event, statuses.CREATING_VM, allowed=(statuses.CREATING_VM,), vm_id=vm.id,
                api_key=credentials.api_key, tls_fingerprint=credentials.fingerprint, secrets=None)
    except ReplicaGone:
        # The race: the replica was deleted (row gone or DELETING) while the create call was in flight.
        # Nobody else knows this VM yet, so this step deletes it. A refusal (409 while it builds) is
        # left to the compensation that ReplicaGone leads to, which retries for minutes.
        try:
            call(lambda: client.delete_vm(vm.id), conflict_is_retryable=True)
        except (HyperstackRetryable, ProvisioningFailed):
            pass
        raise
    replica_tls.forget(int(replica.id))  # the VM holds the private key now; the replica, the pin
    replica_secrets.forget(int(replica.id))  # and the secrets: nothing else needs them
    return {"vm_id": vm.id}


def _delete_vms_from_before(client: Any, name: str, retried_at: float) -> None:
    """A retried replica's VMs made before the retry: its failed attempt's, which that attempt's compensation could
    not delete. Adopted, one would hold the old attempt's credentials; so they are deleted, and the step is retried
    (HyperstackRetryable) until Hyperstack lists none. A second of slack: Hyperstack's times may be truncated."""
    older = [vm for vm in call(lambda: client.find_vms_by_name(name))
             if vm.created_at is not None and vm.created_at.timestamp() < retried_at - 1]
    for vm in older:
        call(lambda vm=vm: client.delete_vm(vm.id), conflict_is_retryable=True)
    if older:
        raise HyperstackRetryable(f"VM {', '.join(str(vm.id) for vm in older)} of the attempt before the retry is "
                                  "being deleted first.")


def check_vm(event: dict[str, Any], hyperstack: Hyperstack = configured_hyperstack) -> dict[str, Any]:
    live(event, allowed=(statuses.CREATING_VM,), done=(statuses.BOOTING,))
    client = hyperstack()
    checked = vm_poll(call(lambda: client.get_vm(event["vm_id"])), event, waiting="CREATING", doing="created")
    if checked["status"] == "ACTIVE":
        advance(event, statuses.BOOTING, allowed=(statuses.CREATING_VM,))
    return checked


def check_model(event: dict[str, Any]) -> dict[str, Any]:
    return model_poll(event, allowed=(statuses.BOOTING,))


def mark_ready(event: dict[str, Any]) -> dict[str, Any]:
    replica = live(event, allowed=(statuses.BOOTING,), done=(statuses.SUCCESS,))
    advance(event, statuses.SUCCESS, allowed=(statuses.BOOTING,), endpoint=endpoint(event["floating_ip"], replica),
            error_message=None, serving_since=int(time.time()))
    return outcomes.repeated(replica.vm_status == statuses.SUCCESS)


def delete_vm(event: dict[str, Any], hyperstack: Hyperstack = configured_hyperstack) -> dict[str, Any]:
    _delete_vm(hyperstack(), int(event["replica_id"]), event.get("vm_id"))
    return {}


def mark_failed(event: dict[str, Any]) -> dict[str, Any]:
    reason = failure_reason(event.get("error"))
    cleanup = event.get("cleanup")
    if isinstance(cleanup, dict) and cleanup.get("Error"):
        reason += f" Deleting its VM failed too, so it may still exist: {failure_reason(cleanup)}"
    try:
        mark(int(event["replica_id"]), statuses.FAILED, allowed=_MAY_FAIL, error_message=reason, hibernated_at=None)
    except ReplicaGone:  # deleted meanwhile (its teardown owns it now), or failed by this step delivered before
        return {"reason": reason, **outcomes.repeated(True)}
    return {"reason": reason}


def create_ended(event: dict[str, Any]) -> dict[str, Any]:
    """Whether the replica's create execution has ended, so that no create call of it is in flight.

    The teardown's invariant: its VM lookup by name happens only once no VM of the replica can
    still appear. The create execution is not stopped for that: stopping an execution does not
    stop a Lambda mid-call, whose VM would then appear after the teardown looked, with no later
    step to delete it. Left running, each of its steps finds the replica DELETING (no step moves a
    replica out of DELETING) and compensates, deleting any VM it made, then ends by itself.
    """
    from chalicelib.provisioning import workflow

    polls = int(event.get("polls") or 0) + 1
    if polls == 1:
        _claim_teardown(int(event["replica_id"]))
    replica = find(int(event["replica_id"]))
    if replica is None:
        return {"ended": True, "polls": polls}
    create = workflow.create_execution_of(int(replica.id), event["execution_arn"], int(replica.retries or 0))
    return {"ended": not workflow.is_running(create), "polls": polls}


def _claim_teardown(replica_id: int) -> None:
    """A teardown's first step: the replica is DELETING again (a retry of one that failed was DELETE_FAILED), and
    its clock restarts, so the idle check retries only once this teardown has had its time. Delivered twice, it
    writes the same again; a replica already gone is left so."""
    actions = [Replica.vm_status.set(statuses.DELETING), Replica.teardown_started_at.set(int(time.time()))]
    update_if(Replica(replica_id), actions, Replica.vm_status.is_in(statuses.DELETING, statuses.DELETE_FAILED))


def stop_create(event: dict[str, Any]) -> dict[str, Any]:
    """The teardown waited its bound for the create execution: stop it, a stuck execution helps nobody.

    A create call in flight at this point may still make a VM after the teardown looked; the
    reconciler deletes such a VM, as no replica owns it.
    """
    from chalicelib.provisioning import workflow

    replica = find(int(event["replica_id"]))
    attempt = int(replica.retries or 0) if replica is not None else 0
    workflow.stop(workflow.create_execution_of(int(event["replica_id"]), event["execution_arn"], attempt),
                  "The replica was deleted and its provisioning did not end in time.")
    return {}


def teardown(event: dict[str, Any], hyperstack: Hyperstack = configured_hyperstack) -> dict[str, Any]:
    """Delete every VM of the replica's name, then its rows; runs once its create execution ended."""
    replica = find(int(event["replica_id"]))
    if replica is None:  # torn down by this step delivered before, or by another teardown beside it
        return outcomes.repeated(True)
    _delete_vm(hyperstack(), int(replica.id), replica.vm_id)
    delete_rows(replica)
    return {}


def mark_delete_failed(event: dict[str, Any]) -> dict[str, Any]:
    reason = "Teardown failed, the VM may still exist: " + failure_reason(event.get("error"))
    try:
        mark(int(event["replica_id"]), statuses.DELETE_FAILED, allowed=(statuses.DELETING,), error_message=reason)
    except ReplicaGone:  # marked by this step delivered before, or torn down by another teardown
        return {"reason": reason, **outcomes.repeated(True)}
    return {"reason": reason}


def _delete_vm(client: Any, replica_id: int, vm_id: int | None) -> None:
    """Delete the replica's VM: the one recorded, and any other by its name (a create retried
    after a lost answer could have made one the replica never recorded); then its credentials."""
    ids = {int(vm.id) for vm in call(lambda: client.find_vms_by_name(vm_name(replica_id)))}
    if vm_id is not None:
        ids.add(int(vm_id))
    for each in sorted(ids):
        call(lambda each=each: client.delete_vm(each), conflict_is_retryable=True)
    replica_tls.forget(replica_id)
    replica_secrets.forget(replica_id)


def _spec(replica: Replica, credentials: ReplicaCredentials) -> Any:
    from chalicelib.hyperstack.client import VmSpec

    return VmSpec(
        name=vm_name(int(replica.id)),
        environment_name=replica.environment_name,
        image_name=replica.image_name,
        flavor_name=replica.flavor_name,
        key_name=replica.key_name,
        assign_floating_ip=bool(replica.assign_floating_ip),
        user_data=user_data(model_name_of(replica), int(replica.port), replica.run_command,
                            api_key=credentials.api_key, certificate_pem=credentials.certificate_pem,
                            private_key_pem=credentials.private_key_pem,
                            secrets=replica_secrets.read(replica)),
        labels=[vm_name(int(replica.id)), deployment_label(deployment_id())],
        security_rules=security_rules_of(replica),
    )


_HYPERSTACK_STEPS: dict[str, Callable[[dict[str, Any], Hyperstack], dict[str, Any]]] = {
    "create_vm": create_vm,
    "check_vm": check_vm,
    "delete_vm": delete_vm,
    "teardown": teardown,
}
_STEPS_WITHOUT_HYPERSTACK: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "start_create": start_create,
    "create_ended": create_ended,
    "stop_create": stop_create,
    "check_model": check_model,
    "mark_ready": mark_ready,
    "mark_failed": mark_failed,
    "mark_delete_failed": mark_delete_failed,
}
# Every workflow's steps (provisioning's here, hibernate's and wake's in power.py), built once.
STEPS_WITH_HYPERSTACK = {**_HYPERSTACK_STEPS, **power.HYPERSTACK_STEPS}
STEPS_WITHOUT_HYPERSTACK = {**_STEPS_WITHOUT_HYPERSTACK, **power.STEPS_WITHOUT_HYPERSTACK}
