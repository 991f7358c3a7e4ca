"""A user's key on GET /v1/models and GET /v1/models/{model}, through the official `openai` client."""

import time
import uuid

import openai
import pytest

from chalicelib.admin.model_catalog import OWNED_BY


def other_model_name() -> str:
    return f"it-{uuid.uuid4().hex[:10]}/Other-Instruct"


def listed_ids(client: openai.OpenAI) -> list[str]:
    return [model.id for model in client.models.list()]


def test_user_key_lists_the_served_model_as_openais_model(stack, served):
    client = stack.client(stack.new_key()["api_key"])

    models = {model.id: model for model in client.models.list()}

    assert served in models
    assert models[served].object == "model"
    assert models[served].owned_by == OWNED_BY
    assert abs(models[served].created - time.time()) < 120


def test_user_key_retrieves_a_model_whose_name_has_a_slash(stack, served):
    client = stack.client(stack.new_key()["api_key"])

    model = client.models.retrieve(served)

    assert (model.id, model.object, model.owned_by) == (served, "model", OWNED_BY)


def test_key_scoped_to_a_model_sees_only_that_model(stack, served, replica):
    other = other_model_name()
    stack.register_model(other, replica.base_url)
    client = stack.client(stack.new_key(models=[served])["api_key"])

    assert listed_ids(client) == [served]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(other)
    assert other in listed_ids(stack.client(stack.new_key()["api_key"]))


def test_model_with_no_serving_replica_is_neither_listed_nor_retrievable(stack):
    idle = other_model_name()
    stack.register_model(idle)
    client = stack.client(stack.new_key()["api_key"])

    assert idle not in listed_ids(client)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(idle)


def test_unknown_model_raises_not_found_with_openais_code(stack):
    client = stack.client(stack.new_key()["api_key"])

    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("nobody/no-such-model")

    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"


def test_wrong_key_raises_authentication_error(stack, served):
    client = stack.client("hsk_not-a-key-of-this-stack")

    with pytest.raises(openai.AuthenticationError) as raised:
        client.models.list()

    assert raised.value.code == "invalid_api_key"


def test_revoked_key_raises_authentication_error_at_once(stack, served):
    key = stack.new_key()
    client = stack.client(key["api_key"])
    assert served in listed_ids(client)

    reply = stack.admin.post(stack.url("/v1/delete_api_key"), json={"user_id": key["user_id"], "api_key_id": key["id"]})
    assert reply.status_code == 200, reply.text

    with pytest.raises(openai.AuthenticationError):
        client.models.retrieve(served)


def test_listing_leaves_the_keys_requests_per_minute_to_chat(stack, served):
    client = stack.client(stack.new_key(allowed_rpm=1)["api_key"])

    for _ in range(3):
        assert served in listed_ids(client)
    answer = client.chat.completions.create(model=served, messages=[{"role": "user", "content": "Hi"}])

    assert answer.choices


def test_user_key_works_under_the_stage_path_too(stack, served):
    key = stack.new_key()["api_key"]
    client = openai.OpenAI(base_url=stack.url("/api/v1"), api_key=key, max_retries=0, timeout=30)

    assert client.models.retrieve(served).id == served


def test_admin_key_still_gets_the_original_list_and_model(stack, served):
    everything = stack.admin.get(stack.url("/v1/models")).json()
    one = stack.admin.get(stack.url("/v1/models/" + served.replace("/", "%2F"))).json()

    assert isinstance(everything, list) and served in {model["name"] for model in everything}
    assert one["name"] == served and len(one["replicas"]) == 1
