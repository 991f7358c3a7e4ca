"""Usage rows survive DynamoDB failures, through the local HTTP stack with faults injected in the emulator."""

import json

import pytest

from tests.integration.conftest import STACK_ENV, start_local_stack

MESSAGES = [{"role": "user", "content": "Meter me"}]


@pytest.fixture
def no_sdk_retries(tmp_path) -> dict[str, str]:
    """PynamoDB's own retries off, so that every injected failure reaches the proxy's retries at once."""
    settings = tmp_path / "pynamodb_settings.py"
    settings.write_text("max_retry_attempts = 0\n")
    return {"PYNAMODB_CONFIG": str(settings)}


def stack_with(faults: str, env: dict[str, str]):
    return start_local_stack({**STACK_ENV, **env, "EMULATOR_FAULTS": faults})


def test_usage_row_is_written_when_dynamodb_fails_the_first_attempts(no_sdk_retries):
    stack = stack_with("PutItem:metric:2", no_sdk_retries)
    try:
        key = stack.new_key()
        stack.client(key["api_key"]).chat.completions.create(model="mock/llm", messages=MESSAGES)

        rows = stack.usage_rows(key["id"], wait=15)
    finally:
        stack.stop()

    assert len(rows) == 1 and rows[0]["status"] == 200 and rows[0]["total_tokens"] > 0


def test_usage_row_that_cannot_be_written_is_logged_whole_as_one_json_line(no_sdk_retries):
    stack = stack_with("PutItem:metric:*", no_sdk_retries)
    try:
        key = stack.new_key()
        answer = stack.client(key["api_key"]).chat.completions.create(model="mock/llm", messages=MESSAGES)
        rows = stack.usage_rows(key["id"], wait=5)
    finally:
        stack.stop()
    output = stack.process.stdout.read().splitlines()

    lost = [json.loads(line) for line in output if '"usage row not written"' in line]
    assert rows == []
    assert len(lost) == 1
    assert lost[0]["usage_row"]["api_key_id"] == key["id"]
    assert lost[0]["usage_row"]["total_tokens"] == answer.usage.total_tokens
    assert any('"UsageRowsLost"' in line for line in output)
