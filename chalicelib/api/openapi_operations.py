"""What the route table cannot say about each operation: ids, parameters, bodies, answers, links.

Keyed by (path as declared, method). `chalicelib.api.openapi` joins it with Chalice's route table,
and refuses a route that has no entry here (and an entry that names no route).
"""

from __future__ import annotations

from typing import Any

from chalicelib.admin.schemas import MAX_ID
from chalicelib.admin.table_browser import MAX_PAGE
from chalicelib.admin.usage import GRANULARITIES, GROUP_BY
from chalicelib.api.openapi_components import ref
from chalicelib.core.patterns import decimal_range
from chalicelib.core.settings import LOGICAL_TABLES

ADMIN = [{"adminKey": []}]
USER = [{"userKey": []}]
ADMIN_OR_USER = [*ADMIN, *USER]  # either key: the admin's gets the original's answer, a user's OpenAI's
PUBLIC: list[dict[str, list[str]]] = []

_JSON = "application/json"


def _answer(description: str, schema: dict[str, Any] | None = None, media: str = _JSON) -> dict[str, Any]:
    return {"description": description, **({"content": {media: {"schema": schema}}} if schema else {})}


def _error(description: str) -> dict[str, Any]:
    return _answer(description, ref("Error"))


def _openai_error(description: str) -> dict[str, Any]:
    return _answer(description, ref("OpenAIError"))


def _admin_or_openai(description: str, admin: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    return _answer(description, {"oneOf": [admin, user]})


_BAD_BODY = _answer("The body is not JSON (`error`) or breaks its schema (`errors`, per field).",
                    {"oneOf": [ref("Error"), ref("ValidationErrors")]})
_ADMIN_ONLY = {"401": _error("The admin key is missing or wrong.")}
_WITH_BODY = {**_ADMIN_ONLY, "400": _BAD_BODY, "413": _error("The body is too large.")}
_NO_CONTENT = {"204": {"description": "Done."}}


def _path_id(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": f"The {what}'s id.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}


def _body(component: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {_JSON: {"schema": ref(component)}}}


def _link(operation_id: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters}


# The answers of a relayed operation (chat, completions, embeddings) besides its 200: the same pipeline's.
_RELAYED_ERRORS = {
    "400": _openai_error("The body is not JSON or breaks its schema."),
    "401": _openai_error("The key is missing, wrong, disabled or expired."),
    "403": _openai_error("The key may not use this model."),
    "404": _openai_error("No such model."),
    "413": _openai_error("The body is too large."),
    "429": _openai_error("The key is over its requests per minute."),
    "502": _openai_error("The replica failed."),
    "503": _openai_error("No replica is ready, or all are at their rate limit, or the model is waking from "
                         "hibernation (`model_waking`, with Retry-After)."),
    "504": _openai_error("The replica did not answer in time."),
}
# A caller who would rather wait for a hibernating model than be told to retry.
_WAIT_FOR_MODEL = {
    "name": "X-Wait-For-Model", "in": "header", "required": False,
    "description": ("Seconds to wait for a model that is waking from hibernation (capped by the request's time): "
                    "the answer comes once a replica serves; a stream sends SSE comments meanwhile."),
    "schema": {"type": "string", "pattern": r"^[0-9]{1,6}(\.[0-9]{1,3})?$"},
}
_MODEL_ID = "$response.body#/id"
_REPLICA_ID = "$response.body#/replica_id"

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/openapi.json", "GET"): {
        "operationId": "getOpenApiDocument", "tags": ["meta"], "security": PUBLIC,
        "summary": "This document.",
        "responses": {"200": _answer("The OpenAPI 3.1 document.", {"type": "object"})},
    },
    ("/v1/models", "GET"): {
        "operationId": "listModels", "tags": ["models"], "security": ADMIN_OR_USER,
        "summary": "List models: all of them to the admin key; to a user's key, OpenAI's list of those it may use "
                   "that have a serving replica.",
        "parameters": [{"name": "active", "in": "query", "required": False,
                        "description": "Admin key only: `true` or `1`: only models with a replica in SUCCESS. "
                                       "Anything else: all. A user's key sees only served models anyway.",
                        "schema": {"type": "string", "examples": ["true"]}}],
        "responses": {
            "200": _admin_or_openai("The models: an array (admin key) or OpenAI's list (a user's key).",
                                    {"type": "array", "items": ref("Model")}, ref("OpenAIModelList")),
            "401": _openai_error("No key, or neither the admin key nor a usable user's key."),
        },
    },
    ("/v1/models", "POST"): {
        "operationId": "createModel", "tags": ["models"], "security": ADMIN, "summary": "Register a model.",
        "requestBody": _body("CreateModelRequest"),
        "responses": {
            "201": {**_answer("Created.", ref("ModelCreated")), "links": {
                "GetModel": _link("getModel", model_ref="$response.body#/model_name"),
                "ListReplicas": _link("listReplicas", model_ref=_MODEL_ID),
                "CreateReplica": _link("createReplica", model_ref=_MODEL_ID),
                "DeleteModel": _link("deleteModel", model_ref=_MODEL_ID),
            }},
            "409": _error("A model of that name exists."), **_WITH_BODY,
        },
    },
    ("/v1/models/{model_ref}", "GET"): {
        "operationId": "getModel", "tags": ["models"], "security": ADMIN_OR_USER,
        "summary": "A model and its replicas (admin key), or OpenAI's model object (a user's key).",
        "parameters": [{"name": "model_ref", "in": "path", "required": True,
                        "description": "The model's name, URL-encoded ('/' as %2F).", "schema": {"type": "string"}}],
        "responses": {
            "200": _admin_or_openai("The model.", ref("ModelWithReplicas"), ref("OpenAIModel")),
            "401": _openai_error("No key, or neither the admin key nor a usable user's key."),
            "404": _admin_or_openai("No such model; to a user's key also one it may not use or that no replica "
                                    "serves (`model_not_found`).", ref("Error"), ref("OpenAIError")),
        },
    },
    ("/v1/models/{model_ref}", "DELETE"): {
        "operationId": "deleteModel", "tags": ["models"], "security": ADMIN,
        "summary": "Delete a model, its replicas and their rules (provisioned VMs are torn down first).",
        "parameters": [_path_id("model_ref", "model")],
        "responses": {**_NO_CONTENT, "404": _error("No such model."),
                      "503": _error("A teardown could not start."), **_ADMIN_ONLY},
    },
    ("/v1/models/{model_ref}/replicas", "GET"): {
        "operationId": "listReplicas", "tags": ["replicas"], "security": ADMIN, "summary": "A model's replicas.",
        "parameters": [_path_id("model_ref", "model")],
        "responses": {"200": _answer("The replicas.", {"type": "array", "items": ref("Replica")}),
                      "404": _error("No such model."), **_ADMIN_ONLY},
    },
    ("/v1/models/{model_ref}/replicas", "POST"): {
        "operationId": "createReplica", "tags": ["replicas"], "security": ADMIN,
        "summary": "Add a replica by URL, or provision one on a Hyperstack VM (`create_vm`).",
        "parameters": [_path_id("model_ref", "model")], "requestBody": _body("CreateReplicaRequest"),
        "responses": {
            "201": {**_answer("Created.", ref("ReplicaCreated")), "links": {
                "UpdateReplica": _link("updateReplica", replica_id=_REPLICA_ID),
                "DeleteReplica": _link("deleteReplica", replica_id=_REPLICA_ID),
            }},
            "404": _error("No such model."), "409": _error("The model has a replica at that endpoint."),
            "503": _error("Provisioning is not configured or could not start; nothing was stored."), **_WITH_BODY,
        },
    },
    ("/v1/models/{model_ref}/autoscaling", "PUT"): {
        "operationId": "setAutoscaling", "tags": ["autoscaling"], "security": ADMIN,
        "summary": "Scale the model's replicas with its load: min and max, a target per replica, and the template "
                   "of the VMs it makes. Replaces any settings before.",
        "parameters": [_path_id("model_ref", "model")], "requestBody": _body("AutoscalingRequest"),
        "responses": {"200": _answer("The settings and the scaler's state.", ref("Autoscaling")),
                      "404": _error("No such model."), **_WITH_BODY},
    },
    ("/v1/models/{model_ref}/autoscaling", "GET"): {
        "operationId": "getAutoscaling", "tags": ["autoscaling"], "security": ADMIN,
        "summary": "The model's autoscaling settings, its replicas by state, and the scaler's last decision.",
        "parameters": [_path_id("model_ref", "model")],
        "responses": {"200": _answer("The settings and the scaler's state.", ref("Autoscaling")),
                      "404": _error("No such model, or it has no autoscaling."), **_ADMIN_ONLY},
    },
    ("/v1/models/{model_ref}/autoscaling", "DELETE"): {
        "operationId": "deleteAutoscaling", "tags": ["autoscaling"], "security": ADMIN,
        "summary": "Stop autoscaling the model; its replicas stay as they are.",
        "parameters": [_path_id("model_ref", "model")],
        "responses": {**_NO_CONTENT, "404": _error("No such model."), **_ADMIN_ONLY},
    },
    ("/v1/models/replicas/{replica_id}", "PUT"): {
        "operationId": "updateReplica", "tags": ["replicas"], "security": ADMIN,
        "summary": "Set, replace or clear (null) a replica's rate limit or api_key; fields not sent stay as they are.",
        "parameters": [_path_id("replica_id", "replica")], "requestBody": _body("UpdateReplicaRequest"),
        "responses": {**_NO_CONTENT, "404": _error("No such replica."), **_WITH_BODY},
    },
    ("/v1/replicas/{replica_id}", "DELETE"): {
        "operationId": "deleteReplica", "tags": ["replicas"], "security": ADMIN, "summary": "Delete a replica.",
        "parameters": [_path_id("replica_id", "replica")],
        "responses": {**_NO_CONTENT, "404": _error("No such replica."),
                      "503": _error("A teardown could not start."), **_ADMIN_ONLY},
    },
    ("/v1/replicas/{replica_id}/hibernate", "POST"): {
        "operationId": "hibernateReplica", "tags": ["replicas"], "security": ADMIN,
        "summary": "Hibernate a serving provisioned replica's VM now (it wakes on the next request).",
        "parameters": [_path_id("replica_id", "replica")],
        "responses": {"202": _answer("Hibernation started.", ref("Message")), "404": _error("No such replica."),
                      "409": _error("The replica was not provisioned, or is not SUCCESS (the message says which)."),
                      "503": _error("Hibernation is not configured on this deployment."), **_ADMIN_ONLY},
    },
    ("/v1/replicas/{replica_id}/retry", "POST"): {
        "operationId": "retryReplica", "tags": ["replicas"], "security": ADMIN,
        "summary": "Provision a FAILED replica again, under the same id and with the details it was created with "
                   "(its secrets given again, if it had any).",
        "parameters": [_path_id("replica_id", "replica")], "requestBody": _body("RetryReplicaRequest", required=False),
        "responses": {"202": _answer("Provisioning started.", ref("Message")), "404": _error("No such replica."),
                      "409": _error("The replica was registered by URL, made by the scaler, or is not FAILED (the "
                                    "message says which)."),
                      "503": _error("Provisioning is not configured or could not start; the replica stays FAILED."),
                      **_WITH_BODY},
    },
    ("/v1/replicas/{replica_id}/wake", "POST"): {
        "operationId": "wakeReplica", "tags": ["replicas"], "security": ADMIN,
        "summary": "Wake a hibernated replica (one wake however many ask).",
        "parameters": [_path_id("replica_id", "replica")],
        "responses": {"202": _answer("Wake started.", ref("Message")), "404": _error("No such replica."),
                      "409": _error("The replica was not provisioned, is not hibernated, or is already waking "
                                     "(the message says which)."),
                      "503": _error("Waking is not configured on this deployment."), **_ADMIN_ONLY},
    },
    ("/v1/generate_api_key", "POST"): {
        "operationId": "generateApiKey", "tags": ["api keys"], "security": ADMIN,
        "summary": "Issue a user's API key (its plaintext is in this answer only).",
        "requestBody": _body("GenerateApiKeyRequest"),
        "responses": {
            "200": {**_answer("The key.", ref("ApiKey")), "links": {
                "DeleteApiKey": {"operationId": "deleteApiKey", "requestBody": {
                    "user_id": "$response.body#/user_id", "api_key_id": "$response.body#/id"}},
            }},
            **_WITH_BODY,
        },
    },
    ("/v1/delete_api_key", "POST"): {
        "operationId": "deleteApiKey", "tags": ["api keys"], "security": ADMIN,
        "summary": "Delete a key never used; disable one that was.", "requestBody": _body("DeleteApiKeyRequest"),
        "responses": {"200": _answer("What was done.", ref("Message")),
                      "404": _error("No such key for that user."), "409": _error("The key is already disabled."),
                      **_WITH_BODY},
    },
    ("/v1/usage", "GET"): {
        "operationId": "usageSummary", "tags": ["usage"], "security": ADMIN,
        "summary": "Requests, tokens and errors per model, user or key over a window (UTC), from hourly counters.",
        "parameters": [
            {"name": "start", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "Inclusive: a date or a date-time on a whole hour (UTC unless it says). Default: the "
                            "current month's first day."},
            {"name": "end", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "Exclusive, as `start`; at most 366 days after it. Default: next month's first day."},
            {"name": "group_by", "in": "query", "required": False,
             "schema": {"type": "string", "enum": list(GROUP_BY), "default": "model"}},
            {"name": "granularity", "in": "query", "required": False,
             "schema": {"type": "string", "enum": list(GRANULARITIES)},
             "description": "A row per group and day or hour (`period`); absent: one row per group."},
        ],
        "responses": {"200": _answer("The totals.", ref("UsageSummary")),
                      "400": _answer("A bad parameter (`errors`, per parameter).", ref("ValidationErrors")),
                      **_ADMIN_ONLY},
    },
    ("/v1/tables", "GET"): {
        "operationId": "listTables", "tags": ["tables"], "security": ADMIN, "summary": "The tables' names.",
        "responses": {"200": _answer("The names.", ref("TableNames")), **_ADMIN_ONLY},
    },
    ("/v1/tables/{table_name}", "GET"): {
        "operationId": "readTable", "tags": ["tables"], "security": ADMIN, "summary": "A page of rows, newest first.",
        "parameters": [
            {"name": "table_name", "in": "path", "required": True, "schema": {"type": "string",
                                                                             "enum": list(LOGICAL_TABLES)}},
            # Empty (`?limit=`) is taken as absent, as a form with the field left blank sends it.
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": ["integer", "string"], "minimum": 1, "maximum": MAX_PAGE, "default": MAX_PAGE,
                        "pattern": f"^(?:{decimal_range(1, MAX_PAGE)})?$"}},
            {"name": "next_token", "in": "query", "required": False, "description": "From the previous page.",
             "schema": {"type": "string"}},
        ],
        "responses": {"200": _answer("The page.", ref("TablePage")),
                      "400": _error("A bad `limit` or `next_token`."), "404": _error("No such table."),
                      **_ADMIN_ONLY},
    },
    ("/v1/chat/completions", "POST"): {
        "operationId": "createChatCompletion", "tags": ["chat"], "security": USER, "parameters": [_WAIT_FOR_MODEL],
        "summary": "OpenAI's chat completion, relayed to a replica of the model; streamed when `stream` is true.",
        "requestBody": _body("CreateChatCompletionRequest"),
        "responses": {
            "200": {"description": "The completion, or its stream of `chat.completion.chunk` events.",
                    "content": {_JSON: {"schema": ref("ChatCompletion")},
                                "text/event-stream": {"schema": ref("ChatCompletionEvent")}}},
            **_RELAYED_ERRORS,
        },
    },
    ("/v1/completions", "POST"): {
        "operationId": "createCompletion", "tags": ["chat"], "security": USER, "parameters": [_WAIT_FOR_MODEL],
        "summary": "OpenAI's (legacy) text completion, relayed to a replica of the model; streamed when `stream` "
                   "is true.",
        "requestBody": _body("CreateCompletionRequest"),
        "responses": {
            "200": {"description": "The completion, or its stream of `text_completion` events.",
                    "content": {_JSON: {"schema": ref("Completion")},
                                "text/event-stream": {"schema": ref("CompletionEvent")}}},
            **_RELAYED_ERRORS,
        },
    },
    ("/v1/embeddings", "POST"): {
        "operationId": "createEmbedding", "tags": ["chat"], "security": USER, "parameters": [_WAIT_FOR_MODEL],
        "summary": "OpenAI's embeddings of the input, relayed to a replica of the model.",
        "requestBody": _body("CreateEmbeddingRequest"),
        "responses": {"200": _answer("The embeddings, one per input.", ref("EmbeddingList")), **_RELAYED_ERRORS},
    },
}
