"""A user's key on GET /v1/models and GET /v1/models/{model}: OpenAI's answers, OpenAI's errors."""

from datetime import datetime
from unittest import mock

import pytest

from chalicelib.admin import model_catalog
from chalicelib.chat.access import admit
from chalicelib.core.errors import NotFound, Unauthorized
from chalicelib.core.key_hashing import hash_key
from chalicelib.store.tables import ApiKey, Replica
from tests.unit.conftest import VM_DETAILS


def served_model(api, name: str) -> int:
    model_id = api.create_model(name)
    api.create_replica(model_id, f"http://10.0.0.{model_id}:8000/v1")
    return model_id


def set_replica_status(replica_id: int, vm_status: str) -> None:
    Replica.get(replica_id).update(actions=[Replica.vm_status.set(vm_status)])


def listed(api, key: str) -> list[str]:
    reply = api.get("/v1/models", key=key)
    assert reply.status == 200, reply.json
    return [model["id"] for model in reply.json["data"]]


def openai_error(reply) -> dict:
    assert set(reply.json) == {"error"} and isinstance(reply.json["error"], dict), reply.json
    return reply.json["error"]


# Listing


def test_user_key_lists_served_models_as_openais_list(api):
    served_model(api, "org/served")
    registered = api.get("/v1/models/org%2Fserved").json["created_at"]
    key = api.create_key()["api_key"]

    reply = api.get("/v1/models", key=key)

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json == {"object": "list", "data": [{
        "id": "org/served", "object": "model", "owned_by": "hyperstack-llm-proxy",
        "created": int(datetime.fromisoformat(registered).timestamp()),
    }]}


def test_model_without_a_serving_replica_is_not_listed(api):
    served_model(api, "org/served")
    api.create_model("org/bare")
    pending = api.create_model("org/pending")
    api.post(f"/v1/models/{pending}/replicas", {"endpoint": "", "create_vm": True, "vm_creation_details": VM_DETAILS})
    failed = api.create_model("org/failed")
    set_replica_status(api.create_replica(failed, "http://10.0.9.9:8000/v1"), "FAILED")
    key = api.create_key()["api_key"]

    assert listed(api, key) == ["org/served"]


def test_key_scoped_to_models_lists_only_those(api):
    for name in ("org/a", "org/b", "org/c"):
        served_model(api, name)
    key = api.create_key(models=["org/a", "org/c", "org/unregistered"])["api_key"]

    assert listed(api, key) == ["org/a", "org/c"]


def test_unscoped_key_lists_every_served_model_oldest_first(api):
    for name in ("org/a", "org/b", "org/c"):
        served_model(api, name)
    key = api.create_key()["api_key"]

    assert listed(api, key) == ["org/a", "org/b", "org/c"]


def test_listing_does_not_count_against_the_keys_rate_limit(api):
    served_model(api, "org/served")
    key = api.create_key(allowed_rpm=1)["api_key"]

    for _ in range(3):
        assert listed(api, key) == ["org/served"]

    assert ApiKey.get(hash_key(key)).rl_count is None
    assert admit(key, "org/served", 0).remaining == 0  # the minute's one chat request is still there


# Retrieving one model


def test_user_key_retrieves_openais_model_object(api):
    served_model(api, "meta-llama/Llama-3.1-8B-Instruct")
    key = api.create_key()["api_key"]

    reply = api.get("/v1/models/meta-llama%2FLlama-3.1-8B-Instruct", key=key)

    assert reply.status == 200
    assert reply.json == api.get("/v1/models", key=key).json["data"][0]
    assert reply.json["id"] == "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize("path", ["/v1/models/org%2Fnothing", "/v1/models/org%2Fbare", "/v1/models/org%2Fother",
                                  "/v1/models/has%20space", "/v1/models/" + "x" * 300],
                         ids=["unknown", "not-served", "outside-the-keys-scope", "invalid-name", "too-long"])
def test_model_the_key_may_not_see_is_openais_model_not_found(api, path):
    served_model(api, "org/mine")
    served_model(api, "org/other")
    api.create_model("org/bare")
    key = api.create_key(models=["org/mine", "org/bare", "org/nothing"])["api_key"]

    reply = api.get(path, key=key)

    assert reply.status == 404
    error = openai_error(reply)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "model", "model_not_found")
    assert "does not exist or you do not have access to it" in error["message"]


# Keys that may not list


def test_missing_key_is_openais_401(api):
    reply = api.get("/v1/models", key=None)

    assert reply.status == 401
    assert openai_error(reply) == {"message": "You didn't provide an API key.", "type": "authentication_error",
                                   "param": None, "code": "invalid_api_key"}


def test_unknown_key_is_openais_401(api):
    reply = api.get("/v1/models/org%2Fx", key="hsk_not-a-key")

    assert reply.status == 401
    assert openai_error(reply)["message"] == "Incorrect API key provided."


def test_disabled_key_is_refused(api):
    served_model(api, "org/served")
    key = api.create_key()["api_key"]
    ApiKey.get(hash_key(key)).update(actions=[ApiKey.enabled.set(False)])

    reply = api.get("/v1/models", key=key)

    assert reply.status == 401
    assert openai_error(reply)["message"] == "This API key is disabled."


def test_expired_key_is_refused(api):
    key = api.create_key(expires_at="2030-01-01T00:00:00Z")["api_key"]

    with pytest.raises(Unauthorized, match="expired") as raised:
        model_catalog.authenticate(key, now=datetime.fromisoformat("2030-01-01T00:00:00+00:00").timestamp())

    assert raised.value.code == "invalid_api_key"
    assert model_catalog.authenticate(key, now=0).models is None


def test_user_key_is_still_refused_on_the_admin_methods_of_the_same_paths(api):
    model_id = served_model(api, "org/served")
    key = api.create_key()["api_key"]

    created = api.post("/v1/models", {"name": "org/new"}, key=key)
    deleted = api.delete(f"/v1/models/{model_id}", key=key)

    assert (created.status, created.json) == (401, {"error": "Invalid Admin API key."})
    assert (deleted.status, deleted.json) == (401, {"error": "Invalid Admin API key."})
    assert [model["name"] for model in api.get("/v1/models").json] == ["org/served"]


def test_failure_of_our_own_is_openais_500_and_tells_nothing(api):
    key = api.create_key()["api_key"]

    with mock.patch.object(model_catalog, "list_models", side_effect=RuntimeError("table gone")):
        reply = api.get("/v1/models", key=key)

    assert reply.status == 500
    assert openai_error(reply) == {"message": "Internal server error", "type": "server_error",
                                   "param": None, "code": None}


# The admin key keeps the original's answers


def test_admin_key_still_lists_every_model_as_the_original_did(api):
    served_model(api, "org/served")
    api.create_model("org/bare")

    reply = api.get("/v1/models")

    assert reply.status == 200
    assert [set(model) for model in reply.json] == [{"id", "name", "created_at"}] * 2


def test_admin_key_still_reads_a_model_with_its_replicas(api):
    served_model(api, "org/served")

    reply = api.get("/v1/models/org%2Fserved")

    assert reply.status == 200
    assert set(reply.json) == {"id", "name", "created_at", "replicas"}


# The rule itself, without HTTP


def test_retrieve_raises_not_found_for_a_model_outside_the_scope(api):
    served_model(api, "org/served")
    scoped = model_catalog.UserKey(key_id=1, models=frozenset({"org/other"}))

    with pytest.raises(NotFound):
        model_catalog.retrieve(scoped, "org%2Fserved")
    assert model_catalog.retrieve(model_catalog.UserKey(key_id=1, models=None), "org/served")["id"] == "org/served"


def test_replica_serves_only_in_success_with_an_endpoint():
    assert model_catalog.is_serving(Replica(1, model_id=1, vm_status="SUCCESS", endpoint="http://h:1/v1"))
    assert not model_catalog.is_serving(Replica(1, model_id=1, vm_status="SUCCESS", endpoint=None))
    assert not model_catalog.is_serving(Replica(1, model_id=1, vm_status="BOOTING", endpoint="http://h:1/v1"))
