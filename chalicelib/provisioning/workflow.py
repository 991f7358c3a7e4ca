"""Starting the provisioning workflow's executions (Step Functions), from the admin API."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from chalicelib.errors import ServiceUnavailable
from chalicelib.settings import get_provision_settings, get_settings


@lru_cache(maxsize=1)
def _client() -> Any:
    import boto3  # in the Lambda runtime already; only the admin API and the tasks need it

    settings = get_settings()
    return boto3.client("stepfunctions", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint)


def require_configured() -> str:
    arn = get_provision_settings().state_machine_arn
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
    }


def start(action: str, replica_id: int) -> str:
    """Start an execution; returns its ARN.

    A create's name is derived from the replica id alone, so a retried request cannot start
    two. A teardown's carries the time too: a second DELETE after a failed teardown must be
    able to start another (names stay taken for 90 days).
    """
    arn = require_configured()
    name = f"replica-{replica_id}-create" if action == "create" else f"replica-{replica_id}-{action}-{time.time_ns()}"
    started = _client().start_execution(
        stateMachineArn=arn, name=name, input=json.dumps(execution_input(action, replica_id))
    )
    return started["executionArn"]


def stop(execution_arn: str, reason: str) -> None:
    """Stop an execution if it is still running; a finished one is left as it is."""
    client = _client()
    if client.describe_execution(executionArn=execution_arn)["status"] == "RUNNING":
        client.stop_execution(executionArn=execution_arn, error="ReplicaDeleted", cause=reason)
