"""The bodies of `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings` as OpenAI and vLLM
define them, in JSON Schema.

Only what the proxy must check is described; every other field (vLLM's `top_k`, `min_p`,
`guided_json`, `truncate_prompt_tokens`, ...) passes through to the replica untouched. What this subset
of JSON Schema cannot say (a prompt list is all strings, all token ids or all token id lists) is checked
in `chalicelib.chat.rules`.
"""

from __future__ import annotations

from typing import Any

from chalicelib.store.key_limits import MODEL_NAME_MAX_BYTES, MODEL_NAME_MAX_LENGTH


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
        "model": {"type": "string", "minLength": 1, "maxLength": MODEL_NAME_MAX_LENGTH,
                  "x-max-utf8-bytes": MODEL_NAME_MAX_BYTES},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {"type": ["object", "null"], "properties": {
            "include_usage": {"type": ["boolean", "null"]},
            "continuous_usage_stats": {"type": ["boolean", "null"]},  # vLLM's: usage in every chunk
        }},
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


# A prompt or an embedding input: a string, or a list of strings, of token ids, or of lists of token ids.
# The subset the validator knows has no anyOf: the list's items are one of the three, and rules.py checks
# that they are all of the same one.
_TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}


def _prompt(min_length: int) -> dict[str, Any]:
    return {"type": ["string", "array"], "minLength": min_length, "minItems": 1,
            "items": {"type": ["string", "integer", "array"], "minLength": min_length, "minimum": 0,
                      "minItems": 1, "items": {"type": "integer", "minimum": 0}}}


COMPLETION: dict[str, Any] = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": CHAT_COMPLETION["properties"]["model"],
        # An empty string is a prompt (the model starts from its BOS token); an empty list is not.
        "prompt": _prompt(0),
        "suffix": {"type": ["string", "null"]},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": CHAT_COMPLETION["properties"]["stream_options"],
        "echo": {"type": ["boolean", "null"]},
        "temperature": _number(0, 2),
        "top_p": _number(0, 1),
        "presence_penalty": _number(-2, 2),
        "frequency_penalty": _number(-2, 2),
        # 0 is legal with `echo`: the prompt scored, nothing generated.
        "max_tokens": {"type": ["integer", "null"], "minimum": 0},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
        "best_of": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
        "logit_bias": CHAT_COMPLETION["properties"]["logit_bias"],
        # The most a replica returns is its own setting (vLLM's --max-logprobs, 20 by default): it refuses more.
        "logprobs": {"type": ["integer", "null"], "minimum": 0},
        "stop": CHAT_COMPLETION["properties"]["stop"],
        "seed": {"type": ["integer", "null"]},
        "user": {"type": ["string", "null"]},
    },
}

EMBEDDING: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": CHAT_COMPLETION["properties"]["model"],
        "input": _prompt(1),  # OpenAI: not an empty string, nor an empty list
        "encoding_format": {"type": ["string", "null"], "enum": ["float", "base64", None]},
        "dimensions": {"type": ["integer", "null"], "minimum": 1},
        "user": {"type": ["string", "null"]},
    },
}
