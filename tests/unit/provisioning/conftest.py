"""The provisioning tests' shared fixtures: the hibernate and wake state machines (moto's) to start executions of
(a model and Hyperstack faked in memory are tests/unit/conftest.py's)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import TEST_HIBERNATE_ARN, TEST_WAKE_ARN


@pytest.fixture
def sfn(aws) -> Any:
    import boto3

    client = boto3.client("stepfunctions", region_name="us-east-1")
    for arn in (TEST_HIBERNATE_ARN, TEST_WAKE_ARN):
        client.create_state_machine(name=arn.rsplit(":", 1)[1], roleArn="arn:aws:iam::123456789012:role/test",
                                    definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}')
    return client
