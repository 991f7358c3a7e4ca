"""The local stack over real HTTP: what `make run` serves."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.integration.conftest import ROOT, start_local_stack


def test_admin_routes_answer_under_v1_and_under_the_stage_prefix(stack):
    for prefix in ("/v1", "/api/v1"):
        reply = stack.admin.get(stack.url(f"{prefix}/tables"))

        assert reply.status_code == 200
        assert reply.json()["tables"] == ["api_key", "metric", "llm_models", "replicas", "replica_security_rules"]


def test_admin_routes_refuse_a_missing_key_with_json(stack):
    reply = requests.get(stack.url("/v1/tables"))

    assert reply.status_code == 401
    assert reply.json() == {"error": "Invalid Admin API key."}


def test_model_listing_without_a_key_is_refused_in_openais_shape(stack):
    # GET /v1/models also answers user keys (OpenAI's listing): a caller with no key gets OpenAI's 401.
    reply = requests.get(stack.url("/v1/models"))

    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"


def test_model_with_a_slash_round_trips_over_http(stack):
    created = stack.admin.post(stack.url("/v1/models"), json={"name": "http-test/Model-1"})

    fetched = stack.admin.get(stack.url("/v1/models/http-test%2FModel-1"))

    assert created.status_code == 201
    assert fetched.status_code == 200
    assert fetched.json()["id"] == created.json()["id"]


def test_concurrent_creates_get_unique_ids(stack):
    def create(index: int) -> requests.Response:
        return stack.admin.post(stack.url("/v1/models"), json={"name": f"concurrent/model-{index}"})

    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(create, range(40)))

    assert [reply.status_code for reply in replies] == [201] * 40
    ids = [reply.json()["id"] for reply in replies]
    assert len(set(ids)) == 40


def test_concurrent_creates_of_one_name_let_exactly_one_through(stack):
    def create(_: int) -> int:
        return stack.admin.post(stack.url("/v1/models"), json={"name": "race/one-name"}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = sorted(pool.map(create, range(16)))

    assert statuses == [201] + [409] * 15


def test_form_encoded_body_gets_a_json_400_not_a_415(stack):
    reply = stack.admin.post(stack.url("/v1/models"), data="name=x")

    assert reply.status_code == 400
    assert reply.json() == {"error": "Request body is not valid JSON."}


def test_sigterm_stops_the_stack_cleanly():
    own = start_local_stack()

    assert own.stop(timeout=15) == 0


def test_a_second_stack_on_a_taken_port_says_so_in_one_line_and_starts_nothing(stack):
    port = stack.base_url.rsplit(":", 1)[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_ENDPOINT_URL")}
    second = subprocess.run([sys.executable, "-m", "infra.local"], cwd=ROOT, env=dict(env, PORT=port),
                            capture_output=True, text=True, timeout=30)

    assert second.returncode == 1
    assert second.stderr.strip() == (f"make run: port {port} is taken (another make run?). Start this one on "
                                     f"another: PORT={int(port) + 100} make run")
    assert second.stdout == ""  # no emulator, no replica: nothing was started


def test_demo_model_answers_through_its_mock_replica(stack):
    key = stack.new_key()

    answer = stack.client(key["api_key"]).chat.completions.create(
        model="mock/llm", messages=[{"role": "user", "content": "Hello"}])

    assert answer.choices[0].message.content
    assert answer.usage.total_tokens > 0


def test_mock_llm_answers_without_a_replica_and_still_meters():
    own = start_local_stack({"MOCK_LLM": "true", "MOCK_REPLICA": "0"})
    try:
        own.register_model("mocked/model")
        key = own.new_key()
        client = own.client(key["api_key"])

        answer = client.chat.completions.create(model="mocked/model", messages=[{"role": "user", "content": "Hi"}])
        chunks = list(client.chat.completions.create(model="mocked/model", stream=True,
                                                     messages=[{"role": "user", "content": "Hi"}]))

        assert answer.choices[0].message.content
        assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert len(own.usage_rows(key["id"], expected=2)) == 2
    finally:
        own.stop()
