"""`POST /v1/chat/completions` as OpenAI and vLLM define it, in JSON Schema.

Only what the proxy must check is described; every other field (vLLM's `top_k`, `min_p`,
`guided_json`, ...) passes through to the replica untouched.
"""

from __future__ import annotations

from typing import Any


def _number(low: float, high: float) -> dict[str, Any]:
    return {"type": ["number", "null"], "minimum": low, "maximum": high}


_FUNCTION = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "description": {"type": "string"},
                   "parameters": {"type": "object"}},
}
_TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {"type": {"type": "string", "enum": ["function"]}, "function": _FUNCTION},
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        # null is legal for an assistant turn that only calls tools
        "content": {"type": ["string", "array", "null"], "items": {"type": "object"}},
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": {"type": "string"},
    },
}

CHAT_COMPLETION: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": ["boolean", "null"]}}},
        "temperature": _number(0, 2),
        "top_p": _number(0, 1),
        "presence_penalty": _number(-2, 2),
        "frequency_penalty": _number(-2, 2),
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
        "logit_bias": {"type": ["object", "null"], "additionalProperties": {"type": "number", "minimum": -100,
                                                                             "maximum": 100}},
        "logprobs": {"type": ["boolean", "null"]},
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
        "stop": {"type": ["string", "array", "null"], "items": {"type": "string"}},
        "seed": {"type": ["integer", "null"]},
        "user": {"type": ["string", "null"]},
        "tools": {"type": ["array", "null"], "items": _TOOL},
        "tool_choice": {"type": ["string", "object", "null"]},
        "response_format": {"type": ["object", "null"], "required": ["type"],
                            "properties": {"type": {"type": "string",
                                                    "enum": ["text", "json_object", "json_schema"]}}},
    },
}
