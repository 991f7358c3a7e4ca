"""Reading a chat completion request: the body as sent, checked, with what the proxy needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib import bounded_json
from chalicelib.chat.schema import CHAT_COMPLETION
from chalicelib.errors import BadRequest, PayloadTooLarge, ValidationFailed
from chalicelib.validation import validate

_TOOL_CHOICES = ("none", "auto", "required")


@dataclass(frozen=True)
class ChatRequest:
    body: dict[str, Any]  # what the client sent, forwarded as it is but for stream_options
    model: str
    stream: bool
    client_wants_usage: bool

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
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes.")
    body = bounded_json.loads(raw)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    validate(CHAT_COMPLETION, body, lenient=False)
    _check_cross_field_rules(body)
    stream = bool(body.get("stream"))
    wants_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
    return ChatRequest(body=body, model=body["model"], stream=stream, client_wants_usage=wants_usage)


def _check_cross_field_rules(body: dict[str, Any]) -> None:
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise ValidationFailed({"top_logprobs": ["top_logprobs can only be set if logprobs is True"]})
    if body.get("stream_options") is not None and not body.get("stream"):
        raise ValidationFailed({"stream_options": ["stream_options can only be set if stream is true"]})
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice not in _TOOL_CHOICES:
        raise ValidationFailed({"tool_choice": ["Must be one of: none, auto, required."]})
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
            raise ValidationFailed({"tool_choice": ['Must be {"type": "function", "function": {"name": ...}}.']})
        if not body.get("tools"):
            raise ValidationFailed({"tool_choice": ["tool_choice names a function but no tools are given."]})
