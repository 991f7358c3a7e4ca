"""What the chat edge refuses before it costs anything, through the local HTTP stack and the openai client."""

import openai
import pytest
import requests

FOUR_MIB = 4 * 1024 * 1024
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client(stack):
    return stack.client(stack.new_key()["api_key"])


def test_body_over_the_cap_is_a_413_in_openais_shape(client, served):
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model=served, messages=[{"role": "user", "content": "x" * FOUR_MIB}])

    assert raised.value.status_code == 413
    assert raised.value.body["type"] == "invalid_request_error"


def test_a_vision_message_with_a_base64_image_just_under_the_cap_is_relayed(client, served, replica):
    image = "data:image/png;base64," + "A" * (FOUR_MIB - 1024)
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image}}]

    answer = client.chat.completions.create(model=served, messages=[{"role": "user", "content": content}])

    assert answer.choices[0].message.content
    assert replica.last_request["messages"][0]["content"][1]["image_url"]["url"] == image


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_a_400_and_never_reach_the_replica(stack, served, replica, value):
    # Sent raw: the openai client refuses to encode them, but other clients (and Python's json) do not.
    body = f'{{"model": "{served}", "messages": [{{"role": "user", "content": "hi"}}], "temperature": {value}}}'

    reply = requests.post(stack.url("/v1/chat/completions"), data=body,
                          headers={"Authorization": f"Bearer {stack.new_key()['api_key']}"})

    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_json"
    assert replica.requests_seen == 0


def test_nesting_deeper_than_the_limit_is_a_400(client, served, replica):
    nested: list = []
    for _ in range(200):
        nested = [nested]

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=served, messages=MESSAGES, extra_body={"guided_json": nested})

    assert "nests deeper" in raised.value.body["message"]
    assert replica.requests_seen == 0


def test_millions_of_empty_objects_are_a_400_even_without_a_valid_key(stack, served):
    body = b'{"model": "x", "messages": [' + b"{}," * 1_000_000 + b"{}]}"

    reply = requests.post(stack.url("/v1/chat/completions"), data=body,
                          headers={"Authorization": "Bearer hsk_made_up", "Content-Type": "application/json"})

    assert reply.status_code == 400
    assert "more than" in reply.json()["error"]["message"]


def test_bytes_that_are_not_utf8_are_a_400(stack, served):
    key = stack.new_key()["api_key"]

    reply = requests.post(stack.url("/v1/chat/completions"), data='{"model": "é"}'.encode("latin-1"),
                          headers={"Authorization": f"Bearer {key}"})

    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "Request body is not valid UTF-8."


@pytest.mark.parametrize("path", ["/v1/models", "/v1/generate_api_key"])
def test_deeply_nested_admin_body_is_a_json_400(stack, path):
    reply = stack.admin.post(stack.url(path), data=b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}")

    assert reply.status_code == 400
    assert set(reply.json()) == {"error"}


def test_deeply_nested_page_token_is_a_json_400(stack):
    import base64

    token = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=")

    reply = stack.admin.get(stack.url(f"/v1/tables/metric?next_token={token}"))

    assert (reply.status_code, reply.json()) == (400, {"error": "Invalid next_token."})
