"""Starting the workflows' executions (Step Functions): provisioning (create, delete), hibernate, wake."""

from __future__ import annotations

import time
from typing import Any

from chalicelib.core import replica_statuses as statuses
from chalicelib.core import step_functions
from chalicelib.core.errors import ServiceUnavailable
from chalicelib.core.observability import logger
from chalicelib.core.settings import get_provision_settings

# How long a teardown waits for the replica's create execution to end before stopping it: longer
# than a create call with its retries (~3 min) plus the compensation's delete retries (~12 min).
CREATE_END_WAIT_SECONDS = 20 * 60
_said_missing: set[str] = set()  # deliberate per-instance state: each scheduled function says it once


def _client() -> Any:
    return step_functions.client()


def machine(workflow: str) -> str | None:
    """The ARN of the state machine of `workflow`: provisioning, hibernate or wake (None: not configured)."""
    settings = get_provision_settings()
    configured = {"provisioning": settings.state_machine_arn, "hibernate": settings.hibernate_state_machine_arn,
                  "wake": settings.wake_state_machine_arn}[workflow]
    return step_functions.state_machine_arn(configured, workflow)


def missing() -> list[str]:
    """The workflows this deployment lacks (none: every scheduled function can start what it needs)."""
    return [name for name in ("provisioning", "hibernate", "wake") if not machine(name)]


def say_missing_once(message: str, missing_workflows: list[str]) -> None:
    """A scheduled function on a deployment without its workflows (its stack not deployed yet, say) can start
    nothing: it says so once per instance (`message`), rather than fail every minute."""
    if message not in _said_missing:
        logger.warning(message, extra={"missing": missing_workflows})
        _said_missing.add(message)


def require_configured() -> str:
    arn = machine("provisioning")
    if not arn:
        raise ServiceUnavailable("VM provisioning is not configured on this deployment (no state machine).")
    return arn


def execution_input(action: str, replica_id: int) -> dict[str, Any]:
    settings = get_provision_settings()
    poll = settings.poll_seconds
    return {
        "action": action,
        "replica_id": replica_id,
        "poll_seconds": poll,
        "max_polls": max(1, settings.vm_timeout_seconds // poll),
        "model_poll_seconds": poll,
        "max_model_polls": max(1, settings.model_timeout_seconds // poll),
        "max_create_waits": max(1, CREATE_END_WAIT_SECONDS // poll),
        "drain_poll_seconds": settings.drain_poll_seconds,
        "max_drain_polls": max(1, -(-settings.drain_timeout_seconds // settings.drain_poll_seconds)),
    }


def start(action: str, replica_id: int, attempt: int = 0) -> str:
    """Start an execution; returns its ARN.

    A create's name is derived from the replica id (and the attempt, for a FAILED replica retried), so a
    retried request cannot start two. A teardown's carries the time too: a second DELETE after a failed
    teardown must be able to start another (names stay taken for 90 days).
    """
    arn = require_configured()
    create = action == "create"
    name = create_execution_name(replica_id, attempt) if create else f"replica-{replica_id}-{action}-{time.time_ns()}"
    return step_functions.start(arn, name, execution_input(action, replica_id))


def start_hibernate(replica_id: int, serving_since: int | None, restart_failed: bool = False) -> str:
    """Hibernate the replica. Named after its serving period: a second idle check while the first
    hibernation runs, or after it, starts nothing more (an admin's asks pass no period, so always start one);
    with `restart_failed`, one that failed is started again (step_functions.start_once). An idle check's
    (a period given) hibernates only if the replica is still idle when its first step reads it."""
    period = serving_since if serving_since is not None else time.time_ns()
    return _start_once(machine("hibernate"), "hibernation",
                       f"replica-{replica_id}-hibernate-{period}", replica_id, restart_failed,
                       {"if_idle": serving_since is not None})


def start_scale_in(replica_id: int, serving_since: int) -> str:
    """Hibernate a replica the scaler no longer needs, idle or not: its drain waits for the requests in flight.
    Named after its serving period, so that scaler runs while it drains start it once."""
    return _start_once(machine("hibernate"), "hibernation", f"replica-{replica_id}-scale-in-{serving_since}",
                       replica_id, extra={"if_idle": False})


def start_wake(replica_id: int, requested_at: int, state_machine_arn: str | None = None,
               restart_failed: bool = False) -> str:
    """Wake the replica. Named after when its wake was asked for: one execution per ask, whoever starts it;
    with `restart_failed`, one that failed is started again (step_functions.start_once)."""
    arn = state_machine_arn or machine("wake")
    return _start_once(arn, "waking", step_functions.wake_execution_name(replica_id, requested_at), replica_id,
                       restart_failed)


def take_over_if_ended(replica_id: int, vm_status: str, moved_by: str, now: float) -> bool:
    """Start a new execution of the workflow that left the replica in `vm_status` (a create's, HIBERNATING or
    WAKING) if that execution (`moved_by`) ended without finishing; True if one was started. Named after the
    minute, so overlapping idle checks start one a minute at most."""
    if step_functions.execution_status(moved_by) not in step_functions.ENDED_UNDONE:
        return False
    workflows = {statuses.HIBERNATING: ("hibernation", "hibernate", "hibernate"),
                 statuses.WAKING: ("waking", "wake", "wake")}
    what, action, workflow = workflows.get(vm_status, ("create", "create", "provisioning"))
    arn = machine(workflow)
    _start_once(arn, what, f"replica-{replica_id}-{action}-resumed-{int(now // 60)}", replica_id,
                extra={"if_idle": False} if action == "hibernate" else None)
    return True


def retry_teardown(replica_id: int, started_at: int) -> str:
    """Start another teardown of a replica whose latest one (started at `started_at`) failed or was lost. Named
    after that teardown, so overlapping idle checks start one; one that fails before its first step (which
    restarts the clock) is started again a minute later."""
    return _start_once(machine("provisioning"), "delete", f"replica-{replica_id}-delete-retry-{started_at}",
                       replica_id, restart_failed=True)


def wake_status(replica_id: int, requested_at: int) -> str | None:
    """The status of the wake execution named after an ask; None if it was never started."""
    name = step_functions.wake_execution_name(replica_id, requested_at)
    return step_functions.execution_status(step_functions.execution_arn(machine("wake") or "", name))


def _start_once(state_machine_arn: str | None, what: str, name: str, replica_id: int,
                restart_failed: bool = False, extra: dict[str, Any] | None = None) -> str:
    if not state_machine_arn:
        raise ServiceUnavailable(f"Replica {what} is not configured on this deployment (no state machine).")
    return step_functions.start_once(state_machine_arn, name, {**execution_input(what, replica_id), **(extra or {})},
                                     restart_failed=restart_failed)


def create_execution_name(replica_id: int, attempt: int = 0) -> str:
    """The replica's create execution: its first attempt's, or a retry's (attempt 1, 2, ...)."""
    return f"replica-{replica_id}-create" + (f"-retry-{attempt}" if attempt else "")


def create_execution_of(replica_id: int, sibling_arn: str, attempt: int = 0) -> str:
    """The ARN of the replica's create execution (of its latest attempt), from any execution's of the same state
    machine.

    Derived, not read from the replica row: the admin API records the ARN only after the execution
    has started, and the teardown must find a create execution that is already running by then. The attempt
    is on the row before its execution starts.
    """
    return sibling_arn.rsplit(":", 1)[0] + ":" + create_execution_name(replica_id, attempt)


def is_running(execution_arn: str) -> bool:
    """True while the execution runs; an execution never started counts as not running."""
    client = _client()
    try:
        return client.describe_execution(executionArn=execution_arn)["status"] == "RUNNING"
    except client.exceptions.ExecutionDoesNotExist:
        return False


def stop(execution_arn: str, reason: str) -> None:
    """Stop an execution if it is still running; a finished one is left as it is."""
    client = _client()
    if client.describe_execution(executionArn=execution_arn)["status"] == "RUNNING":
        client.stop_execution(executionArn=execution_arn, error="ReplicaDeleted", cause=reason)
