"""`POST /v1/chat/completions` through the official openai client and the local stack."""

import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from infra.local.mock_vllm import MockVllm

MESSAGES = [{"role": "user", "content": "Say something about proxies"}]


def direct(replica: MockVllm, **params):
    return openai.OpenAI(base_url=replica.base_url, api_key="unused", max_retries=0).chat.completions.create(
        model=replica.model, messages=MESSAGES, **params)


@pytest.fixture
def key(stack):
    return stack.new_key()


def test_non_streamed_answer_is_the_replicas_answer(stack, served, replica, key):
    through_proxy = stack.client(key["api_key"]).chat.completions.create(model=served, messages=MESSAGES)
    straight = direct(replica)

    assert through_proxy.choices == straight.choices
    assert through_proxy.usage == straight.usage
    assert through_proxy.model == served


def test_streamed_answer_relays_every_chunk_and_hides_usage_not_asked_for(stack, served, replica, key):
    chunks = list(stack.client(key["api_key"]).chat.completions.create(model=served, messages=MESSAGES, stream=True))
    forwarded = replica.last_request
    straight = list(direct(replica, stream=True))

    assert [chunk.choices for chunk in chunks] == [chunk.choices for chunk in straight]
    assert all(chunk.usage is None for chunk in chunks)
    assert forwarded["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_streamed_usage_chunk_is_forwarded_when_asked_for(stack, served, replica, key):
    chunks = list(stack.client(key["api_key"]).chat.completions.create(
        model=served, messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    straight = list(direct(replica, stream=True, stream_options={"include_usage": True}))

    assert chunks[-1].choices == []
    assert chunks[-1].usage == straight[-1].usage


def test_stream_arrives_incrementally(stack, model_name, key):
    with MockVllm(model=model_name, pace_seconds=0.1) as slow:
        stack.register_model(model_name, slow.base_url)
        started = time.monotonic()
        arrivals = []
        for _ in stack.client(key["api_key"]).chat.completions.create(
                model=model_name, messages=MESSAGES, stream=True, max_tokens=8):
            arrivals.append(time.monotonic() - started)

    assert arrivals[0] < arrivals[-1] / 2  # the first token came long before the last, not all at once


def test_usage_row_holds_the_answers_token_counts(stack, served, key):
    answer = stack.client(key["api_key"]).chat.completions.create(model=served, messages=MESSAGES)

    rows = stack.usage_rows(key["id"])

    assert len(rows) == 1
    row = rows[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens)
    assert row["model"] == served and row["status"] == 200 and row["streamed"] is False
    assert row["input"] is None and row["choices"] is None  # prompts are not stored unless opted in


def test_streamed_usage_row_is_written_without_the_client_asking(stack, served, key):
    list(stack.client(key["api_key"]).chat.completions.create(model=served, messages=MESSAGES, stream=True))

    rows = stack.usage_rows(key["id"])

    assert rows[0]["streamed"] is True
    assert rows[0]["completion_tokens"] > 0 and rows[0]["time_to_first_token"] is not None


def test_client_that_disconnects_mid_stream_leaves_a_usage_row_and_frees_the_replica(stack, model_name, key):
    with MockVllm(model=model_name, pace_seconds=0.2) as slow:
        stack.register_model(model_name, slow.base_url)
        with requests.post(stack.url("/v1/chat/completions"), stream=True, timeout=10,
                           headers={"Authorization": f"Bearer {key['api_key']}"},
                           json={"model": model_name, "messages": MESSAGES, "stream": True, "max_tokens": 50}) as reply:
            next(reply.iter_lines())
        rows = stack.usage_rows(key["id"])

    assert [row["status"] for row in rows] == [499]


def test_missing_or_unknown_key_is_an_authentication_error(stack, served):
    with pytest.raises(openai.AuthenticationError):
        stack.client("hsk_not-a-key").chat.completions.create(model=served, messages=MESSAGES)
    reply = requests.post(stack.url("/v1/chat/completions"), json={"model": served, "messages": MESSAGES})
    assert reply.status_code == 401
    assert reply.json()["error"]["type"] == "authentication_error"


def test_disabled_key_is_refused(stack, served, key):
    stack.client(key["api_key"]).chat.completions.create(model=served, messages=MESSAGES)
    stack.usage_rows(key["id"])
    disabled = stack.admin.post(stack.url("/v1/delete_api_key"), json={"user_id": "it-user", "api_key_id": key["id"]})

    assert disabled.json() == {"message": "API key disabled successfully"}
    with pytest.raises(openai.AuthenticationError):
        stack.client(key["api_key"]).chat.completions.create(model=served, messages=MESSAGES)


def test_key_limited_to_other_models_is_permission_denied(stack, served):
    limited = stack.new_key(models=["someone/else"])

    with pytest.raises(openai.PermissionDeniedError):
        stack.client(limited["api_key"]).chat.completions.create(model=served, messages=MESSAGES)


def test_unknown_model_is_not_found(stack, key):
    with pytest.raises(openai.NotFoundError) as raised:
        stack.client(key["api_key"]).chat.completions.create(model="no/such-model", messages=MESSAGES)

    assert raised.value.code == "model_not_found"


def test_model_without_a_ready_replica_is_unavailable(stack, model_name, key):
    stack.register_model(model_name)

    with pytest.raises(openai.InternalServerError) as raised:
        stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=MESSAGES)

    assert raised.value.status_code == 503


def test_invalid_parameter_is_a_bad_request_naming_it(stack, served, key):
    with pytest.raises(openai.BadRequestError) as raised:
        stack.client(key["api_key"]).chat.completions.create(model=served, messages=MESSAGES, temperature=3)

    assert raised.value.param == "temperature"
    assert raised.value.body["param"] == "temperature"
    assert "temperature" in raised.value.response.json()["errors"]


def test_vllm_sampling_parameters_pass_through_untouched(stack, served, replica, key):
    extra = {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "guided_choice": ["yes", "no"]}

    stack.client(key["api_key"]).chat.completions.create(model=served, messages=MESSAGES, extra_body=extra)

    assert {name: replica.last_request[name] for name in extra} == extra


def _wait_for_a_fresh_minute(margin: float = 8) -> None:
    """Rate limits count per minute: start a burst where it cannot straddle two windows."""
    into_minute = time.time() % 60
    if into_minute > 60 - margin:
        time.sleep(60 - into_minute + 0.2)


def test_rate_limit_is_exact_under_concurrent_load(stack, served):
    limited = stack.new_key(allowed_rpm=5)
    client = stack.client(limited["api_key"])

    def call(_: int) -> int:
        try:
            client.chat.completions.create(model=served, messages=MESSAGES, max_tokens=2)
            return 200
        except openai.RateLimitError as error:
            assert error.response.headers["retry-after"]
            assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
            assert error.body["code"] == "rate_limit_exceeded"
            assert error.response.json()["allowed_rpm"] == 5
            return 429

    _wait_for_a_fresh_minute()
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(call, range(30)))

    assert statuses.count(200) == 5
    assert statuses.count(429) == 25


def test_dead_replica_is_skipped(stack, model_name, replica, key):
    dead = MockVllm(model=model_name).start()
    dead.stop()
    stack.register_model(model_name, dead.base_url, replica.base_url)

    answers = [stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=MESSAGES)
               for _ in range(4)]

    assert len(answers) == 4
    assert replica.requests_seen == 4


def test_replica_answering_500_before_the_first_byte_is_skipped(stack, model_name, replica, second_replica, key):
    second_replica.mode = "error500"
    stack.register_model(model_name, second_replica.base_url, replica.base_url)

    for _ in range(3):
        stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=MESSAGES)

    assert replica.requests_seen == 3


def conversation(number: int) -> list[dict]:
    """A conversation of its own: its own routing key (prefix affinity keeps one conversation on one replica)."""
    return [{"role": "user", "content": f"Conversation {number}: say something about proxies"}]


def test_conversations_are_spread_over_replicas(stack, model_name, replica, second_replica, key):
    stack.register_model(model_name, replica.base_url, second_replica.base_url)

    for number in range(20):  # each lands by its key's rendezvous order: all 20 on one replica is 1 in 2^19
        stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=conversation(number),
                                                             max_tokens=1)

    assert replica.requests_seen > 0 and second_replica.requests_seen > 0


def test_replica_rate_limit_sends_the_excess_elsewhere(stack, model_name, replica, second_replica, key):
    stack.register_model(model_name, replica.base_url, second_replica.base_url, rate_limits=(1, None))
    _wait_for_a_fresh_minute()

    for number in range(12):  # some conversations rank the limited replica first: it takes one, the rest spill
        stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=conversation(number),
                                                             max_tokens=1)

    assert replica.requests_seen == 1
    assert second_replica.requests_seen == 11


def test_no_live_replica_is_a_bad_gateway(stack, model_name, key):
    dead = MockVllm(model=model_name).start()
    dead.stop()
    stack.register_model(model_name, dead.base_url)

    with pytest.raises(openai.InternalServerError) as raised:
        stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=MESSAGES)

    assert raised.value.status_code == 502


def test_stalled_replica_is_a_gateway_timeout(stack, model_name, replica, key):
    replica.mode = "stall"
    stack.register_model(model_name, replica.base_url)

    with pytest.raises(openai.InternalServerError) as raised:
        stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=MESSAGES)

    assert raised.value.status_code == 504


def test_replica_dying_mid_stream_ends_with_an_error_event(stack, model_name, replica, key):
    replica.mode = "die_mid_stream"
    stack.register_model(model_name, replica.base_url)
    received = []

    with pytest.raises(openai.APIError):
        for chunk in stack.client(key["api_key"]).chat.completions.create(
                model=model_name, messages=MESSAGES, stream=True):
            received.append(chunk)

    assert received  # what came before the failure was relayed
    assert [row["status"] for row in stack.usage_rows(key["id"])] == [502]


def test_upstream_client_error_is_passed_through_with_its_message(stack, model_name, replica, key):
    replica.mode = "error400"
    stack.register_model(model_name, replica.base_url)

    with pytest.raises(openai.BadRequestError) as raised:
        stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=MESSAGES)

    assert "error400" in raised.value.message
