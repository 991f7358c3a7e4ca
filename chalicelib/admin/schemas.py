"""Request schemas of the admin API, as JSON Schema (validated by `chalicelib.core.validation`).

Bounds that are contracts live here and nowhere else.
"""

from __future__ import annotations

from typing import Any

from chalicelib.core.validation import boolean, integer
from chalicelib.core.vm_naming import ENV_NAME_PATTERN
from chalicelib.store.key_limits import MODEL_NAME_MAX_BYTES, MODEL_NAME_MAX_LENGTH

MAX_ID = 2**53 - 1  # ids stay exact as JSON numbers in every client
DEFAULT_ALLOWED_RPM = 160  # the original toolkit's default
MAX_ALLOWED_RPM = 1_000_000
MAX_TOKEN_BUDGET = MAX_ID
# C0, DEL and C1 controls: a name is shown in logs, tables and the admin pages, and sent on to Hyperstack.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
# Controls and every space of ECMA-262's and Python's \s, spelled out so both engines read it alike.
_SPACE_OR_CONTROL = _CONTROL + r" \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
MODEL_NAME_PATTERN = rf"^[^{_SPACE_OR_CONTROL}%?#/][^{_SPACE_OR_CONTROL}%?#]*(?<!/)$"
NO_CONTROL_PATTERN = rf"^[^{_CONTROL}]*$"
MAX_SECRETS = 32


def _string(max_length: int, min_length: int = 1) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, "maxLength": max_length}


# A lenient boolean as client generators can type it: a union of its three forms. Generators cannot make one type
# of an enum mixing booleans, integers and strings (openapi-python-client skipped POST /v1/models/{model_ref}/replicas
# over it), but they read a property that is a lone `allOf` reference through that reference. JSON Schema reads
# both, which allow the same values; our validator reads only `type` and `enum`: what the API accepts, and what it
# answers, stay as they were. `chalicelib.api.openapi_components` publishes it under this name.
LENIENT_BOOLEAN_COMPONENT = "LenientBoolean"
_BOOLEAN_STRINGS = [choice for choice in boolean(default=False)["enum"] if isinstance(choice, str)]
LENIENT_BOOLEAN: dict[str, Any] = {
    "anyOf": [
        {"type": "boolean"},
        {"type": "integer", "minimum": 0, "maximum": 1},
        # A pattern, not an enum: 'true', 'True' and 'TRUE' would each want the generated enum member TRUE.
        {"type": "string", "pattern": f"^(?:{'|'.join(_BOOLEAN_STRINGS)})$"},
    ],
    "description": "true or false; also read as such: 1 or 0, and the strings "
                   + ", ".join(f'"{choice}"' for choice in _BOOLEAN_STRINGS) + ".",
}


def _boolean(default: bool) -> dict[str, Any]:
    """`boolean`, described for generators by `LENIENT_BOOLEAN` too."""
    return {**boolean(default), "allOf": [{"$ref": f"#/components/schemas/{LENIENT_BOOLEAN_COMPONENT}"}]}


def _name(max_length: int, min_length: int = 1) -> dict[str, Any]:
    return {**_string(max_length, min_length), "pattern": NO_CONTROL_PATTERN,
            "x-pattern-message": "Must not contain control characters."}


# A model's name is part of DynamoDB keys: bounded in bytes as well as in characters, here and on the chat routes.
MODEL_NAME: dict[str, Any] = {
    **_string(MODEL_NAME_MAX_LENGTH),
    "x-max-utf8-bytes": MODEL_NAME_MAX_BYTES,
    "pattern": MODEL_NAME_PATTERN,
    "x-pattern-message": "Must not contain spaces, '%', '?' or '#', nor start or end with '/'.",
}

GENERATE_API_KEY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user_id"],
    "properties": {
        "user_id": _name(256),
        "allowed_rpm": {**integer(1, MAX_ALLOWED_RPM), "default": DEFAULT_ALLOWED_RPM},
        "models": {"type": ["array", "null"], "items": MODEL_NAME, "maxItems": 100},
        # ISO 8601 (a bare date-time is taken as UTC) or Unix seconds; see chalicelib.admin.api_keys.
        # No controls: datetime.fromisoformat reads '...T00:00:00\x00' as if the NUL were not there.
        "expires_at": {"type": ["string", "integer", "null"], "pattern": NO_CONTROL_PATTERN,
                       "x-pattern-message": "Not a valid datetime."},
        "token_budget": {**integer(1, MAX_TOKEN_BUDGET, nullable=True),
                         "description": "Total tokens the key may use per calendar month (UTC); null: no budget. "
                                        "Checked when a request starts: the one that reaches it may end over it."},
    },
}

DELETE_API_KEY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user_id", "api_key_id"],
    "properties": {"user_id": _name(256, min_length=0), "api_key_id": integer(1, MAX_ID)},
}

CREATE_MODEL: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": MODEL_NAME},
}

PORT: dict[str, Any] = integer(0, 65535)

SECURITY_RULE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port_range_min", "port_range_max"],
    "properties": {
        "direction": {"type": "string", "enum": ["ingress", "egress"], "default": "ingress"},
        "protocol": {"type": "string", "enum": ["tcp", "udp"], "default": "tcp"},
        "ethertype": {"type": "string", "enum": ["IPv4", "IPv6"], "default": "IPv4"},
        "remote_ip_prefix": _string(64),
        "port_range_min": PORT,
        "port_range_max": PORT,
    },
}

# A replica's bearer credential: sent upstream in an HTTP header, so visible ASCII only (no spaces,
# no controls: a header cannot carry them, and urllib3 would fail on anything outside Latin-1).
REPLICA_API_KEY: dict[str, Any] = {
    "type": ["string", "null"], "minLength": 1, "maxLength": 1024, "pattern": r"^[!-~]*$",
    "x-pattern-message": "Must be visible ASCII characters, without spaces.", "writeOnly": True,
    "description": ("A replica given by URL: sent to it as `Authorization: Bearer <api_key>`; never shown back. "
                    "null: none. A provisioned replica's key is made by the proxy and cannot be set."),
}

# Environment variables of the VM's run command (a Hugging Face token, say): written into the VM's
# user_data, never shown back. Bounded: Hyperstack keeps user_data whole, and so does the table row.
VM_SECRETS: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_SECRETS,
    "propertyNames": {"type": "string", "maxLength": 128, "pattern": ENV_NAME_PATTERN,
                      "x-pattern-message": "Not a valid environment variable name."},
    "additionalProperties": {"type": "string", "maxLength": 4096, "pattern": NO_CONTROL_PATTERN,
                             "x-pattern-message": "Must not contain control characters."},
    "writeOnly": True,
    "description": "Environment variables of the run command (name: value); never shown back.",
}

VM_CREATION_DETAILS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "environment_name", "image_name", "flavor_name", "key_name", "port", "run_command"],
    "properties": {
        "name": {
            **_string(50),
            "pattern": r"^[A-Za-z0-9-]([A-Za-z0-9 -]*[A-Za-z0-9-])?$",
            "x-pattern-message": (
                "Invalid name format. Name must not start or end with a space "
                "and can contain alphanumeric characters, spaces, and hyphens."
            ),
        },
        "environment_name": _name(256),
        "image_name": _name(256),
        "flavor_name": _name(256),
        "key_name": _name(256),
        "port": integer(1, 65535),
        "run_command": _string(16 * 1024),
        "assign_floating_ip": _boolean(default=True),
        "security_rules": {"type": "array", "items": SECURITY_RULE, "maxItems": 20},
        "secrets": VM_SECRETS,
    },
}

# A week at most: longer idle than that is better served by deleting the replica.
MAX_HIBERNATE_AFTER_SECONDS = 7 * 24 * 3600
HIBERNATE_AFTER_SECONDS: dict[str, Any] = {
    **integer(1, MAX_HIBERNATE_AFTER_SECONDS, nullable=True),
    "description": ("A provisioned replica: hibernate its VM after this many seconds without a request (null: "
                    "never). It wakes on the next request."),
}

CREATE_REPLICA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "endpoint": {"type": ["string", "null"], "maxLength": 2048},
        "rate_limit": integer(1, MAX_ALLOWED_RPM, nullable=True),
        "create_vm": _boolean(default=False),
        "vm_creation_details": VM_CREATION_DETAILS,
        "api_key": REPLICA_API_KEY,
        "hibernate_after_seconds": HIBERNATE_AFTER_SECONDS,
    },
}

# Fields present are set (null clears them), absent ones stay. An empty body names rate_limit as
# missing, as the original did when rate_limit was the only field.
UPDATE_REPLICA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "x-missing-when-empty": ["rate_limit"],
    "properties": {"rate_limit": integer(1, MAX_ALLOWED_RPM, nullable=True), "api_key": REPLICA_API_KEY,
                   "hibernate_after_seconds": HIBERNATE_AFTER_SECONDS},
}

# Retrying a FAILED provisioned replica: its secrets, which its failed attempt's VM took with it, given again.
RETRY_REPLICA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"secrets": VM_SECRETS},
}

# Autoscaling (chalicelib/admin/autoscaling.py). A fleet bound: a model's replicas are read whole by its scaler.
MAX_REPLICAS = 64
MAX_SCALE_IN_AFTER_SECONDS = 7 * 24 * 3600
AUTOSCALING: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["min_replicas", "max_replicas", "target_requests_per_minute", "scale_in_after_seconds",
                 "vm_creation_details"],
    "properties": {
        "min_replicas": {**integer(0, MAX_REPLICAS),
                         "description": "Replicas kept serving with no load (0: the model scales to zero)."},
        "max_replicas": {**integer(1, MAX_REPLICAS),
                         "description": "Replicas the model may have at once, serving, starting or hibernated, "
                                        "those made by hand included. At least min_replicas."},
        "target_requests_per_minute": {**integer(1, MAX_ALLOWED_RPM),
                                       "description": "The load one serving replica should carry."},
        "scale_in_after_seconds": {**integer(1, MAX_SCALE_IN_AFTER_SECONDS),
                                   "description": "How long load must stay below what one replica fewer would "
                                                  "carry before one goes."},
        "vm_creation_details": VM_CREATION_DETAILS,
        "hibernate_after_seconds": HIBERNATE_AFTER_SECONDS,
        "rate_limit": integer(1, MAX_ALLOWED_RPM, nullable=True),
    },
}
