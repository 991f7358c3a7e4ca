"""Shared set-up: a test environment fixed before any project module reads its settings."""

import os

TEST_ADMIN_KEY = "test-admin-key"
# moto's default account; the unit fixtures create this state machine (executions are recorded, not run).
TEST_STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:provision-test"

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
)
