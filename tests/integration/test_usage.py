"""`/v1/usage` and monthly token budgets, through the local HTTP stack (a stack of its own: every row is ours)."""

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import openai
import pytest

from tests.integration.conftest import STACK_ENV, start_local_stack

MESSAGES = [{"role": "user", "content": "Count me"}]
COUNTS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors")


@pytest.fixture(scope="module")
def own_stack():
    running = start_local_stack(STACK_ENV)
    yield running
    running.stop()


def all_metric_rows(stack) -> list[dict]:
    rows, token = [], None
    while True:
        page = stack.admin.get(stack.url("/v1/tables/metric"), params={"next_token": token} if token else {}).json()
        rows += page["data"]
        token = page["next_token"]
        if not token:
            return rows


def expected_totals(rows, group_by, granularity, start, end) -> dict:
    totals = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for row in rows:
        moment = datetime.fromtimestamp(row["created"], tz=UTC)
        if not start <= moment < end:
            continue
        period = None
        if granularity:
            bucket = moment.replace(minute=0, second=0) if granularity == "hour" else moment.replace(
                hour=0, minute=0, second=0)
            period = bucket.isoformat().replace("+00:00", "Z")
        total = totals[(row[group_by], period)]
        total["requests"] += 1
        total["errors"] += 1 if row["status"] >= 400 else 0
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            total[name] += row[name] or 0
    return dict(totals)


def summary_totals(stack, **params) -> dict:
    reply = stack.admin.get(stack.url("/v1/usage"), params=params)
    assert reply.status_code == 200, reply.text
    return {(row["group"], row.get("period")): {name: row[name] for name in COUNTS} for row in reply.json()["data"]}


def test_usage_totals_equal_the_metric_rows_grouped_each_way_by_day_and_by_hour(own_stack):
    stack = own_stack
    keys = [stack.new_key(user_id=user) for user in ("ann", "ann", "ben")]
    for index, key in enumerate(keys):
        client = stack.client(key["api_key"])
        for _ in range(index + 1):
            client.chat.completions.create(model="mock/llm", messages=MESSAGES)
        client.embeddings.create(model="mock/llm", input="vectors")
        with pytest.raises(openai.NotFoundError):  # metered, as an error
            client.chat.completions.create(model="no/such-model", messages=MESSAGES)
    for index, key in enumerate(keys):
        assert len(stack.usage_rows(key["id"], expected=index + 3)) == index + 3
    time.sleep(0.5)  # the counters are added just after each row
    rows = all_metric_rows(stack)
    now = datetime.now(tz=UTC)
    start, end = now.replace(hour=0, minute=0, second=0, microsecond=0), now.replace(
        minute=0, second=0, microsecond=0) + timedelta(hours=1)

    for group_by in ("model", "user_id", "api_key_id"):
        for granularity in (None, "day", "hour"):
            params = {"start": start.isoformat(), "end": end.isoformat(), "group_by": group_by,
                      **({"granularity": granularity} if granularity else {})}
            assert summary_totals(stack, **params) == expected_totals(rows, group_by, granularity, start, end), params
    # The default window is the current month; the default grouping, by model.
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert summary_totals(stack) == expected_totals(rows, "model", None, month_start, month_start + timedelta(days=32))
    assert any(total["errors"] for total in summary_totals(stack).values())


def test_key_over_its_monthly_token_budget_is_refused_with_insufficient_quota_and_another_key_is_not(own_stack):
    stack = own_stack
    capped = stack.new_key(token_budget=5)
    free = stack.new_key()
    assert capped["token_budget"] == 5 and capped["month_tokens"] == 0 and free["token_budget"] is None
    client = stack.client(capped["api_key"])
    client.chat.completions.create(model="mock/llm", messages=MESSAGES)  # starts under the budget, ends over it
    stack.usage_rows(capped["id"])

    deadline = time.monotonic() + 10
    while True:  # the key's tokens are added just after its row
        try:
            client.chat.completions.create(model="mock/llm", messages=MESSAGES)
        except openai.RateLimitError as refused:
            status, error = refused.status_code, refused.body
            break
        assert time.monotonic() < deadline, "the budget was never enforced"
        time.sleep(0.1)

    assert status == 429
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "5 tokens" in error["message"]
    assert stack.client(free["api_key"]).chat.completions.create(model="mock/llm", messages=MESSAGES).choices
    keys = {row["id"]: row for row in stack.admin.get(stack.url("/v1/tables/api_key")).json()["data"]}
    assert keys[capped["id"]]["month_tokens"] >= 5 and keys[capped["id"]]["token_budget"] == 5


@pytest.mark.parametrize(("params", "field"), [
    ({"start": "yesterday"}, "start"),
    ({"end": "2025-13-01"}, "end"),
    ({"start": "2025-05-01T10:30:00Z"}, "start"),
    ({"start": "2025-05-02", "end": "2025-05-01"}, "end"),
    ({"start": "2020-01-01", "end": "2025-01-01"}, "end"),
    ({"group_by": "replica"}, "group_by"),
    ({"granularity": "week"}, "granularity"),
])
def test_bad_usage_parameters_get_400_naming_the_parameter(own_stack, params, field):
    reply = own_stack.admin.get(own_stack.url("/v1/usage"), params=params)

    assert reply.status_code == 400
    assert list(reply.json()["errors"]) == [field] and reply.json()["errors"][field][0]


def test_bad_token_budget_gets_400(own_stack):
    reply = own_stack.admin.post(own_stack.url("/v1/generate_api_key"), json={"user_id": "u", "token_budget": 0})

    assert reply.status_code == 400 and "token_budget" in reply.json()["errors"]
