"""Reading a request of one of the relayed operations: the body as sent, checked, with what the proxy needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chalicelib import bounded_json
from chalicelib.chat.operations import CHAT, Operation
from chalicelib.errors import BadRequest, PayloadTooLarge
from chalicelib.validation import validate


@dataclass(frozen=True)
class ChatRequest:
    body: dict[str, Any]  # what the client sent, forwarded as it is but for stream_options
    model: str
    stream: bool
    client_wants_usage: bool
    operation: Operation = field(default=CHAT)

    def upstream_body(self) -> bytes:
        """The body for the replica: streams always ask for usage, which the proxy meters."""
        body = self.body
        if self.stream:
            body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
        return _utf8_json(body)


def _utf8_json(value: Any) -> bytes:
    """JSON as UTF-8. Not escaped to ASCII: a 4-byte character would take 12 bytes, twice (str and bytes),
    and a body may hold 4 MiB of them. Only a lone surrogate (legal as a JSON escape, not in UTF-8) needs escaping."""
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value).encode()


def parse_chat_request(raw: bytes, max_bytes: int) -> ChatRequest:
    return parse_request(raw, max_bytes, CHAT)


def parse_request(raw: bytes, max_bytes: int, operation: Operation) -> ChatRequest:
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes.")
    body = bounded_json.loads(raw)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    validate(operation.schema, body, lenient=False)
    operation.rules(body)
    # An operation that cannot stream (embeddings) forwards a `stream` key as it came, for the replica to judge.
    stream = operation.can_stream and bool(body.get("stream"))
    wants_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
    return ChatRequest(body=body, model=body["model"], stream=stream, client_wants_usage=wants_usage,
                       operation=operation)
