"""Reading a request of one of the relayed operations: the body as sent, checked, with what the proxy needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chalicelib.chat.operations import CHAT, Operation
from chalicelib.core import bounded_json
from chalicelib.core.errors import BadRequest, PayloadTooLarge
from chalicelib.core.validation import validate


@dataclass(frozen=True)
class ChatRequest:
    body: dict[str, Any]  # what the client sent, forwarded as it is but for stream_options
    model: str
    stream: bool
    client_wants_usage: bool  # the final usage chunk (`include_usage`)
    operation: Operation = field(default=CHAT)
    client_wants_running_usage: bool = False  # usage in every chunk too (vLLM's `continuous_usage_stats`)

    def upstream_body(self) -> bytes:
        """The body for the replica: streams always ask for usage, in every chunk too (vLLM's running usage), so
        that a stream cut at any point is metered up to where it was cut. What the client did not ask for is
        taken out of the events again before they reach it (chalicelib.chat.relay)."""
        body = self.body
        if self.stream:
            asked = body.get("stream_options") or {}
            body = {**body, "stream_options": {**asked, "include_usage": True, "continuous_usage_stats": True}}
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
    options = (body.get("stream_options") or {}) if stream else {}
    wants_usage = bool(options.get("include_usage"))
    # As vLLM reads them: running usage only comes with the final usage chunk.
    wants_running_usage = wants_usage and bool(options.get("continuous_usage_stats"))
    return ChatRequest(body=body, model=body["model"], stream=stream, client_wants_usage=wants_usage,
                       operation=operation, client_wants_running_usage=wants_running_usage)
