"""Shared set-up: a test environment fixed before any project module reads its settings."""

import os
from typing import NoReturn

import pytest

TEST_ADMIN_KEY = "test-admin-key"
# `make test` installs every tool and model the tests use and sets this: there, a test whose
# prerequisite is missing fails, since a check that never ran must not pass as if it had.
REQUIRE_ALL_PREREQUISITES = "REQUIRE_ALL_PREREQUISITES"
# moto's default account; the unit fixtures create this state machine (executions are recorded, not run).
TEST_STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:provision-test"
TEST_HIBERNATE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:hibernate-test"
TEST_WAKE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:wake-test"

for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "ADMIN_API_KEY_PARAMETER", "AWS_PROFILE",
                 "LOCALSTACK_HOST", "MOTO_PORT", "HYPERSTACK_API_KEY", "HYPERSTACK_API_URL"):
    os.environ.pop(variable, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    STAGE="test",
    TABLE_PREFIX="test",
    ADMIN_API_KEY=TEST_ADMIN_KEY,
    PROVISION_STATE_MACHINE_ARN=TEST_STATE_MACHINE_ARN,
    HIBERNATE_STATE_MACHINE_ARN=TEST_HIBERNATE_ARN,
    WAKE_STATE_MACHINE_ARN=TEST_WAKE_ARN,
)


def missing_prerequisite(what: str, install: str) -> NoReturn:
    """Skip the test for a developer's plain `pytest`; fail it when REQUIRE_ALL_PREREQUISITES is set."""
    message = f"{what} is not installed: {install}"
    if os.environ.get(REQUIRE_ALL_PREREQUISITES, "").strip() not in ("", "0"):
        pytest.fail(f"{message} ({REQUIRE_ALL_PREREQUISITES} is set, as `make test` does)", pytrace=False)
    pytest.skip(message)


def free_run(length: int) -> int:
    """A port p with p .. p+length-1 all free on 127.0.0.1 (for stacks whose side ports follow PORT)."""
    import socket

    from infra.local.ports import is_free

    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + length <= 65535 and all(is_free(base + offset) for offset in range(1, length)):
            return base
    raise RuntimeError(f"no {length} free ports in a row")
