"""What a body's JSON Schema (chalicelib.chat.schema) cannot say: rules across fields, and one shape per list.

Each raises ValidationFailed naming the field, as a schema failure would: a 400 in OpenAI's shape.
"""

from __future__ import annotations

from typing import Any

from chalicelib.core.errors import ValidationFailed

_TOOL_CHOICES = ("none", "auto", "required")


def chat_rules(body: dict[str, Any]) -> None:
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise ValidationFailed({"top_logprobs": ["top_logprobs can only be set if logprobs is True"]})
    _stream_options_need_stream(body)
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice not in _TOOL_CHOICES:
        raise ValidationFailed({"tool_choice": ["Must be one of: none, auto, required."]})
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
            raise ValidationFailed({"tool_choice": ['Must be {"type": "function", "function": {"name": ...}}.']})
        if not body.get("tools"):
            raise ValidationFailed({"tool_choice": ["tool_choice names a function but no tools are given."]})


def completion_rules(body: dict[str, Any]) -> None:
    _stream_options_need_stream(body)
    _one_kind_of_item(body, "prompt")


def embedding_rules(body: dict[str, Any]) -> None:
    _one_kind_of_item(body, "input")


def _stream_options_need_stream(body: dict[str, Any]) -> None:
    if body.get("stream_options") is not None and not body.get("stream"):
        raise ValidationFailed({"stream_options": ["stream_options can only be set if stream is true"]})


def _one_kind_of_item(body: dict[str, Any], field: str) -> None:
    """A list prompt is all strings, all token ids, or all lists of token ids: never a mix."""
    value = body.get(field)
    if not isinstance(value, list) or not value:
        return
    kind = type(value[0])  # the schema has let through only str, int (never bool) and list items
    for index, item in enumerate(value):
        if type(item) is not kind:
            raise ValidationFailed({field: {str(index): [
                "Must be a string, a list of strings, a list of token ids or a list of lists of token ids."]}})
