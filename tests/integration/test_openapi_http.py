"""/v1/openapi.json through the local stack, and what the fuzzer found at the HTTP edge."""

import hashlib

import pytest
import requests


def test_openapi_document_answers_without_a_key(stack):
    reply = requests.get(stack.url("/v1/openapi.json"), timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["servers"] == [{"url": stack.base_url}]


def test_openapi_document_under_the_stage_names_the_stage(stack):
    reply = requests.get(stack.url("/api/v1/openapi.json"), timeout=10)
    assert reply.status_code == 200
    assert reply.json()["servers"] == [{"url": stack.base_url + "/api"}]


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "PROPFIND"])
def test_method_no_route_serves_is_a_json_405_not_a_501(stack, method):
    # Found by fuzzing: http.server answered methods it has no handler for with an HTML 501.
    reply = stack.admin.request(method, stack.url("/v1/tables"), timeout=10)
    assert reply.status_code == 405
    assert "error" in reply.json()


def test_no_answer_echoes_a_keys_secret(stack):
    created = stack.new_key(user_id="secret-keeper")
    plaintext, digest = created["api_key"], hashlib.sha256(created["api_key"].encode()).hexdigest()
    answers = [
        stack.admin.get(stack.url("/v1/tables/api_key")).text,
        stack.admin.post(stack.url("/v1/delete_api_key"), json={"user_id": "other", "api_key_id": created["id"]}).text,
        requests.post(stack.url("/v1/chat/completions"), json={"model": "mock/llm", "messages": []},
                      headers={"Authorization": f"Bearer {plaintext}"}, timeout=10).text,
        requests.post(stack.url("/v1/chat/completions"), json={"model": "mock/llm"},
                      headers={"Authorization": f"Bearer {plaintext}x"}, timeout=10).text,
    ]
    assert not any(plaintext in answer or digest in answer for answer in answers)
