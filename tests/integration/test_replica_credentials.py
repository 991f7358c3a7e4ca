"""A replica by URL that demands a bearer (as `vllm serve --api-key` does), through the local stack."""

import json
import time
from collections.abc import Iterator
from urllib.parse import quote

import openai
import pytest

from infra.local.mock_vllm import MockVllm
from tests.integration.conftest import STACK_ENV, start_local_stack

MESSAGES = [{"role": "user", "content": "Say something about credentials"}]
REPLICA_KEY = "sk-replica-it-0123456789abcdef-wxyz"


@pytest.fixture
def guarded(model_name: str) -> Iterator[MockVllm]:
    with MockVllm(model=model_name, api_key=REPLICA_KEY) as running:
        yield running


@pytest.fixture
def key(stack) -> dict:
    return stack.new_key()


def add_replica(stack, model_name: str, endpoint: str, **fields: object) -> tuple[int, int]:
    """(model id, replica id)"""
    model_id = stack.register_model(model_name)
    reply = stack.admin.post(stack.url(f"/v1/models/{model_id}/replicas"), json={"endpoint": endpoint, **fields})
    assert reply.status_code == 201, reply.text
    return model_id, reply.json()["replica_id"]


def chat(stack, key: dict, model: str, **params: object):
    return stack.client(key["api_key"]).chat.completions.create(model=model, messages=MESSAGES, **params)


def admin_answers(stack, model_id: int, model_name: str) -> str:
    paths = [f"/v1/models/{model_id}/replicas", f"/v1/models/{quote(model_name, safe='')}", "/v1/tables/replicas",
             "/v1/openapi.json"]
    replies = [stack.admin.get(stack.url(path)) for path in paths]
    assert [reply.status_code for reply in replies] == [200] * len(paths)
    return json.dumps([reply.json() for reply in replies])


def test_replica_demanding_a_bearer_serves_chat_with_its_api_key(stack, model_name, guarded, key):
    add_replica(stack, model_name, guarded.base_url, api_key=REPLICA_KEY)

    answer = chat(stack, key, model_name)

    assert answer.choices[0].message.content
    assert guarded.requests_seen == 1


def test_replica_demanding_a_bearer_streams_chat_with_its_api_key(stack, model_name, guarded, key):
    add_replica(stack, model_name, guarded.base_url, api_key=REPLICA_KEY)

    chunks = list(chat(stack, key, model_name, stream=True))

    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert guarded.requests_seen == 1


@pytest.mark.parametrize("fields", [{}, {"api_key": "sk-not-the-replicas-key"}], ids=["without", "wrong"])
def test_replica_refusing_the_bearer_reaches_the_client_as_a_4xx_and_serves_nothing(
        stack, model_name, guarded, key, fields):
    add_replica(stack, model_name, guarded.base_url, **fields)

    with pytest.raises(openai.APIStatusError) as refused:
        chat(stack, key, model_name)

    assert 400 <= refused.value.status_code < 500
    assert guarded.requests_seen == 0


def test_rotated_api_key_reaches_the_replica(stack, model_name, guarded, key):
    _, replica_id = add_replica(stack, model_name, guarded.base_url, api_key="sk-old-key")

    reply = stack.admin.put(stack.url(f"/v1/models/replicas/{replica_id}"), json={"api_key": REPLICA_KEY})
    assert reply.status_code == 204
    time.sleep(1.2)  # past REPLICA_CACHE_SECONDS: the chat path's replica list is read again

    assert chat(stack, key, model_name).choices[0].message.content
    assert guarded.requests_seen == 1


def test_api_key_appears_in_no_admin_answer(stack, model_name, guarded):
    model_id, _ = add_replica(stack, model_name, guarded.base_url, api_key=REPLICA_KEY)

    answers = admin_answers(stack, model_id, model_name)

    assert REPLICA_KEY not in answers
    assert "...wxyz" in answers  # the masked form, in /v1/tables/replicas


def test_api_key_appears_in_no_log_line(model_name, guarded):
    own = start_local_stack({**STACK_ENV, "QUIET": None})  # every access and application log line
    try:
        key = own.new_key()
        model_id, replica_id = add_replica(own, model_name, guarded.base_url, api_key=REPLICA_KEY)
        chat(own, key, model_name)
        list(chat(own, key, model_name, stream=True))
        own.admin.put(own.url(f"/v1/models/replicas/{replica_id}"), json={"api_key": REPLICA_KEY + "-next"})
        own.admin.get(own.url("/v1/tables/replicas"))
    finally:
        own.stop()
    output = own.process.stdout.read()

    assert guarded.requests_seen == 2
    assert f"/v1/models/{model_id}" in output or "/v1/tables/replicas" in output  # the log was on
    assert REPLICA_KEY not in output
