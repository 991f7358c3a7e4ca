"""What the chat edge refuses before it costs anything, through the local HTTP stack and the openai client."""

import os
from concurrent.futures import ThreadPoolExecutor

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


def stack_cpu_seconds(stack) -> float:
    """CPU the local stack's process has used so far (user and system): what a body costs it, whatever else
    the machine is doing, unlike a wall-clock time."""
    fields = open(f"/proc/{stack.process.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_three_hostile_mebibyte_bodies_at_once_cost_little_cpu_and_the_next_request_is_answered(stack, served):
    """Before, each `\\"` of an unterminated string started a scan to the end: hours of CPU for such a body,
    before any key was checked. The bound below is generous (a few ms each, measured): it tells linear from
    quadratic, not fast from slow."""
    hostile = [
        b'{"model":"m","messages":"' + b'\\"' * 100_000 + b"," * 800_000,
        b'{"model":"m","messages":[' + b'",' * 500_000,
        b'{"model":"m","messages":"' + b'\\"' * 500_000,
    ]
    before = stack_cpu_seconds(stack)

    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda body: requests.post(
            stack.url("/v1/chat/completions"), data=body, timeout=60,
            headers={"Authorization": "Bearer hsk_made_up", "Content-Type": "application/json"}), hostile))
    spent = stack_cpu_seconds(stack) - before
    answer = stack.client(stack.new_key()["api_key"]).chat.completions.create(model=served, messages=MESSAGES)

    assert [reply.status_code for reply in replies] == [400, 400, 400]
    assert spent < 3.0, f"{spent:.2f} s of CPU for three 1 MiB bodies"
    assert answer.choices[0].message.content


@pytest.mark.parametrize("name", ["m" * 257, "\U0001F600" * 129], ids=["257-characters", "516-bytes"])
def test_a_model_name_past_the_stores_key_limits_is_a_400_naming_the_field(stack, name):
    created = stack.admin.post(stack.url("/v1/models"), json={"name": name})
    chat = requests.post(stack.url("/v1/chat/completions"), json={"model": name, "messages": MESSAGES},
                         headers={"Authorization": f"Bearer {stack.new_key()['api_key']}"})

    assert created.status_code == 400 and list(created.json()["errors"]) == ["name"]
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "model"
