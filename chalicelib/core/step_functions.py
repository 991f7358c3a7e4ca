"""Starting Step Functions executions, for every function that starts one (the admin API, the workflow's
own steps, the idle check, and chat, which starts wakes). boto3 is imported on first use: the chat
function pays for it only on the rare request that wakes a model."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from chalicelib.core.errors import ServiceUnavailable
from chalicelib.core.settings import get_settings

ENDED_UNDONE = ("FAILED", "TIMED_OUT", "ABORTED")  # ended without doing what it was started for
_MAX_NAME = 80  # Step Functions' limit on an execution's name


@lru_cache(maxsize=1)
def client() -> Any:
    import boto3  # in the Lambda runtime already

    settings = get_settings()
    return boto3.client("stepfunctions", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint)


class WorkflowNotDeployed(ServiceUnavailable):
    """A state machine this deployment names does not exist: its stack (the companion stack, under `chalice
    deploy`) is not deployed yet."""


@lru_cache(maxsize=1)
def _account_and_partition() -> tuple[str, str]:
    settings = get_settings()
    import boto3

    sts = boto3.client("sts", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint)
    identity = sts.get_caller_identity()  # allowed to every principal: no grant needed
    return identity["Account"], identity["Arn"].split(":")[1]


def state_machine_arn(configured: str | None, workflow: str) -> str | None:
    """The ARN of the state machine of `workflow` (provisioning, hibernate, wake): the one configured, else,
    where the deployment names its state machines instead (WORKFLOW_NAME_PREFIX, under `chalice deploy`), the
    ARN of that name in this account and region; None when neither is set. STS is asked the account once per
    instance, and only when a workflow is started."""
    if configured:
        return configured
    prefix = get_settings().workflow_name_prefix
    if not prefix:
        return None
    account, partition = _account_and_partition()
    return f"arn:{partition}:states:{get_settings().aws_region}:{account}:stateMachine:{prefix}-{workflow}"


def start_once(state_machine_arn: str, name: str, execution_input: dict[str, Any], *,
               restart_failed: bool = False) -> str:
    """Start the execution `name` unless one of that name exists already; the ARN of the one that runs.

    Execution names are unique per state machine for 90 days, so a name derived from what the execution
    is for (a replica's wake asked at a given time, say) makes starting it idempotent across callers.
    But a name taken by an execution that failed (timed out, was stopped) blocks its purpose for 90 days:
    with `restart_failed`, such a one is started again under the name plus the current minute, so callers
    that overlap start one, and a restart that fails too is followed by another a minute later (the
    workflows' conditional moves make a second execution for one purpose harmless: it finds the replica
    moved on and ends). The idle check restarts so, and so a failed wake or hibernation is no dead end.
    """
    sfn = client()
    try:
        return start(state_machine_arn, name, execution_input)
    except sfn.exceptions.ExecutionAlreadyExists:
        existing = execution_arn(state_machine_arn, name)
    if restart_failed and execution_status(existing) in ENDED_UNDONE:
        return start_once(state_machine_arn, f"{name}-again-{int(time.time() // 60)}"[:_MAX_NAME], execution_input)
    return existing


def start(state_machine_arn: str, name: str, execution_input: dict[str, Any]) -> str:
    """Start the execution `name`; its ARN. A name taken raises the client's ExecutionAlreadyExists."""
    sfn = client()
    try:
        return sfn.start_execution(stateMachineArn=state_machine_arn, name=name,
                                   input=json.dumps(execution_input))["executionArn"]
    except sfn.exceptions.StateMachineDoesNotExist as error:
        machine = state_machine_arn.rsplit(":", 1)[-1]
        raise WorkflowNotDeployed(f"The workflow {machine} is not deployed (see docs/deploying.md).") from error


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN the execution `name` of that state machine has (or would have)."""
    return state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name


def execution_status(arn: str) -> str | None:
    """The execution's status (RUNNING, SUCCEEDED, FAILED, ...), None if no execution has that ARN."""
    sfn = client()
    try:
        return sfn.describe_execution(executionArn=arn)["status"]
    except sfn.exceptions.ExecutionDoesNotExist:
        return None


def wake_execution_name(replica_id: int, requested_at: int) -> str:
    """A replica's wake, named after when it was asked for (a wake request's time, in ms)."""
    return f"replica-{replica_id}-wake-{requested_at}"
