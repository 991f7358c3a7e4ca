"""Response bodies and security schemes of the API, as OpenAPI 3.1 components.

Request bodies are not here: they are the schemas that validate requests (`chalicelib.admin.schemas`,
`chalicelib.chat.schema`), published as they are. These describe what the code answers, so the
fuzzer's response checks hold the code to them.
"""

from __future__ import annotations

from typing import Any

from chalicelib.admin.schemas import (
    AUTOSCALING,
    CREATE_MODEL,
    CREATE_REPLICA,
    DELETE_API_KEY,
    GENERATE_API_KEY,
    LENIENT_BOOLEAN,
    LENIENT_BOOLEAN_COMPONENT,
    RETRY_REPLICA,
    UPDATE_REPLICA,
)
from chalicelib.chat.schema import CHAT_COMPLETION, COMPLETION, EMBEDDING

_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_INTEGER = {"type": ["integer", "null"]}
_ID = {"type": "integer", "minimum": 1}
_COUNT_OF = {"type": "integer", "minimum": 0, "description": "The model's replicas in this state now."}
_TIMESTAMP = {"type": ["string", "null"], "description": "ISO 8601"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": required if required is not None else list(properties),
            "properties": properties}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _event(data: str) -> dict[str, Any]:
    """One server-sent event: OpenAPI 3.1 has no itemSchema, so tools (schemathesis) read a stream's `schema`
    as each event's, parsed into its fields."""
    return _object({"data": {**_STRING, "description": data}, "event": _STRING, "id": _STRING,
                    "retry": {"type": "integer"}}, required=["data"])


_MODEL = _object({"id": _ID, "name": _STRING, "created_at": _TIMESTAMP})
_REPLICA = _object({
    "id": _ID, "model_id": _ID, "endpoint": _NULLABLE_STRING, "rate_limit": _NULLABLE_INTEGER,
    "vm_status": _NULLABLE_STRING, "vm_id": _NULLABLE_INTEGER, "error_message": _NULLABLE_STRING,
    "name": _NULLABLE_STRING, "environment_name": _NULLABLE_STRING, "image_name": _NULLABLE_STRING,
    "flavor_name": _NULLABLE_STRING, "key_name": _NULLABLE_STRING, "port": _NULLABLE_INTEGER,
    "run_command": _NULLABLE_STRING, "assign_floating_ip": {"type": ["boolean", "null"]}, "created_at": _TIMESTAMP,
    "hibernate_after_seconds": {**_NULLABLE_INTEGER, "description": "Hibernate after this long idle (null: never)."},
    "wake_seconds": {**_NULLABLE_INTEGER, "description": "How long its last wake from hibernation took."},
    "autoscaled": {"type": "boolean", "description": "Made by the model's autoscaling."},
})
_SCALING_STATE = _object({
    "desired_replicas": {**_NULLABLE_INTEGER, "description": "What the last decision wanted (null: none yet)."},
    "reason": {**_STRING, "description": "Why: the load, what it needs, and what held the scaler back."},
    "decided_at": _TIMESTAMP,
    "load_requests_per_minute": {"type": ["number", "null"]},
    "serving": _COUNT_OF, "starting": _COUNT_OF, "waking": _COUNT_OF, "hibernating": _COUNT_OF, "hibernated": _COUNT_OF,
    "failed_creates": {"type": "array", "description": "Creates that failed lately (they back further ones off).",
                       "items": _object({"replica_id": _ID, "at": _TIMESTAMP, "reason": _STRING})},
})
_AUTOSCALING = _object({
    "model_id": _ID,
    **{name: {**_NULLABLE_INTEGER, "description": AUTOSCALING["properties"][name].get("description", "")}
       for name in ("min_replicas", "max_replicas", "target_requests_per_minute", "scale_in_after_seconds",
                    "hibernate_after_seconds", "rate_limit")},
    "vm_creation_details": {"type": "object", "description": "The template of the replicas it makes, as sent, "
                                                             "its `secrets` by name only."},
    "updated_at": _TIMESTAMP,
    "state": _SCALING_STATE,
})
_API_KEY = _object({
    "id": _ID, "user_id": _STRING,
    "api_key": {**_STRING, "description": "The plaintext key at creation (shown once); masked `hsk_...abcd` after."},
    "allowed_rpm": {"type": "integer"}, "enabled": {"type": "boolean"},
    "models": {"type": ["array", "null"], "items": _STRING}, "expires_at": _TIMESTAMP, "created_at": _TIMESTAMP,
    "token_budget": {**_NULLABLE_INTEGER, "description": "Total tokens per calendar month (UTC); null: none."},
    "month_tokens": {"type": "integer", "description": "Tokens used this calendar month (UTC)."},
})
_COUNT = {"type": "integer", "minimum": 0}
_USAGE_ROW = _object({
    "group": {"type": ["string", "integer"], "description": "The model, the user_id or the api_key_id."},
    "period": {**_STRING, "description": "The day's or hour's start (ISO 8601, UTC), when `granularity` is given."},
    "requests": _COUNT, "prompt_tokens": _COUNT, "completion_tokens": _COUNT, "total_tokens": _COUNT,
    "errors": {**_COUNT, "description": "Requests answered with a status of 400 or more (499: the client left)."},
}, required=["group", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors"])

SCHEMAS: dict[str, Any] = {
    # Requests: the validating schemas themselves.
    "CreateModelRequest": CREATE_MODEL,
    "CreateReplicaRequest": CREATE_REPLICA,
    "UpdateReplicaRequest": UPDATE_REPLICA,
    "RetryReplicaRequest": RETRY_REPLICA,
    "AutoscalingRequest": AUTOSCALING,
    "GenerateApiKeyRequest": GENERATE_API_KEY,
    "DeleteApiKeyRequest": DELETE_API_KEY,
    "CreateChatCompletionRequest": CHAT_COMPLETION,
    "CreateCompletionRequest": COMPLETION,
    "CreateEmbeddingRequest": EMBEDDING,
    # What their lenient booleans refer to, for client generators.
    LENIENT_BOOLEAN_COMPONENT: LENIENT_BOOLEAN,
    # Responses.
    "Error": _object({"error": _STRING}),
    "ValidationErrors": _object({"errors": {
        "type": "object",
        "description": "Messages per field; nested objects for nested fields, list positions as keys.",
    }}),
    "OpenAIError": _object({"error": _object({
        "message": _STRING, "type": _STRING, "param": _NULLABLE_STRING, "code": _NULLABLE_STRING,
    })}),
    "Model": _MODEL,
    "ModelWithReplicas": {
        **_MODEL, "required": [*_MODEL["required"], "replicas"],
        "properties": {**_MODEL["properties"], "replicas": {"type": "array", "items": ref("Replica")}},
    },
    "ModelCreated": _object({"model_name": _STRING, "id": _ID}),
    # OpenAI's, as a user's key sees them: the models it may use that have a serving replica.
    "OpenAIModel": _object({
        "id": {**_STRING, "description": "The model's name: what a client sends as `model`."},
        "object": {"type": "string", "const": "model"},
        "created": {"type": "integer", "description": "When the model was registered, in Unix seconds."},
        "owned_by": _STRING,
    }),
    "OpenAIModelList": _object({
        "object": {"type": "string", "const": "list"}, "data": {"type": "array", "items": ref("OpenAIModel")},
    }),
    "Replica": _REPLICA,
    "ReplicaCreated": _object({"replica_id": _ID}),
    "Autoscaling": _AUTOSCALING,
    "ApiKey": _API_KEY,
    "Message": _object({"message": _STRING}),
    "UsageSummary": _object({"data": {"type": "array", "items": _USAGE_ROW}, "start": _STRING, "end": _STRING}),
    "TableNames": _object({"tables": {"type": "array", "items": _STRING}}),
    "TablePage": _object({"data": {"type": "array", "items": {"type": "object"}}, "next_token": _NULLABLE_STRING}),
    "ChatCompletion": _object({
        "id": _STRING, "object": {"type": "string", "const": "chat.completion"}, "created": {"type": "integer"},
        "model": _STRING, "choices": {"type": "array", "items": {"type": "object"}}, "usage": {"type": "object"},
    }, required=["id", "object", "created", "model", "choices"]),
    "ChatCompletionEvent": _event("A `chat.completion.chunk` as JSON; `[DONE]` last."),
    "Completion": _object({
        "id": _STRING, "object": {"type": "string", "const": "text_completion"}, "created": {"type": "integer"},
        "model": _STRING, "choices": {"type": "array", "items": {"type": "object"}}, "usage": {"type": "object"},
    }, required=["id", "object", "created", "model", "choices"]),
    "CompletionEvent": _event("A `text_completion` chunk as JSON (`choices[].text`); `[DONE]` last."),
    "EmbeddingList": _object({
        "object": {"type": "string", "const": "list"},
        "data": {"type": "array", "items": _object({
            "index": {"type": "integer"}, "object": {"type": "string", "const": "embedding"},
            "embedding": {"type": ["array", "string"], "items": {"type": "number"},
                          "description": "The vector, or with `encoding_format: base64` the base64 of its "
                                         "little-endian float32 array."},
        })},
        "model": _STRING, "usage": {"type": "object"},
    }, required=["object", "data", "model"]),
}

SECURITY_SCHEMES: dict[str, Any] = {
    "adminKey": {"type": "http", "scheme": "bearer", "description": "The deployment's ADMIN_API_KEY."},
    "userKey": {"type": "http", "scheme": "bearer", "bearerFormat": "hsk_...",
                "description": "A user's API key from `POST /v1/generate_api_key`."},
}
