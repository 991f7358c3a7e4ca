"""The data plane answered whole, where no streaming transport is at hand.

`chalice local`, Chalice's test client, `chalice deploy` (app.py's routes) and the `chat` function if it
ever runs without its streaming exec wrapper: the same answer, delivered at the end instead of as it is
produced.
"""

from __future__ import annotations

import time
from typing import Any

from chalicelib.chat import operations
from chalicelib.chat.events import request_from_event
from chalicelib.chat.openai_errors import error_response
from chalicelib.chat.operations import CHAT, Operation
from chalicelib.chat.response import ChatResponse
from chalicelib.chat.service import handle
from chalicelib.core.errors import NotFound
from chalicelib.core.settings import get_chat_settings

# Left for API Gateway to pass the answer on, once the function has returned it.
GATEWAY_MARGIN_SECONDS = 1.0


def answer_whole(headers: dict[str, str], body: bytes, operation: Operation = CHAT,
                 remaining_seconds: float | None = None) -> tuple[int, dict[str, str], str]:
    """The answer whole, within API Gateway's time (BUFFERED_ANSWER_SECONDS) and the invocation's
    (`remaining_seconds`, when Lambda says): past it the replica is cut and the caller told 504, usage metered."""
    allowed = get_chat_settings().buffered_answer_seconds - GATEWAY_MARGIN_SECONDS
    if remaining_seconds is not None:
        allowed = min(allowed, remaining_seconds)
    return _whole(handle(headers, body, deadline=time.time() + allowed, operation=operation))


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
