"""The OpenAPI document: generated from the route table, valid, and true to what the code answers."""

import ast
from pathlib import Path
from urllib.parse import quote

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

from chalicelib.admin.schemas import CREATE_MODEL, CREATE_REPLICA, DELETE_API_KEY, GENERATE_API_KEY, UPDATE_REPLICA
from chalicelib.api import openapi
from chalicelib.chat.schema import CHAT_COMPLETION
from chalicelib.core.errors import ValidationFailed
from chalicelib.core.patterns import matches
from chalicelib.core.validation import validate
from tests.unit.conftest import VM_DETAILS

ROOT = Path(__file__).resolve().parents[3]
SERVER = "http://127.0.0.1:8000"
PUBLISHED = {"CreateModelRequest": CREATE_MODEL, "CreateReplicaRequest": CREATE_REPLICA,
             "UpdateReplicaRequest": UPDATE_REPLICA, "GenerateApiKeyRequest": GENERATE_API_KEY,
             "DeleteApiKeyRequest": DELETE_API_KEY}


@pytest.fixture
def document(api) -> dict:
    reply = api.get("/v1/openapi.json", key=None, headers={"host": "127.0.0.1:8000"})
    assert reply.status == 200, reply.json
    return reply.json


def _content_type(reply) -> str:
    return {name.lower(): value for name, value in reply.headers.items()}.get("content-type", "")


def _app_routes() -> dict:
    from app import app

    return app.routes


def test_document_is_served_without_a_key(api):
    reply = api.get("/v1/openapi.json", key=None)
    assert reply.status == 200
    assert _content_type(reply) == "application/json"
    assert reply.json["openapi"] == "3.1.0"


def test_document_is_valid_openapi_3_1(document):
    validate_openapi(document)


def test_document_lists_every_route_and_no_other(document):
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    assert documented == openapi.declared_operations(_app_routes())


def test_document_gives_each_route_the_key_it_needs(document):
    from app import USER_ROUTES

    security = {(path, method.upper()): operation["security"]
                for path, item in document["paths"].items() for method, operation in item.items()}
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        assert security.pop((path, "POST")) == [{"userKey": []}], path
    assert security.pop(("/v1/openapi.json", "GET")) == []
    for path, method in USER_ROUTES:
        assert security.pop((path, method)) == [{"adminKey": []}, {"userKey": []}], (path, method)
    assert all(needs == [{"adminKey": []}] for needs in security.values())
    assert set(document["components"]["securitySchemes"]) == {"adminKey", "userKey"}


def test_operation_ids_are_unique_and_read_as_calls(document):
    ids = [operation["operationId"] for item in document["paths"].values() for operation in item.values()]
    assert len(ids) == len(set(ids))
    assert {"createModel", "listReplicas", "generateApiKey", "createChatCompletion"} <= set(ids)


def test_route_missing_from_the_registry_fails_the_build():
    routes = {**_app_routes(), "/v1/undocumented": {"GET": object()}}
    with pytest.raises(openapi.UndocumentedRoute, match="/v1/undocumented"):
        openapi.build_document(routes, SERVER)


def test_registry_entry_without_a_route_fails_the_build():
    routes = {path: methods for path, methods in _app_routes().items() if path != "/v1/tables"}
    with pytest.raises(openapi.UndocumentedRoute, match="/v1/tables"):
        openapi.build_document(routes, SERVER)


def test_published_request_schemas_are_the_validating_schemas(document):
    schemas = document["components"]["schemas"]
    assert schemas["CreateModelRequest"] == CREATE_MODEL
    assert schemas["CreateReplicaRequest"] == CREATE_REPLICA
    assert schemas["UpdateReplicaRequest"] == UPDATE_REPLICA
    assert schemas["GenerateApiKeyRequest"] == GENERATE_API_KEY
    assert schemas["DeleteApiKeyRequest"] == DELETE_API_KEY
    assert schemas["CreateChatCompletionRequest"] == CHAT_COMPLETION


def test_published_bounds_are_the_contract(document):
    schemas = document["components"]["schemas"]
    assert schemas["GenerateApiKeyRequest"]["properties"]["allowed_rpm"]["minimum"] == 1
    assert schemas["CreateChatCompletionRequest"]["properties"]["temperature"]["maximum"] == 2
    limit = next(p for p in document["paths"]["/v1/tables/{table_name}"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)


def test_servers_is_the_url_root_the_document_came_through(document):
    assert document["servers"] == [{"url": SERVER}]


def test_servers_names_the_api_gateway_stage_over_https():
    headers = {"Host": "abc123.execute-api.eu-west-1.amazonaws.com", "X-Forwarded-Proto": "https"}
    url = openapi.server_url(headers, {"stage": "api"})
    assert url == "https://abc123.execute-api.eu-west-1.amazonaws.com/api"


def test_servers_has_no_stage_where_the_request_had_none():
    assert openapi.server_url({"host": "127.0.0.1:8000"}, {}) == SERVER


BAD_BODIES = [
    ("/v1/models", "post", {}),
    ("/v1/models", "post", {"name": "has space"}),
    ("/v1/generate_api_key", "post", {"user_id": "alice", "allowed_rpm": 0}),
    ("/v1/delete_api_key", "post", {"user_id": "alice"}),
    ("/v1/models/1/replicas", "post", {"rate_limit": 0}),
    ("/v1/models/replicas/1", "put", {}),
]


@pytest.mark.parametrize(("path", "method", "body"), BAD_BODIES)
def test_body_the_document_rejects_gets_the_documented_400(api, document, path, method, body):
    template = path.replace("/1/", "/{model_ref}/") if "/models/1/" in path else path
    template = template.replace("replicas/1", "replicas/{replica_id}")
    operation = document["paths"][template][method]
    schemas = {"components": document["components"]}
    request_schema = {**operation["requestBody"]["content"]["application/json"]["schema"], **schemas}
    assert not jsonschema.Draft202012Validator(request_schema).is_valid(body)
    if "{model_ref}" in template or "{replica_id}" in template:
        model_id = api.create_model("org/fixture")
        replica_id = api.create_replica(model_id)
        path = path.replace("/1/", f"/{model_id}/").replace("replicas/1", f"replicas/{replica_id}")
    reply = api.call(method.upper(), path, body)
    assert reply.status == 400
    answer_schema = {**operation["responses"]["400"]["content"]["application/json"]["schema"], **schemas}
    jsonschema.validate(reply.json, answer_schema, cls=jsonschema.Draft202012Validator)


def test_admin_error_answers_are_typed_json(api):
    # Found by fuzzing: errors raised as exceptions left without a content type.
    reply = api.get("/v1/tables", key=None)
    assert reply.status == 401
    assert _content_type(reply) == "application/json"


def test_created_answers_are_typed_json(api):
    reply = api.post("/v1/models", {"name": "org/typed"})
    assert reply.status == 201
    assert _content_type(reply) == "application/json"


def test_chat_path_never_imports_the_openapi_modules():
    for source in (ROOT / "chalicelib" / "chat").rglob("*.py"):
        imported = {alias.name for node in ast.walk(ast.parse(source.read_text()))
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(ast.parse(source.read_text()))
                     if isinstance(node, ast.ImportFrom)}
        assert not any(name.startswith("chalicelib.api.openapi") for name in imported), source


def _ecma_pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not matches(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# The document's patterns are ECMA-262's (jsonschema would read them as Python's).
EcmaValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})

KEY = {"user_id": "alice"}
DELETE = {"user_id": "alice", "api_key_id": 1}
ODD_BODIES = [
    ("GenerateApiKeyRequest", {**KEY, "allowed_rpm": "30"}),
    ("GenerateApiKeyRequest", {**KEY, "allowed_rpm": " 0030 "}),
    ("GenerateApiKeyRequest", {**KEY, "allowed_rpm": 30.0}),
    ("GenerateApiKeyRequest", {**KEY, "allowed_rpm": "0"}),
    ("GenerateApiKeyRequest", {**KEY, "allowed_rpm": "1000001"}),
    ("GenerateApiKeyRequest", {**KEY, "allowed_rpm": "١٢"}),
    ("GenerateApiKeyRequest", {**KEY, "allowed_rpm": "30\n"}),
    ("GenerateApiKeyRequest", {**KEY, "allowed_rpm": "1_000"}),
    ("GenerateApiKeyRequest", {**KEY, "allowed_rpm": True}),
    ("GenerateApiKeyRequest", {"user_id": "alice\n"}),
    ("GenerateApiKeyRequest", {"user_id": "al\x00ice"}),
    ("GenerateApiKeyRequest", {**KEY, "models": ["org/model\n"]}),
    ("DeleteApiKeyRequest", {**DELETE, "api_key_id": "7"}),
    ("DeleteApiKeyRequest", {**DELETE, "api_key_id": "9007199254740992"}),
    ("DeleteApiKeyRequest", {**DELETE, "user_id": ""}),
    ("CreateModelRequest", {"name": "org/model\n"}),
    ("CreateModelRequest", {"name": "org/mo\x85del"}),
    ("CreateModelRequest", {"name": "org/mo\ufeffdel"}),
    ("CreateModelRequest", {"name": "org/模型"}),
    ("CreateReplicaRequest", {"rate_limit": "60"}),
    ("CreateReplicaRequest", {"rate_limit": None}),
    ("CreateReplicaRequest", {"create_vm": "false"}),
    ("CreateReplicaRequest", {"api_key": "sk-abc"}),
    ("CreateReplicaRequest", {"api_key": None}),
    ("CreateReplicaRequest", {"api_key": ""}),
    ("CreateReplicaRequest", {"api_key": "sk abc"}),
    ("CreateReplicaRequest", {"api_key": "sk-\u00e9"}),
    ("CreateReplicaRequest", {"vm_creation_details": {**VM_DETAILS, "secrets": {"HF_TOKEN": "hf_x"}}}),
    ("CreateReplicaRequest", {"vm_creation_details": {**VM_DETAILS, "secrets": {"HF-TOKEN": "hf_x"}}}),
    ("CreateReplicaRequest", {"vm_creation_details": {**VM_DETAILS, "secrets": {"HF_TOKEN": "a\nb"}}}),
    ("CreateReplicaRequest", {"vm_creation_details": {**VM_DETAILS, "secrets": {f"V{i}": "" for i in range(33)}}}),
    ("UpdateReplicaRequest", {}),
    ("UpdateReplicaRequest", {"api_key": "sk-abc"}),
    ("UpdateReplicaRequest", {"api_key": None}),
    ("CreateReplicaRequest", {"create_vm": 0}),
    ("CreateReplicaRequest", {"create_vm": 0.0}),
    ("CreateReplicaRequest", {"create_vm": "no"}),
    ("CreateReplicaRequest", {"create_vm": 2}),
    ("CreateReplicaRequest", {"vm_creation_details": {**VM_DETAILS, "port": "8000"}}),
    ("CreateReplicaRequest", {"vm_creation_details": {**VM_DETAILS, "name": "vm-1\n"}}),
    ("CreateReplicaRequest", {"vm_creation_details": {**VM_DETAILS, "key_name": "key\x1b"}}),
    ("CreateReplicaRequest", {"vm_creation_details": {**VM_DETAILS, "assign_floating_ip": "True"}}),
    ("CreateReplicaRequest", {"vm_creation_details": {**VM_DETAILS, "security_rules": [
        {"port_range_min": "-0", "port_range_max": "65535"}]}}),
    ("UpdateReplicaRequest", {"rate_limit": "00"}),
]


@pytest.mark.parametrize(("component", "body"), ODD_BODIES)
def test_document_allows_a_request_body_exactly_when_the_validator_accepts_it(document, component, body):
    schema = {**document["components"]["schemas"][component], "components": document["components"]}

    published = EcmaValidator(schema).is_valid(body)

    assert published == _accepted(PUBLISHED[component], body)


def _accepted(schema, body):
    try:
        validate(schema, body)
    except ValidationFailed:
        return False
    return True


def test_empty_limit_is_documented_and_read_as_the_default(api, document):
    parameters = document["paths"]["/v1/tables/{table_name}"]["get"]["parameters"]
    limit = next(parameter for parameter in parameters if parameter["name"] == "limit")

    reply = api.get("/v1/tables/llm_models?limit=")

    assert EcmaValidator(limit["schema"]).is_valid("")
    assert reply.status == 200


@pytest.mark.parametrize("limit", ["0", "101", "١", "5 "])
def test_limit_the_document_forbids_is_refused(api, document, limit):
    parameters = document["paths"]["/v1/tables/{table_name}"]["get"]["parameters"]
    schema = next(parameter for parameter in parameters if parameter["name"] == "limit")["schema"]

    reply = api.get(f"/v1/tables/llm_models?limit={quote(limit)}")

    assert not EcmaValidator(schema).is_valid(limit)
    assert reply.status == 400


def test_streamed_answer_is_described_event_by_event(document):
    stream = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    event = document["components"]["schemas"][stream["schema"]["$ref"].rsplit("/", 1)[-1]]

    assert EcmaValidator(event).is_valid({"event": "message", "data": "[DONE]"})
    assert not EcmaValidator(event).is_valid("data: [DONE]")


def test_completion_stream_and_embeddings_answer_are_documented(document):
    paths, schemas = document["paths"], document["components"]["schemas"]
    completion = paths["/v1/completions"]["post"]["responses"]["200"]["content"]
    embeddings = paths["/v1/embeddings"]["post"]["responses"]["200"]["content"]

    assert set(completion) == {"application/json", "text/event-stream"}
    assert set(embeddings) == {"application/json"}
    answer = schemas[embeddings["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert EcmaValidator({**answer, "$defs": {}}).is_valid({
        "object": "list", "model": "m", "data": [{"index": 0, "object": "embedding", "embedding": "AACAPw=="}]})


def test_replica_secrets_are_published_write_only(document):
    schemas = document["components"]["schemas"]
    create, update = schemas["CreateReplicaRequest"]["properties"], schemas["UpdateReplicaRequest"]["properties"]

    assert create["api_key"]["writeOnly"] is True
    assert update["api_key"]["writeOnly"] is True
    assert create["vm_creation_details"]["properties"]["secrets"]["writeOnly"] is True
    assert not {"api_key", "secrets"} & set(schemas["Replica"]["properties"])


def _conforms(document, path, method, status, body):
    schema = document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return EcmaValidator({**schema, "components": document["components"]}).is_valid(body)


def test_user_and_admin_answers_of_the_model_routes_are_each_documented(api, document):
    model_id = api.create_model("org/served")
    api.create_replica(model_id)
    key = api.create_key()["api_key"]
    answers = [
        ("/v1/models", "200", api.get("/v1/models")),
        ("/v1/models", "200", api.get("/v1/models", key=key)),
        ("/v1/models", "401", api.get("/v1/models", key="hsk_wrong")),
        ("/v1/models/{model_ref}", "200", api.get("/v1/models/org%2Fserved")),
        ("/v1/models/{model_ref}", "200", api.get("/v1/models/org%2Fserved", key=key)),
        ("/v1/models/{model_ref}", "404", api.get("/v1/models/org%2Fnone")),
        ("/v1/models/{model_ref}", "404", api.get("/v1/models/org%2Fnone", key=key)),
        ("/v1/models/{model_ref}", "401", api.get("/v1/models/org%2Fserved", key=None)),
    ]

    for path, status, reply in answers:
        assert str(reply.status) == status, (path, reply.json)
        assert _conforms(document, path, "get", status, reply.json), (path, status, reply.json)
