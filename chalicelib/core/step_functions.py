"""Starting Step Functions executions, for every function that starts one (the admin API, the workflow's
own steps, the idle check, and chat, which starts wakes). boto3 is imported on first use: the chat
function pays for it only on the rare request that wakes a model."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from chalicelib.core.settings import get_settings

ENDED_UNDONE = ("FAILED", "TIMED_OUT", "ABORTED")  # ended without doing what it was started for
_MAX_NAME = 80  # Step Functions' limit on an execution's name


@lru_cache(maxsize=1)
def client() -> Any:
    import boto3  # in the Lambda runtime already

    settings = get_settings()
    return boto3.client("stepfunctions", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint)


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
        return sfn.start_execution(stateMachineArn=state_machine_arn, name=name,
                                   input=json.dumps(execution_input))["executionArn"]
    except sfn.exceptions.ExecutionAlreadyExists:
        existing = execution_arn(state_machine_arn, name)
    if restart_failed and execution_status(existing) in ENDED_UNDONE:
        return start_once(state_machine_arn, f"{name}-again-{int(time.time() // 60)}"[:_MAX_NAME], execution_input)
    return existing


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
