"""The HTTP request inside a Lambda event: function URL (payload 2.0) and REST API proxy (payload 1.0)."""

import base64
import json

import pytest

from chalicelib.chat.events import request_from_event

CHAT_BODY = {"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "Hi"}]}


def function_url_event(body: bytes = b"", *, base64_body: bool = False, **overrides):
    """A function URL invocation as Lambda delivers it (payload format 2.0)."""
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/chat/completions",
        "rawQueryString": "",
        "cookies": ["session=abc", "theme=dark"],
        "headers": {
            "authorization": "Bearer sk-test",
            "content-type": "application/json",
            "accept": "text/event-stream,application/json",
            "host": "abcdefghij.lambda-url.us-east-1.on.aws",
            "x-amzn-trace-id": "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-proto": "https",
            "x-forwarded-port": "443",
        },
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghij",
            "domainName": "abcdefghij.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghij",
            "http": {
                "method": "POST",
                "path": "/v1/chat/completions",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "OpenAI/Python 1.51.0",
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:08:00:00 +0000",
            "timeEpoch": 1795593600000,
        },
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }
    return event | overrides


def rest_api_event(body: bytes | None = b"", *, base64_body: bool = False, **overrides):
    """An API Gateway REST API Lambda proxy invocation (payload format 1.0), stage `api`."""
    event = {
        "resource": "/v1/chat/completions",
        "path": "/v1/chat/completions",
        "httpMethod": "POST",
        "headers": {
            "Accept": "application/json",
            "Authorization": "Bearer sk-test",
            "Content-Type": "application/json",
            "Host": "abcdefghij.execute-api.us-east-1.amazonaws.com",
            "X-Forwarded-For": "198.51.100.1",
        },
        "multiValueHeaders": {
            "Accept": ["application/json"],
            "Authorization": ["Bearer sk-test"],
            "Content-Type": ["application/json"],
            "Host": ["abcdefghij.execute-api.us-east-1.amazonaws.com"],
            "X-Forwarded-For": ["198.51.100.1"],
        },
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "a1b2c3",
            "resourcePath": "/v1/chat/completions",
            "httpMethod": "POST",
            "path": "/api/v1/chat/completions",
            "stage": "api",
            "protocol": "HTTP/1.1",
            "requestId": "9f8e7d6c-0000-4000-8000-123456789abc",
            "accountId": "123456789012",
            "apiId": "abcdefghij",
            "identity": {"sourceIp": "198.51.100.1", "userAgent": "curl/8.5.0"},
        },
        "body": (base64.b64encode(body).decode() if base64_body else body.decode()) if body is not None else None,
        "isBase64Encoded": base64_body,
    }
    return event | overrides


def test_function_url_event_gives_method_raw_path_headers_and_body():
    raw = json.dumps(CHAT_BODY).encode()

    method, path, headers, body = request_from_event(function_url_event(raw))

    assert (method, path, body) == ("POST", "/v1/chat/completions", raw)
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["accept"] == "text/event-stream,application/json"


def test_function_url_cookies_come_back_as_one_cookie_header():
    _, _, headers, _ = request_from_event(function_url_event(b"{}"))

    assert headers["cookie"] == "session=abc; theme=dark"


def test_function_url_base64_body_is_decoded_to_the_bytes_sent():
    raw = "{\"content\": \"h\u00e9llo \u2603\"}".encode() + b"\xff"

    _, _, _, body = request_from_event(function_url_event(raw, base64_body=True))

    assert body == raw


def test_function_url_event_without_body_or_cookies_gives_empty_body():
    event = function_url_event()
    del event["body"], event["cookies"]

    method, _, headers, body = request_from_event(event)

    assert (method, body) == ("POST", b"")
    assert "cookie" not in headers


def test_rest_api_event_gives_path_without_the_stage_and_lower_case_headers():
    raw = json.dumps(CHAT_BODY).encode()

    method, path, headers, body = request_from_event(rest_api_event(raw))

    assert (method, path, body) == ("POST", "/v1/chat/completions", raw)
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in headers)


def test_rest_api_repeated_header_keeps_every_value_comma_joined():
    event = rest_api_event(b"{}")
    event["headers"]["Accept"] = "text/event-stream"  # API Gateway keeps the last value here
    event["multiValueHeaders"]["Accept"] = ["application/json", "text/event-stream"]
    event["multiValueHeaders"]["accept"] = ["*/*"]  # the same name in another case

    _, _, headers, _ = request_from_event(event)

    assert headers["accept"] == "application/json,text/event-stream,*/*"


def test_rest_api_null_headers_and_null_body_give_empty_values():
    event = rest_api_event(None, headers=None, multiValueHeaders=None)

    method, path, headers, body = request_from_event(event)

    assert (method, path, headers, body) == ("POST", "/v1/chat/completions", {}, b"")


def test_rest_api_headers_are_used_when_multi_value_headers_are_absent():
    event = rest_api_event(b"{}")
    del event["multiValueHeaders"]

    _, _, headers, _ = request_from_event(event)

    assert headers["authorization"] == "Bearer sk-test"


def test_rest_api_base64_body_is_decoded():
    raw = b"\x00\x01binary\xfe"

    _, _, _, body = request_from_event(rest_api_event(raw, base64_body=True))

    assert body == raw


def test_method_is_upper_case_whatever_the_event_says():
    event = function_url_event(b"")
    event["requestContext"]["http"]["method"] = "get"

    method, _, _, _ = request_from_event(event)

    assert method == "GET"


@pytest.mark.parametrize("event", [{}, {"Records": [{"eventSource": "aws:sqs"}]}, {"requestContext": {}}])
def test_an_event_that_is_not_an_http_request_is_refused(event):
    with pytest.raises(ValueError, match="not an HTTP event"):
        request_from_event(event)
