"""What every workflow's steps share: the Hyperstack client, its errors as the workflow's, the replica row's
conditional moves, and the health check that proves a VM serves as chat requests will reach it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.core.pinned_tls import pool_options
from chalicelib.provisioning.errors import HyperstackRetryable, ProvisioningFailed, ReplicaGone
from chalicelib.provisioning.replica_store import find, mark
from chalicelib.store.conditional import update_if
from chalicelib.store.tables import Replica

# Builds the Hyperstack client. Called when a step first needs it, not before: a step that finds
# its replica gone, or a step that never calls Hyperstack, must not fail for want of an API key.
Hyperstack = Callable[[], Any]


def configured_hyperstack() -> Any:
    from chalicelib.hyperstack import configured_client

    client = configured_client()
    if client is None:
        raise ProvisioningFailed("No Hyperstack API key is configured (HYPERSTACK_API_KEY).")
    return client


def live(event: dict[str, Any], allowed: tuple[str, ...], done: tuple[str, ...] = (),
         take_over: bool = False) -> Replica:
    """The event's replica, if its status is one of `allowed`, or one of `done` that this very execution moved
    it to (the step delivered again after its own write landed: Step Functions retries a Lambda task whose
    invocation may have run); else ReplicaGone (deleted, or moved on by someone else).

    With `take_over` (a workflow's first step), a replica left in one of `done` by an execution of the same
    workflow that ended without finishing (failed, timed out, stopped) is taken over: this execution becomes
    its mover and carries on from there, so no replica stays in a status only a delete can clear.
    """
    replica = find(int(event["replica_id"]))
    in_done = replica is not None and replica.vm_status in done
    done_here = in_done and (_moved_by(replica, event) or (take_over and _taken_over(replica, event)))
    if replica is None or not (replica.vm_status in allowed or done_here):
        raise ReplicaGone(f"Replica {event['replica_id']} is no longer {' or '.join(allowed)}.")
    return replica


def _taken_over(replica: Replica, event: dict[str, Any]) -> bool:
    from chalicelib.core import step_functions

    ended = replica.moved_by and step_functions.execution_status(replica.moved_by) in step_functions.ENDED_UNDONE
    if not ended or not event.get("execution_arn"):
        return False
    return update_if(Replica(int(replica.id)), [Replica.moved_by.set(event["execution_arn"])],
                     (Replica.vm_status == replica.vm_status) & (Replica.moved_by == replica.moved_by))


def advance(event: dict[str, Any], status: str, allowed: tuple[str, ...], **fields: Any) -> None:
    """Make it so: the replica moves to `status` from one of `allowed`, stamped with the event's execution. Run
    again after that write landed, it finds the replica there, moved by the same execution, and does nothing."""
    replica_id = int(event["replica_id"])
    try:
        mark(replica_id, status, allowed=allowed, moved_by=event.get("execution_arn"), **fields)
    except ReplicaGone:
        replica = find(replica_id)
        if replica is None or replica.vm_status != status or not _moved_by(replica, event):
            raise


def _moved_by(replica: Replica, event: dict[str, Any]) -> bool:
    return bool(event.get("execution_arn")) and replica.moved_by == event["execution_arn"]


def endpoint(floating_ip: str, replica: Replica) -> str:
    return f"https://{floating_ip}:{int(replica.port)}/v1"


def vm_poll(vm: Any, event: dict[str, Any], waiting: str, doing: str) -> dict[str, Any]:
    """One poll of a VM on its way to ACTIVE: {status: ACTIVE|ERROR|`waiting`, floating_ip, polls: polls + 1}."""
    polls = int(event.get("polls") or 0) + 1
    if vm is None:
        raise ProvisioningFailed(f"The VM disappeared from Hyperstack while it was being {doing}.")
    if vm.status == "ACTIVE" and vm.floating_ip:
        return {"status": "ACTIVE", "floating_ip": vm.floating_ip, "polls": polls}
    status = "ERROR" if vm.status in ("ERROR", "FAILED") else waiting
    return {"status": status, "floating_ip": None, "polls": polls, "vm_status": vm.status}


def model_poll(event: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """One health check of the replica's model on its VM: {healthy, polls: polls + 1}, and when not healthy
    `answer`: what did not answer (the replica's error_message says it if the checks run out)."""
    replica = live(event, allowed=allowed)
    polls = int(event.get("polls") or 0) + 1
    problem = health_problem(endpoint(event["floating_ip"], replica) + "/models", replica.api_key,
                             replica.tls_fingerprint)
    if problem is None:
        return {"healthy": True, "polls": polls}
    return {"healthy": False, "polls": polls, "answer": problem}


def answers(url: str, api_key: str | None = None, fingerprint: str | None = None) -> bool:
    return health_problem(url, api_key, fingerprint) is None


def health_problem(url: str, api_key: str | None = None, fingerprint: str | None = None) -> str | None:
    """None if the replica serves, reached as chat requests will reach it: over TLS with its pinned
    certificate, with its bearer (a yes proves the VM is ours, up, and holding its key). Otherwise which
    part of the VM did not answer: its TLS front (nginx), or the model server behind it."""
    import urllib3

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    where = url.split("/")[2]
    try:
        with urllib3.PoolManager(retries=False, **pool_options(fingerprint)) as pool:
            status = pool.request("GET", url, headers=headers, timeout=5, redirect=False).status
    except urllib3.exceptions.SSLError as error:
        return f"{where} answered, but not with the replica's TLS certificate ({error})"
    except urllib3.exceptions.ConnectTimeoutError:  # refused, unreachable, or no answer to the handshake
        return (f"nothing accepted a connection on {where}: the VM's TLS front is not listening "
                "(on the VM: cloud-init status --long, /var/log/llm-replica.log)")
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
        return f"{where} accepted a connection but gave no answer ({type(error).__name__})"
    if status == 200:
        return None
    if status == 401:
        return f"the TLS front on {where} refused the replica's bearer (401)"
    if status in (502, 503, 504):
        return (f"the TLS front on {where} answers, the model server behind it does not ({status}; on the VM: "
                "systemctl status llm-replica, /var/log/llm-replica.log)")
    return f"the model server behind {where} answered {status} to GET /v1/models"


def call(action: Callable[[], Any], conflict_is_retryable: bool = False) -> Any:
    """Hyperstack's errors as the workflow's: retry what may pass, fail on what will not.

    A delete refused with 409 (the VM is still being built) is worth retrying: giving up there
    would leave a GPU VM running.
    """
    from chalicelib.hyperstack.client import HyperstackError

    try:
        return action()
    except HyperstackError as error:
        if error.retryable or (conflict_is_retryable and error.status == 409):
            raise HyperstackRetryable(str(error)) from None
        raise ProvisioningFailed(f"Hyperstack refused: {error}") from None


def failure_reason(error: Any) -> str:
    """A person's reading of a Step Functions Catch result (`{"Error", "Cause"}`)."""
    if not isinstance(error, dict):
        return "Provisioning failed."
    cause = error.get("Cause") or ""
    try:
        cause = json.loads(cause).get("errorMessage") or cause
    except (ValueError, AttributeError):
        pass
    return str(cause or error.get("Error") or "Provisioning failed.")[:2000]
