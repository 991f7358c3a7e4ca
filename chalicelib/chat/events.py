"""The HTTP request inside a Lambda event, from a function URL or from API Gateway's REST API.

Function URLs send payload format 2.0: `requestContext.http.method`, `rawPath`, lower-case `headers`
whose repeated values are already comma-joined, and cookies apart in `cookies`. The REST API's Lambda
proxy integration sends format 1.0: `httpMethod`, `path` (without the stage, which only
`requestContext.path` carries), headers as sent (any case, possibly null) and every value of a
repeated header in `multiValueHeaders`. Either may base64-encode the body (`isBase64Encoded`).

Standard library only: this runs on the chat function's cold start.
"""

from __future__ import annotations

import base64
from typing import Any, NamedTuple


class HttpRequest(NamedTuple):
    method: str  # upper case
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


def request_from_event(event: dict[str, Any]) -> HttpRequest:
    """(method, path, headers with lower-case names, raw body) of a function URL or REST API event."""
    http = (event.get("requestContext") or {}).get("http")
    if isinstance(http, dict):
        method, path, headers = http["method"], event.get("rawPath") or http.get("path") or "/", _v2_headers(event)
    elif "httpMethod" in event:
        method, path, headers = event["httpMethod"], event.get("path") or "/", _v1_headers(event)
    else:
        raise ValueError("not an HTTP event: neither a function URL (2.0) nor a REST API proxy (1.0) payload")
    return HttpRequest(method.upper(), path, headers, _body(event))


def _v2_headers(event: dict[str, Any]) -> dict[str, str]:
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    # Function URLs take the Cookie header apart into `cookies`; the service sees it as sent.
    if event.get("cookies"):
        headers["cookie"] = "; ".join(event["cookies"])
    return headers


def _v1_headers(event: dict[str, Any]) -> dict[str, str]:
    # multiValueHeaders has every value of a repeated header; `headers` keeps only the last one.
    multi = event.get("multiValueHeaders") or {name: [value] for name, value in (event.get("headers") or {}).items()}
    joined: dict[str, list[str]] = {}
    for name, values in multi.items():
        joined.setdefault(name.lower(), []).extend(values or [])
    # Joined with a bare comma, as function URLs do, so both transports hand the service the same text.
    return {name: ",".join(values) for name, values in joined.items()}


def _body(event: dict[str, Any]) -> bytes:
    body = event.get("body")
    if not body:
        return b""
    if event.get("isBase64Encoded"):
        return base64.b64decode(body)
    return body.encode("utf-8")
