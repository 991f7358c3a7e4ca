"""The OpenAPI 3.1 document of the API, built from Chalice's route table and `openapi_operations`.

Only the admin app imports this module: the chat path never pays for it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from chalicelib.api.openapi_components import SCHEMAS, SECURITY_SCHEMES
from chalicelib.api.openapi_operations import OPERATIONS

TITLE = "Hyperstack LLM inference proxy"
VERSION = "1.0.0"
TAGS = [
    {"name": "models", "description": "LLM models: what clients send as `model`."},
    {"name": "replicas", "description": "The OpenAI-compatible servers behind a model."},
    {"name": "api keys", "description": "Users' keys for the OpenAI routes."},
    {"name": "usage", "description": "Usage summaries, from counters kept as requests are metered."},
    {"name": "tables", "description": "The original toolkit's raw table view."},
    {"name": "chat", "description": "The OpenAI-compatible routes relayed to replicas: chat completions, "
                                    "completions, embeddings."},
    {"name": "meta", "description": "This document."},
]


class UndocumentedRoute(Exception):
    """A route with no entry in the registry, or an entry with no route: the document would lie."""


def declared_operations(routes: Mapping[str, Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(path, method) of every route in a Chalice app's `routes` table."""
    return {(path, method) for path, methods in routes.items() for method in methods}


def build_document(routes: Mapping[str, Mapping[str, Any]], server_url: str) -> dict[str, Any]:
    declared = declared_operations(routes)
    missing, stale = declared - OPERATIONS.keys(), OPERATIONS.keys() - declared
    if missing or stale:
        raise UndocumentedRoute(f"undocumented routes: {sorted(missing)}; documented but absent: {sorted(stale)}")
    paths: dict[str, dict[str, Any]] = {}
    for path, method in sorted(declared):
        paths.setdefault(path, {})[method.lower()] = copy.deepcopy(OPERATIONS[(path, method)])
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION,
                 "description": "Admin routes take the admin key; the chat, completion and embeddings routes "
                                "take a user's key; "
                                "`GET /v1/models` and `GET /v1/models/{model_ref}` take either."},
        "servers": [{"url": server_url}],
        "tags": TAGS,
        "paths": paths,
        # Copied so that a client mutating its parsed document can never reach the validating schemas.
        "components": {"schemas": copy.deepcopy(SCHEMAS), "securitySchemes": SECURITY_SCHEMES},
    }


def server_url(headers: Mapping[str, str], context: Mapping[str, Any]) -> str:
    """The URL root this request came through: scheme and host, then the API Gateway stage if any."""
    lowered = {name.lower(): value for name, value in headers.items()}
    host = lowered.get("host") or "127.0.0.1"
    scheme = (lowered.get("x-forwarded-proto") or "http").split(",")[0].strip()
    stage = context.get("stage")
    return f"{scheme}://{host}" + (f"/{stage}" if stage else "")
