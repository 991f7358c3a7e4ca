"""Starting Step Functions executions, for every function that starts one (the admin API, the workflow's
own steps, the idle check, and chat, which starts wakes). boto3 is imported on first use: the chat
function pays for it only on the rare request that wakes a model."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from chalicelib.settings import get_settings


@lru_cache(maxsize=1)
def client() -> Any:
    import boto3  # in the Lambda runtime already

    settings = get_settings()
    return boto3.client("stepfunctions", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint)


def start_once(state_machine_arn: str, name: str, execution_input: dict[str, Any]) -> str:
    """Start the execution `name` unless one of that name exists already; its ARN either way.

    Execution names are unique per state machine for 90 days, so a name derived from what the execution
    is for (a replica's wake asked at a given time, say) makes starting it idempotent across callers.
    """
    sfn = client()
    try:
        return sfn.start_execution(stateMachineArn=state_machine_arn, name=name,
                                   input=json.dumps(execution_input))["executionArn"]
    except sfn.exceptions.ExecutionAlreadyExists:
        return state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name


def wake_execution_name(replica_id: int, requested_at: int) -> str:
    """A replica's wake, named after when it was asked for (a wake request's time, in ms)."""
    return f"replica-{replica_id}-wake-{requested_at}"
