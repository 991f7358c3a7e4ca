"""What every admin route does with a request it cannot serve: a JSON 4xx, and no change."""

import json
import re

import pytest

from tests.conftest import TEST_ADMIN_KEY
from tests.unit.conftest import VM_DETAILS

LIMIT = 64 * 1024

# One request per admin route, valid apart from what a test breaks.
ROUTES = [
    ("GET", "/v1/tables", None),
    ("GET", "/v1/tables/api_key", None),
    ("POST", "/v1/generate_api_key", {"user_id": "alice"}),
    ("POST", "/v1/delete_api_key", {"user_id": "alice", "api_key_id": 1}),
    ("GET", "/v1/models", None),
    ("POST", "/v1/models", {"name": "org/new"}),
    ("GET", "/v1/models/org%2Fmodel", None),
    ("DELETE", "/v1/models/1", None),
    ("GET", "/v1/models/1/replicas", None),
    ("POST", "/v1/models/1/replicas", {"endpoint": "http://10.9.9.9:8000/v1"}),
    ("PUT", "/v1/models/replicas/1", {"rate_limit": 5}),
    ("DELETE", "/v1/replicas/1", None),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ROUTES]


def is_user_route(method: str, path: str) -> bool:
    """Whether a request is to one of app.USER_ROUTES, which a user's key may call too."""
    from app import USER_ROUTES

    return any(method == route_method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", route_path), path)
               for route_path, route_method in USER_ROUTES)


# What a user's key may not call: all of ROUTES but the user routes (GET /v1/models, GET /v1/models/{model}).
ADMIN_ONLY_ROUTES = [(method, path, body) for method, path, body in ROUTES if not is_user_route(method, path)]
ADMIN_ONLY_ROUTE_IDS = [f"{method} {path}" for method, path, _ in ADMIN_ONLY_ROUTES]

BODY_ROUTES = [
    ("POST", "/v1/generate_api_key"),
    ("POST", "/v1/delete_api_key"),
    ("POST", "/v1/models"),
    ("POST", "/v1/models/1/replicas"),
    ("PUT", "/v1/models/replicas/1"),
]
BODY_ROUTE_IDS = [f"{method} {path}" for method, path in BODY_ROUTES]


def arrange_world(api):
    """A model (id 1) with a replica (id 1) and a key (id 1) for alice; returns a snapshot of the store."""
    model_id = api.create_model("org/model")
    replica_id = api.create_replica(model_id, "http://10.0.0.1:8000/v1", rate_limit=10)
    key = api.create_key("alice")
    assert (model_id, replica_id, key["id"]) == (1, 1, 1)
    return key


def arrange_for(api, path):
    """Just what `path` needs to exist (model 1, key 1, and replica 1 only for a replica's own path)."""
    assert api.create_model("org/model") == 1
    assert api.create_key("alice")["id"] == 1
    if "/replicas/1" in path:
        assert api.create_replica(1, "http://10.0.0.1:8000/v1") == 1


def snapshot(api):
    return {table: api.get(f"/v1/tables/{table}").json["data"]
            for table in ("api_key", "metric", "llm_models", "replicas", "replica_security_rules")}


def assert_json_error(reply):
    body = json.loads(reply.body)
    assert isinstance(body, dict)
    assert body.keys() & {"error", "errors"}, body


# Authentication


def every_admin_route() -> list[tuple[str, str]]:
    """Every (method, path) the app serves but its public and user ones, read from the route table itself."""
    from app import PUBLIC_ROUTES, USER_ROUTES, app

    return [(method, re.sub(r"\{[^}]+\}", "1", path)) for path, methods in sorted(app.routes.items())
            if path not in PUBLIC_ROUTES for method in sorted(methods) if (path, method) not in USER_ROUTES]


def every_user_route() -> list[tuple[str, str]]:
    """Every (method, path) a user's key may call as well as the admin's."""
    from app import USER_ROUTES

    return [(method, re.sub(r"\{[^}]+\}", "1", path)) for path, method in sorted(USER_ROUTES)]


@pytest.mark.parametrize(("method", "path"), every_admin_route())
def test_every_route_but_the_public_and_user_ones_needs_the_admin_key(api, method, path):
    reply = api.call(method, path, {}, key=None)

    assert reply.status == 401
    assert reply.json == {"error": "Invalid Admin API key."}


@pytest.mark.parametrize(("method", "path"), every_user_route())
def test_every_user_route_needs_a_key_and_says_so_in_openais_shape(api, method, path):
    reply = api.call(method, path, None, key=None)

    assert reply.status == 401
    assert reply.json["error"]["code"] == "invalid_api_key"


def test_user_routes_are_routes_of_the_app_and_only_reads():
    from app import USER_ROUTES, app

    assert USER_ROUTES
    assert all(method == "GET" and method in app.routes.get(path, {}) for path, method in USER_ROUTES)


def test_every_route_answers_domain_errors_through_the_json_edge():
    from app import app

    views = [entry.view_function for methods in app.routes.values() for entry in methods.values()]

    assert views and all(hasattr(view, "__wrapped__") for view in views)  # functools.wraps of json_route


def test_public_routes_answer_without_the_admin_key(api):
    assert api.get("/v1/openapi.json", key=None).status == 200
    assert api.post("/v1/chat/completions", {}, key=None).status == 401  # a user's key, not the admin's
    assert "Admin" not in api.post("/v1/chat/completions", {}, key=None).body.decode()


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_request_without_admin_key_is_unauthorized(api, method, path, body):
    reply = api.call(method, path, body, key=None)

    assert reply.status == 401
    assert set(reply.json) == {"error"}


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=ROUTE_IDS)
def test_request_with_a_wrong_admin_key_is_unauthorized(api, method, path, body):
    reply = api.call(method, path, body, key="not-the-admin-key")

    assert reply.status == 401
    assert set(reply.json) == {"error"}


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY_ROUTES, ids=ADMIN_ONLY_ROUTE_IDS)
def test_users_api_key_is_not_an_admin_key(api, method, path, body):
    user_key = api.create_key("alice")["api_key"]

    reply = api.call(method, path, body, key=user_key)

    assert reply.status == 401
    assert set(reply.json) == {"error"}


@pytest.mark.parametrize(
    "authorization",
    [f"Basic {TEST_ADMIN_KEY}", TEST_ADMIN_KEY, "Bearer", "Bearer ", f"Bearer {TEST_ADMIN_KEY}x",
     f"Bearer {TEST_ADMIN_KEY[:-1]}", f"Bearer {TEST_ADMIN_KEY.upper()}"],
    ids=["basic-scheme", "no-scheme", "bearer-alone", "bearer-empty", "key-with-suffix", "key-prefix", "key-upper"],
)
def test_anything_but_the_exact_bearer_admin_key_is_unauthorized(api, authorization):
    reply = api.get("/v1/tables", key=None, headers={"authorization": authorization})

    assert reply.status == 401
    assert set(reply.json) == {"error"}


def test_admin_key_is_accepted(api):
    reply = api.get("/v1/tables", key=TEST_ADMIN_KEY)

    assert reply.status == 200


def test_unauthorized_requests_change_nothing(api):
    arrange_world(api)
    user_key = api.create_key("bob")["api_key"]
    before = snapshot(api)

    for method, path, body in ROUTES:
        api.call(method, path, body, key=user_key)
        api.call(method, path, body, key=None)

    assert snapshot(api) == before


# Bodies that are not what a route reads


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=BODY_ROUTE_IDS)
def test_malformed_json_body_is_a_json_400(api, method, path):
    arrange_for(api, path)

    reply = api.call(method, path, raw='{"user_id": "alice",')

    assert reply.status == 400
    assert set(reply.json) == {"error"}


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=BODY_ROUTE_IDS)
def test_body_that_is_not_utf8_is_a_json_400(api, method, path):
    arrange_for(api, path)

    reply = api.call(method, path, raw=b'{"user_id": "\xff\xfe"}')

    assert reply.status == 400
    assert_json_error(reply)


@pytest.mark.parametrize("payload", ['{"user_id": ' + "[" * 5000 + "]" * 5000 + "}", '{"rate_limit": NaN}'],
                         ids=["nested-5000-deep", "nan"])
@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=BODY_ROUTE_IDS)
def test_deeply_nested_or_nan_body_is_a_json_400(api, method, path, payload):
    arrange_for(api, path)

    reply = api.call(method, path, raw=payload)

    assert reply.status == 400
    assert_json_error(reply)


@pytest.mark.parametrize("payload", ["[1, 2]", '"a string"', "null"], ids=["list", "string", "null"])
@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=BODY_ROUTE_IDS)
def test_json_body_of_the_wrong_type_is_a_json_400(api, method, path, payload):
    arrange_for(api, path)

    reply = api.call(method, path, raw=payload)

    assert reply.status == 400
    assert_json_error(reply)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/generate_api_key", {"user_id": "alice", "colour": "red"}),
        ("POST", "/v1/delete_api_key", {"user_id": "alice", "api_key_id": 1, "colour": "red"}),
        ("POST", "/v1/models", {"name": "org/new", "colour": "red"}),
        ("POST", "/v1/models/1/replicas", {"endpoint": "http://10.9.9.9:8000/v1", "colour": "red"}),
        ("PUT", "/v1/models/replicas/1", {"rate_limit": 5, "colour": "red"}),
    ],
    ids=BODY_ROUTE_IDS,
)
def test_unknown_field_is_a_400_naming_it(api, method, path, body):
    arrange_for(api, path)

    reply = api.call(method, path, body)

    assert reply.status == 400
    assert reply.json == {"errors": {"colour": ["Unknown field."]}}


def test_unknown_field_in_vm_creation_details_is_named_where_it_is(api):
    arrange_for(api, "/v1/models/1/replicas")

    reply = api.post("/v1/models/1/replicas",
                     {"create_vm": True, "vm_creation_details": {**VM_DETAILS, "colour": "red"}})

    assert reply.status == 400
    assert reply.json == {"errors": {"vm_creation_details": {"colour": ["Unknown field."]}}}


def test_unknown_field_in_a_security_rule_is_named_where_it_is(api):
    arrange_for(api, "/v1/models/1/replicas")
    rules = [{"port_range_min": 1, "port_range_max": 2, "colour": "red"}]

    reply = api.post("/v1/models/1/replicas",
                     {"create_vm": True, "vm_creation_details": {**VM_DETAILS, "security_rules": rules}})

    assert reply.status == 400
    assert reply.json == {
        "errors": {"vm_creation_details": {"security_rules": {"0": {"colour": ["Unknown field."]}}}}
    }


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/generate_api_key", {"user_id": 5}),
        ("POST", "/v1/delete_api_key", {"user_id": "alice", "api_key_id": "one"}),
        ("POST", "/v1/models", {"name": ""}),
        ("POST", "/v1/models/1/replicas", {"endpoint": "http://10.0.0.1:8000/v1"}),
        ("POST", "/v1/models/1/replicas", {"endpoint": "http://10.9.9.9:8000/v1", "create_vm": True}),
        ("PUT", "/v1/models/replicas/1", {"rate_limit": 0}),
        ("POST", "/v1/models", {"name": "org/model"}),
    ],
    ids=["bad-user-id", "bad-key-id", "empty-model-name", "duplicate-endpoint", "vm-without-details",
         "zero-rate-limit", "duplicate-model"],
)
def test_refused_request_changes_nothing(api, method, path, body):
    arrange_world(api)
    before = snapshot(api)

    reply = api.call(method, path, body)

    assert 400 <= reply.status < 500
    assert_json_error(reply)
    assert snapshot(api) == before


# Ids in the path


ID_ROUTES = [
    ("GET", "/v1/models/{}/replicas", None),
    ("POST", "/v1/models/{}/replicas", {"endpoint": "http://10.9.9.9:8000/v1"}),
    ("PUT", "/v1/models/replicas/{}", {"rate_limit": 5}),
    ("DELETE", "/v1/replicas/{}", None),
    ("DELETE", "/v1/models/{}", None),
]
ID_ROUTE_IDS = ["list-replicas", "create-replica", "update-replica", "delete-replica", "delete-model"]


@pytest.mark.parametrize(("method", "template", "body"), ID_ROUTES, ids=ID_ROUTE_IDS)
def test_non_integer_id_is_not_found(api, method, template, body):
    reply = api.call(method, template.format("abc"), body)

    assert reply.status == 404
    assert set(reply.json) == {"error"}


@pytest.mark.parametrize("bad_id", ["1.5", "-1", "0", "1e3", "99999999999999999999999999", "%201", "%EF%BC%91"],
                         ids=["decimal", "negative", "zero", "exponent", "huge", "space", "fullwidth-digit"])
@pytest.mark.parametrize(("method", "template", "body"), ID_ROUTES[2::2], ids=ID_ROUTE_IDS[2::2])
def test_id_that_is_not_a_positive_integer_is_not_found(api, method, template, body, bad_id):
    reply = api.call(method, template.format(bad_id), body)

    assert reply.status == 404
    assert set(reply.json) == {"error"}


@pytest.mark.parametrize(("method", "template", "body"), ID_ROUTES, ids=ID_ROUTE_IDS)
def test_unknown_id_is_not_found_and_changes_nothing(api, method, template, body):
    arrange_world(api)
    before = snapshot(api)

    reply = api.call(method, template.format(2), body)

    assert reply.status == 404
    assert set(reply.json) == {"error"}
    assert snapshot(api) == before


# Size


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=BODY_ROUTE_IDS)
def test_body_over_64_kib_is_a_json_413(api, method, path):
    arrange_for(api, path)
    before = snapshot(api)
    oversize = '{"user_id": "bob"' + " " * LIMIT + "}"

    reply = api.call(method, path, raw=oversize)

    assert reply.status == 413
    assert set(reply.json) == {"error"}
    assert snapshot(api) == before


def test_body_of_exactly_64_kib_is_read(api):
    prefix = '{"user_id": "bob"'
    body = prefix + " " * (LIMIT - len(prefix) - 1) + "}"
    assert len(body.encode()) == LIMIT

    reply = api.post("/v1/generate_api_key", raw=body)

    assert reply.status == 200
    assert reply.json["user_id"] == "bob"


# Other requests the routes do not serve


@pytest.mark.parametrize(("method", "path"), [("PATCH", "/v1/tables"), ("POST", "/v1/tables"),
                                              ("GET", "/v1/generate_api_key"), ("PUT", "/v1/replicas/1")])
def test_unsupported_method_is_a_json_4xx(api, method, path):
    reply = api.call(method, path)

    assert 400 <= reply.status < 500
    assert set(reply.json) == {"error"}
