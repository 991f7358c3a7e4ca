"""The provisioning tests' shared fixtures: Hyperstack faked in memory, a model to give replicas to, and the
hibernate and wake state machines (moto's) to start executions of."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import TEST_HIBERNATE_ARN, TEST_WAKE_ARN
from tests.unit.provisioning.test_hibernation import HibernatingHyperstack


@pytest.fixture
def hyperstack() -> HibernatingHyperstack:
    """The steps' Hyperstack: provisioning's fake, which hibernates and restores too."""
    return HibernatingHyperstack()


@pytest.fixture
def model_id(api) -> int:
    return api.create_model()


@pytest.fixture
def sfn(aws) -> Any:
    import boto3

    client = boto3.client("stepfunctions", region_name="us-east-1")
    for arn in (TEST_HIBERNATE_ARN, TEST_WAKE_ARN):
        client.create_state_machine(name=arn.rsplit(":", 1)[1], roleArn="arn:aws:iam::123456789012:role/test",
                                    definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}')
    return client


@pytest.fixture
def executions(aws) -> list[dict[str, Any]]:
    """The hibernate and wake executions steps and routes start: (state machine, name, input), in order
    (provisioning's create executions are not recorded)."""
    import json

    from chalicelib.core import step_functions

    started: list[dict[str, Any]] = []
    real = step_functions.client()

    class Recording:
        exceptions = real.exceptions

        def start_execution(self, **call: Any) -> dict[str, Any]:
            if call["stateMachineArn"] not in (TEST_HIBERNATE_ARN, TEST_WAKE_ARN):
                return {"executionArn": f"arn:execution:{call['name']}"}
            if any(e["name"] == call["name"] for e in started):
                raise real.exceptions.ExecutionAlreadyExists({"Error": {"Code": "ExecutionAlreadyExists"}},
                                                             "StartExecution")
            started.append({"state_machine": call["stateMachineArn"], "name": call["name"],
                            "input": json.loads(call["input"])})
            return {"executionArn": f"arn:execution:{call['name']}"}

        def describe_execution(self, executionArn: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
            return {"executionArn": executionArn, "status": "RUNNING"}  # every recorded execution still runs

    step_functions.client.cache_clear()
    original = step_functions.client
    step_functions.client = lambda: Recording()  # type: ignore[assignment]
    yield started
    step_functions.client = original  # type: ignore[assignment]
