"""The chat edge against replicas that speak other SSE dialects, misbehave or are too slow.

A stack of its own, with short timeouts: the idle timeout (1 s) and the request deadline (4 s) fire
within seconds; the first-byte timeout (10 s) is longer than the deadline, so that the deadline is
seen to cap it; non-streamed answers are capped at 16 KiB.
"""

import time

import openai
import pytest
import requests

from infra.local.mock_vllm import MockVllm
from tests.integration.conftest import start_local_stack

MESSAGES = [{"role": "user", "content": "Say something about dialects"}]
IDLE_SECONDS = 1
DEADLINE_SECONDS = 4
MAX_ANSWER_BYTES = 16 * 1024
FAULT_ENV = {
    "UPSTREAM_TIMEOUT_SECONDS": "10",
    "UPSTREAM_CONNECT_TIMEOUT_SECONDS": "1",
    "UPSTREAM_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS),
    "CHAT_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
    "MAX_UPSTREAM_ANSWER_BYTES": str(MAX_ANSWER_BYTES),
    "REPLICA_CACHE_SECONDS": "1",
}


@pytest.fixture(scope="module")
def faults_stack():
    running = start_local_stack(FAULT_ENV)
    yield running
    running.stop()


@pytest.fixture
def key(faults_stack):
    return faults_stack.new_key()


@pytest.fixture
def replica(faults_stack, model_name):
    with MockVllm(model=model_name) as running:
        faults_stack.register_model(model_name, running.base_url)
        yield running


def stream_through(stack, key, model, **params):
    return list(stack.client(key["api_key"]).chat.completions.create(
        model=model, messages=MESSAGES, stream=True, **params))


def direct_ok_stream(replica, **params):
    """What the same replica streams in mode "ok", straight to the official client."""
    mode, replica.mode = replica.mode, "ok"
    try:
        client = openai.OpenAI(base_url=replica.base_url, api_key="unused", max_retries=0)
        return list(client.chat.completions.create(model=replica.model, messages=MESSAGES, stream=True, **params))
    finally:
        replica.mode = mode


def streamed_failure(stack, key, model):
    """(chunks received, the APIError that ended the stream, seconds it took)."""
    received = []
    started = time.monotonic()
    with pytest.raises(openai.APIError) as raised:
        for chunk in stack.client(key["api_key"]).chat.completions.create(
                model=model, messages=MESSAGES, stream=True):
            received.append(chunk)
    return received, raised.value, time.monotonic() - started


def wait_until_released(replica, wait=3.0):
    """Whether the replica saw its connection closed (its reply ended) within `wait` seconds."""
    deadline = time.monotonic() + wait
    while replica.replies_in_progress and time.monotonic() < deadline:
        time.sleep(0.05)
    return replica.replies_in_progress == 0


@pytest.mark.parametrize("mode", ["crlf", "split_cr", "keepalive", "no_done", "done_no_blank"])
def test_every_sse_dialect_relays_the_same_chunks_and_meters_them(faults_stack, replica, key, mode):
    replica.mode = mode

    chunks = stream_through(faults_stack, key, replica.model, stream_options={"include_usage": True})
    rows = faults_stack.usage_rows(key["id"])

    expected = direct_ok_stream(replica, stream_options={"include_usage": True})
    assert [chunk.choices for chunk in chunks] == [chunk.choices for chunk in expected]
    assert chunks[-1].usage == expected[-1].usage
    assert [(row["status"], row["completion_tokens"]) for row in rows] == [(200, expected[-1].usage.completion_tokens)]


@pytest.mark.parametrize("mode", ["crlf", "split_cr", "keepalive", "done_no_blank", "no_done"])
def test_relayed_stream_is_canonical_lf_sse_ending_with_done(faults_stack, replica, key, mode):
    replica.mode = mode

    reply = requests.post(faults_stack.url("/v1/chat/completions"), timeout=10,
                          headers={"Authorization": f"Bearer {key['api_key']}"},
                          json={"model": replica.model, "messages": MESSAGES, "stream": True})

    body = reply.content
    assert b"\r" not in body
    assert body.endswith(b"data: [DONE]\n\n") and body.count(b"[DONE]") == 1
    blocks = body.removesuffix(b"\n\n").split(b"\n\n")
    assert all(line.startswith((b"data: ", b": keep-alive")) for block in blocks for line in block.split(b"\n"))


def test_keep_alive_comments_are_relayed_and_event_fields_are_not(faults_stack, replica, key):
    replica.mode = "keepalive"

    reply = requests.post(faults_stack.url("/v1/chat/completions"), timeout=10,
                          headers={"Authorization": f"Bearer {key['api_key']}"},
                          json={"model": replica.model, "messages": MESSAGES, "stream": True})

    assert b": keep-alive\n\n" in reply.content
    assert not any(field in reply.content for field in (b"event:", b"id:", b"retry:"))


def test_event_over_one_mebibyte_ends_the_stream_with_an_error_event_and_a_502_row(faults_stack, replica, key):
    replica.mode = "oversized_event"

    received, error, _ = streamed_failure(faults_stack, key, replica.model)

    assert len(received) == 1  # the role chunk; the oversized one is refused, not relayed
    assert error.body["code"] == "upstream_failed"
    assert [row["status"] for row in faults_stack.usage_rows(key["id"])] == [502]
    assert wait_until_released(replica)


def test_replica_dying_mid_stream_is_a_502_row(faults_stack, replica, key):
    replica.mode = "die_mid_stream"

    received, error, _ = streamed_failure(faults_stack, key, replica.model)

    assert received and error.body["code"] == "upstream_failed"
    assert [row["status"] for row in faults_stack.usage_rows(key["id"])] == [502]


def test_silent_replica_mid_stream_hits_the_idle_timeout_and_is_closed(faults_stack, replica, key):
    replica.mode = "idle"

    received, error, took = streamed_failure(faults_stack, key, replica.model)

    assert len(received) == 1
    assert error.body["code"] == "upstream_timeout"
    assert IDLE_SECONDS <= took < DEADLINE_SECONDS  # the idle timeout, not the deadline
    assert [row["status"] for row in faults_stack.usage_rows(key["id"])] == [504]
    assert wait_until_released(replica)


def test_trickling_replica_is_cut_at_the_deadline_and_closed(faults_stack, replica, key):
    replica.mode = "trickle"  # a byte every 50 ms: the idle timeout never fires

    received, error, took = streamed_failure(faults_stack, key, replica.model)

    assert received == []
    assert error.body["code"] == "upstream_timeout"
    assert DEADLINE_SECONDS - 0.5 <= took < DEADLINE_SECONDS + 2
    assert [row["status"] for row in faults_stack.usage_rows(key["id"])] == [504]
    assert wait_until_released(replica)


@pytest.mark.parametrize(("mode", "at_least", "below"), [
    ("stall", DEADLINE_SECONDS - 0.5, DEADLINE_SECONDS + 2),  # no headers: the deadline caps the 10 s wait
    ("idle", IDLE_SECONDS, DEADLINE_SECONDS),  # half the body, then silence
    ("trickle", DEADLINE_SECONDS - 0.5, DEADLINE_SECONDS + 2),  # never silent, never done
])
def test_non_streamed_answer_not_in_time_is_a_504_in_openai_shape(faults_stack, replica, key, mode, at_least, below):
    replica.mode = mode
    started = time.monotonic()

    with pytest.raises(openai.InternalServerError) as raised:
        faults_stack.client(key["api_key"]).chat.completions.create(model=replica.model, messages=MESSAGES)
    took = time.monotonic() - started

    assert raised.value.status_code == 504
    assert raised.value.body["code"] == "upstream_timeout"
    assert at_least <= took < below
    assert [row["status"] for row in faults_stack.usage_rows(key["id"])] == [504]


def test_non_streamed_answer_over_the_cap_is_a_502_and_one_under_it_passes(faults_stack, replica, key):
    client = faults_stack.client(key["api_key"])
    small = client.chat.completions.create(model=replica.model, messages=MESSAGES, max_tokens=200,
                                           extra_body={"ignore_eos": True})

    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model=replica.model, messages=MESSAGES, max_tokens=4000,
                                       extra_body={"ignore_eos": True})

    assert small.usage.completion_tokens == 200
    assert raised.value.status_code == 502
    assert raised.value.body["code"] == "upstream_failed"
    assert sorted(row["status"] for row in faults_stack.usage_rows(key["id"], expected=2)) == [200, 502]
