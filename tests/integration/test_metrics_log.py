"""`make run`'s log holds the CloudWatch metrics (embedded metric format lines) of each chat request, as a
function's log does in AWS: read here from the local stack's output, for an answered and a refused request.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from chalicelib.core import metric_names as names
from chalicelib.core.observability import METRICS_NAMESPACE
from infra.local.mock_vllm import MockVllm
from tests.integration.conftest import STACK_ENV, LocalStack, start_local_stack

STAGE = "local"  # `make run`'s stage (settings: STAGE unset)
MESSAGES = [{"role": "user", "content": "Count me"}]


@pytest.fixture(scope="module")
def own_stack() -> Iterator[LocalStack]:
    """A stack of this module's own: every metric line in its log is one of these tests' requests."""
    running = start_local_stack({**STACK_ENV, "STAGE": None})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def model(own_stack) -> Iterator[str]:
    name = f"it-{uuid.uuid4().hex[:10]}/Metered-Instruct"
    with MockVllm(model=name) as replica:
        own_stack.register_model(name, replica.base_url)
        yield name


def metric_lines(stack: LocalStack, since: int, expected: int, wait: float = 10) -> list[dict[str, Any]]:
    """The EMF lines the stack printed after its first `since` lines, waiting for `expected` of them
    (they are printed after the answer, once its usage row is written)."""
    deadline = time.monotonic() + wait
    while True:
        lines = [json.loads(line) for line in stack.process.stdout.lines()[since:] if line.startswith('{"_aws"')]
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines


def by_dimensions(lines: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], dict[str, Any]]:
    """Each line's metrics ({name: (unit, value)}), keyed by its dimensions; each line checked against the format."""
    found = {}
    for line in lines:
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == METRICS_NAMESPACE and isinstance(line["_aws"]["Timestamp"], int)
        (dimensions,) = directive["Dimensions"]
        found[tuple((name, line[name]) for name in dimensions)] = {
            metric["Name"]: (metric["Unit"], line[metric["Name"]]) for metric in directive["Metrics"]}
    return found


def test_an_answered_chat_request_logs_its_outcome_model_timings_and_tokens(own_stack, model):
    key = own_stack.new_key()
    since = len(own_stack.process.stdout.lines())

    answer = own_stack.client(key["api_key"]).chat.completions.create(model=model, messages=MESSAGES)

    lines = by_dimensions(metric_lines(own_stack, since, expected=3))
    stage = ("Stage", STAGE)
    assert set(lines) == {(stage, ("Outcome", "2xx")), (stage, ("Model", model), ("Outcome", "2xx")),
                          (stage, ("Model", model))}
    assert lines[(stage, ("Outcome", "2xx"))] == {names.CHAT_REQUESTS: ("Count", [1.0])}
    assert lines[(stage, ("Model", model), ("Outcome", "2xx"))] == {names.CHAT_REQUESTS_BY_MODEL: ("Count", [1.0])}
    per_model = lines[(stage, ("Model", model))]
    assert per_model[names.PROMPT_TOKENS] == ("Count", [float(answer.usage.prompt_tokens)])
    assert per_model[names.COMPLETION_TOKENS] == ("Count", [float(answer.usage.completion_tokens)])
    assert per_model[names.TIME_TO_FIRST_TOKEN][0] == per_model[names.CHAT_DURATION][0] == "Milliseconds"
    assert 0 < per_model[names.TIME_TO_FIRST_TOKEN][1][0] <= per_model[names.CHAT_DURATION][1][0] < 30_000


def test_a_rate_limited_request_logs_a_4xx_and_its_reason(own_stack, model):
    key = own_stack.new_key(allowed_rpm=1)
    client = own_stack.client(key["api_key"])
    before = len(own_stack.process.stdout.lines())
    client.chat.completions.create(model=model, messages=MESSAGES)
    metric_lines(own_stack, before, expected=3)  # the first request's, printed after its answer
    since = len(own_stack.process.stdout.lines())

    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=model, messages=MESSAGES)

    lines = by_dimensions(metric_lines(own_stack, since, expected=2))
    stage = ("Stage", STAGE)
    assert lines == {(stage, ("Outcome", "4xx")): {names.CHAT_REQUESTS: ("Count", [1.0])},
                     (stage, ("Reason", "rate_limit_exceeded")): {names.CHAT_REFUSALS: ("Count", [1.0])}}
