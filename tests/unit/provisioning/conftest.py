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
