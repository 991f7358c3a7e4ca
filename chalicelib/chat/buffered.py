"""The chat service answered whole, where no streaming transport is at hand.

`chalice local`, Chalice's test client, and the `chat` function if it ever runs without its
streaming exec wrapper: the same answer, delivered at the end instead of as it is produced.
"""

from __future__ import annotations

from typing import Any

from chalicelib.chat.events import request_from_event
from chalicelib.chat.service import handle


def answer_whole(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], str]:
    response = handle(headers, body)
    try:
        payload = b"".join(response.body)
    finally:
        response.close()
    return response.status, response.headers, payload.decode("utf-8")


def lambda_response(event: dict[str, Any]) -> dict[str, Any]:
    """A buffered Lambda proxy result for a function URL or REST API event."""
    _, _, headers, body = request_from_event(event)
    status, response_headers, text = answer_whole(headers, body)
    return {"statusCode": status, "headers": response_headers, "body": text, "isBase64Encoded": False}
