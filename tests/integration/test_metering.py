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


def test_the_log_never_holds_a_key_a_prompt_or_an_answer_even_with_content_stored(no_sdk_retries):
    """Every path that logs a row: written, then lost (every PutItem of `metric` failing)."""
    marker = "PromptMarker7f3a"
    messages = [{"role": "user", "content": f"Repeat {marker} please"}]
    stored = start_local_stack({**STACK_ENV, **no_sdk_retries, "METRICS_STORE_CONTENT": "true"})
    lost = stack_with("PutItem:metric:*", {**no_sdk_retries, "METRICS_STORE_CONTENT": "true"})
    outputs = []
    for stack in (stored, lost):
        try:
            key = stack.new_key()
            client = stack.client(key["api_key"])
            answer = client.chat.completions.create(model="mock/llm", messages=messages)
            list(client.chat.completions.create(model="mock/llm", messages=messages, stream=True))
            rows = stack.usage_rows(key["id"], expected=2, wait=5)
        finally:
            stack.stop()
        outputs.append((stack.process.stdout.read(), key["api_key"], rows))

    (stored_log, stored_key, stored_rows), (lost_log, lost_key, lost_rows) = outputs
    assert marker in answer.choices[0].message.content  # the mock answers with the prompt's words
    assert all(marker in row["input"] for row in stored_rows) and len(stored_rows) == 2  # the rows may hold it
    assert lost_rows == [] and lost_log.count('"usage row not written"') == 2
    for log, api_key in ((stored_log, stored_key), (lost_log, lost_key)):
        assert marker not in log
        assert api_key not in log and api_key.split("_", 1)[1][:12] not in log
