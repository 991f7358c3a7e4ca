"""The data plane answered whole, where no streaming transport is at hand.

`chalice local`, Chalice's test client, `chalice deploy` (app.py's routes) and the `chat` function if it
ever runs without its streaming exec wrapper: the same answer, delivered at the end instead of as it is
produced.
"""

from __future__ import annotations

from typing import Any

from chalicelib.chat import operations
from chalicelib.chat.events import request_from_event
from chalicelib.chat.openai_errors import error_response
from chalicelib.chat.operations import CHAT, Operation
from chalicelib.chat.response import ChatResponse
from chalicelib.chat.service import handle
from chalicelib.core.errors import NotFound


def answer_whole(headers: dict[str, str], body: bytes, operation: Operation = CHAT) -> tuple[int, dict[str, str], str]:
    return _whole(handle(headers, body, operation=operation))


def lambda_response(event: dict[str, Any]) -> dict[str, Any]:
    """A buffered Lambda proxy result for a function URL or REST API event."""
    method, path, headers, body = request_from_event(event)
    operation = operations.for_path(path)
    if operation is None:
        response = error_response(NotFound(f"Unknown request URL: {method} {path}.", code="unknown_url"))
        status, response_headers, text = _whole(response)
    else:
        status, response_headers, text = answer_whole(headers, body, operation)
    return {"statusCode": status, "headers": response_headers, "body": text, "isBase64Encoded": False}


def _whole(response: ChatResponse) -> tuple[int, dict[str, str], str]:
    try:
        payload = b"".join(response.body)
    finally:
        response.close()
    return response.status, response.headers, payload.decode("utf-8")
