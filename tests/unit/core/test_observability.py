"""Every Chalice function's log lines carry its Lambda context and a correlation id, as Powertools JSON.

(The streaming chat runtime's lines: tests/unit/chat/test_lambda_runtime.py.)
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.admin import table_browser
from chalicelib.chat import buffered as chat_buffered
from chalicelib.core import observability
from chalicelib.core.observability import correlation_id_of, logger
from tests.conftest import TEST_ADMIN_KEY
from tests.unit.chat.test_chat_events import function_url_event, rest_api_event

CONTEXT_KEYS = {"function_name", "function_memory_size", "function_arn", "function_request_id", "cold_start",
                "correlation_id"}
EXECUTION_ARN = "arn:aws:states:us-east-1:123456789012:execution:provision-test:replica-3-create"


@pytest.fixture
def failing_route(monkeypatch) -> None:
    """GET /v1/tables fails unexpectedly: Chalice logs the traceback, the error middleware a line of its own."""

    def broken() -> list[str]:
        raise RuntimeError("table listing broke")

    monkeypatch.setattr(table_browser, "table_names", broken)


def assert_context(line: dict[str, Any], correlation_id: str) -> None:
    assert CONTEXT_KEYS <= set(line), line
    assert line["correlation_id"] == correlation_id
    assert line["service"] == "hyperstack-llm-proxy"


# --- the admin API --------------------------------------------------------------------------------


def test_admin_request_lines_carry_the_request_id_and_the_callers_correlation_id(api, failing_route, log_lines):
    reply = api.get("/v1/tables", headers={"X-Correlation-Id": "ticket-1234"})

    lines = log_lines()
    assert reply.status == 500
    assert [line["message"] for line in lines] == ["Caught exception for path /v1/tables", "unhandled error"]
    for line in lines:
        assert_context(line, "ticket-1234")
    assert len({line["function_request_id"] for line in lines}) == 1
    assert "RuntimeError: table listing broke" in lines[0]["exception"]  # the traceback, in the same JSON
    assert TEST_ADMIN_KEY not in json.dumps(lines)


def test_admin_request_without_a_correlation_header_is_correlated_by_its_request_id(api, failing_route, log_lines):
    api.get("/v1/tables")

    for line in log_lines():
        assert_context(line, line["function_request_id"])


def test_rest_api_request_without_a_correlation_header_is_correlated_by_api_gateways_request_id(
        aws, failing_route, log_lines):
    from app import app

    event = rest_api_event(None, httpMethod="GET", path="/v1/tables", resource="/v1/tables", headers={
        "Authorization": f"Bearer {TEST_ADMIN_KEY}"}, multiValueHeaders=None)
    event["requestContext"].update(resourcePath="/v1/tables", httpMethod="GET", path="/api/v1/tables")

    reply = app(event, lambda_context("hyperstack-llm-proxy-prod", "lambda-request-1"))

    lines = log_lines()
    assert reply["statusCode"] == 500 and lines
    for line in lines:
        assert_context(line, event["requestContext"]["requestId"])
        assert line["function_request_id"] == "lambda-request-1"
        assert line["function_name"] == "hyperstack-llm-proxy-prod"


def test_no_context_key_outlives_the_request(api, failing_route, log_lines):
    api.get("/v1/tables", headers={"X-Correlation-Id": "ticket-1234"})
    logger.info("after the request")

    assert not CONTEXT_KEYS & set(log_lines()[-1])


# --- the Lambda functions -------------------------------------------------------------------------


def test_provision_lines_carry_its_context_and_the_workflow_execution_as_correlation_id(aws, monkeypatch, log_lines):
    from app import app
    from chalicelib.provisioning import tasks

    monkeypatch.setattr(tasks, "handle", lambda event: logger.info("step done", extra={"step": event["step"]}) or {})

    with Client(app) as client:
        client.lambda_.invoke("provision", {"step": "check_vm", "replica_id": 3, "execution_arn": EXECUTION_ARN})

    [line] = log_lines()
    assert_context(line, "replica-3-create")
    assert line["function_name"] == "provision"
    assert line["function_request_id"]


def test_buffered_chat_function_lines_carry_the_callers_correlation_id(aws, monkeypatch, log_lines):
    from app import app

    monkeypatch.setattr(chat_buffered, "lambda_response", lambda event: logger.info("answered") or {})
    event = function_url_event(b"{}")
    event["headers"]["x-request-id"] = "client-9"

    with Client(app) as client:
        client.lambda_.invoke("chat", event)

    [line] = log_lines()
    assert_context(line, "client-9")
    assert line["function_name"] == "chat"


# --- the correlation id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Correlation-Id": " ticket-1 "}, "ticket-1"),
        ({"x-request-id": "req-2", "X-CORRELATION-ID": "ticket-2"}, "ticket-2"),
        ({"X-Correlation-Id": "x" * 129, "X-Request-Id": "req-3"}, "req-3"),
        ({"X-Correlation-Id": "line\nbreak"}, None),
        ({"X-Correlation-Id": "naïve"}, None),
        ({"X-Correlation-Id": ""}, None),
        ({"Authorization": "Bearer sk-secret"}, None),
    ],
    ids=["trimmed", "correlation id first", "too long", "control character", "not ascii", "empty", "none"],
)
def test_a_callers_correlation_id_is_taken_only_if_short_and_printable(headers, expected):
    assert observability.caller_correlation_id(headers) == expected


def test_correlation_id_without_a_usable_header_is_the_http_request_id_then_the_lambda_one():
    event = function_url_event(b"", headers={"x-correlation-id": "\x00"})

    assert correlation_id_of(event, "lambda-1") == event["requestContext"]["requestId"]
    assert correlation_id_of({"headers": None, "requestContext": {}}, "lambda-1") == "lambda-1"
    assert correlation_id_of({"step": "teardown"}, "lambda-1") == "lambda-1"
    assert correlation_id_of([], "lambda-1") == "lambda-1"


def lambda_context(function_name: str, request_id: str) -> SimpleNamespace:
    return SimpleNamespace(function_name=function_name, memory_limit_in_mb=128, aws_request_id=request_id,
                           invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}")
