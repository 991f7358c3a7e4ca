"""A real model end to end: the local stack with LOCAL_REPLICA=smollm2 (llama.cpp serving SmolLM2-135M-Instruct
in the stack's process), through the official openai client and the proxy, compared with direct calls."""

import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from infra.local import llama_replica
from tests.conftest import missing_prerequisite
from tests.integration.conftest import LocalStack, start_local_stack
from tests.integration.provisioned import create_vm_replica, delete_replica, wait_for

MODEL = llama_replica.SMOLLM2_MODEL
MESSAGES = [{"role": "user", "content": "Name three colours."}]
EXACT = {"temperature": 0, "seed": 7, "max_tokens": 24}  # what makes a proxied and a direct answer comparable


@pytest.fixture(scope="module", autouse=True)
def model_installed() -> None:
    if not llama_replica.available():
        missing_prerequisite("the local model (llama.cpp, SmolLM2-135M)", llama_replica.INSTALL_HINT)


@pytest.fixture(scope="module")
def real_stack() -> Iterator[LocalStack]:
    stack = start_local_stack({"LOCAL_REPLICA": "smollm2", "LOCAL_REPLICA_PORT": "0", "MOCK_REPLICA": "0",
                               "REPLICA_CACHE_SECONDS": "1"})
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def replica_url(real_stack: LocalStack) -> str:
    """The llama.cpp server's OpenAI base URL, as the stack registered it."""
    reply = real_stack.admin.get(real_stack.url("/v1/models/" + urllib.parse.quote(MODEL, safe="")))
    assert reply.status_code == 200, reply.text
    return reply.json()["replicas"][0]["endpoint"]


@pytest.fixture
def key(real_stack: LocalStack) -> dict:
    return real_stack.new_key(allowed_rpm=1000)


def proxied(stack: LocalStack, key: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url("/v1"), api_key=key["api_key"], max_retries=0, timeout=60)


def direct(replica_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=replica_url, api_key="unused", max_retries=0, timeout=60)


def counts(usage) -> tuple[int, int, int]:
    # Only the three counts: llama.cpp's prompt cache makes `cached_tokens` differ from one call to the next.
    return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens


def test_non_streamed_answer_and_usage_equal_the_replicas_own(real_stack, replica_url, key):
    through = proxied(real_stack, key).chat.completions.create(model=MODEL, messages=MESSAGES, **EXACT)
    straight = direct(replica_url).chat.completions.create(model=MODEL, messages=MESSAGES, **EXACT)

    assert through.choices[0].message.content == straight.choices[0].message.content
    assert through.choices[0].message.content.strip()
    assert counts(through.usage) == counts(straight.usage)
    assert through.model == MODEL


def test_streamed_answer_and_usage_equal_the_replicas_own(real_stack, replica_url, key):
    params = {**EXACT, "stream": True, "stream_options": {"include_usage": True}}
    through = list(proxied(real_stack, key).chat.completions.create(model=MODEL, messages=MESSAGES, **params))
    straight = list(direct(replica_url).chat.completions.create(model=MODEL, messages=MESSAGES, **params))

    def text(chunks) -> str:
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

    assert text(through) == text(straight) != ""
    assert counts(through[-1].usage) == counts(straight[-1].usage)


def test_max_tokens_is_honoured(real_stack, key):
    answer = proxied(real_stack, key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        temperature=0, max_tokens=5)

    assert answer.usage.completion_tokens == 5
    assert answer.choices[0].finish_reason == "length"


def test_stop_sequence_is_honoured(real_stack, key):
    client = proxied(real_stack, key)
    free = client.chat.completions.create(model=MODEL, messages=MESSAGES, **EXACT).choices[0].message.content
    stop = free.split()[2]  # a word the unconstrained answer reaches: the stopped answer must end just before it
    stopped = client.chat.completions.create(model=MODEL, messages=MESSAGES, stop=[stop], **EXACT)

    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == free[: free.index(stop)]


def test_usage_row_holds_the_real_token_counts(real_stack, key):
    answer = proxied(real_stack, key).chat.completions.create(model=MODEL, messages=MESSAGES, **EXACT)

    rows = real_stack.usage_rows(key["id"])

    assert [(row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) for row in rows] == [
        counts(answer.usage)]
    assert rows[0]["model"] == MODEL and rows[0]["status"] == 200


def test_unknown_model_is_refused_by_the_proxy_although_llama_cpp_would_answer(real_stack, replica_url, key):
    straight = direct(replica_url).chat.completions.create(model="no/such-model", messages=MESSAGES, max_tokens=2)

    with pytest.raises(openai.NotFoundError):
        proxied(real_stack, key).chat.completions.create(model="no/such-model", messages=MESSAGES, max_tokens=2)
    assert straight.model == MODEL  # llama.cpp serves whatever the request names; vLLM would answer 404


def test_vllm_sampling_parameters_pass_through(real_stack, key):
    answer = proxied(real_stack, key).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4,
        extra_body={"top_k": 1, "min_p": 0.05, "repetition_penalty": 1.1})

    assert answer.usage.completion_tokens > 0


def test_rpm_limit_holds_against_the_real_server(real_stack):
    limited = real_stack.new_key(allowed_rpm=2)
    client = proxied(real_stack, limited)
    for _ in range(2):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)

    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)


def slots_busy(replica_url: str) -> float:
    metrics = requests.get(replica_url.removesuffix("/v1") + "/metrics", timeout=5).text
    return float(next(line.split()[1] for line in metrics.splitlines()
                      if line.startswith("llamacpp:requests_processing")))


def test_client_that_disconnects_mid_stream_leaves_a_499_row_and_frees_the_slot(real_stack, replica_url, key):
    # ignore_eos (llama.cpp's own parameter, passed through) keeps the generation going ~20 s unless cancelled.
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 2000, "ignore_eos": True}
    with requests.post(real_stack.url("/v1/chat/completions"), json=body, stream=True, timeout=30,
                       headers={"Authorization": f"Bearer {key['api_key']}"}) as reply:
        next(reply.iter_lines())
    rows = real_stack.usage_rows(key["id"])
    deadline = time.monotonic() + 5
    while slots_busy(replica_url) and time.monotonic() < deadline:
        time.sleep(0.1)
    busy = slots_busy(replica_url)
    started = time.monotonic()
    with ThreadPoolExecutor(llama_replica.DEFAULT_SLOTS) as pool:
        follow_ups = list(pool.map(
            lambda _: proxied(real_stack, key).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8),
            range(llama_replica.DEFAULT_SLOTS)))
    elapsed = time.monotonic() - started

    assert [row["status"] for row in rows] == [499]
    assert busy == 0
    assert all(answer.usage.completion_tokens > 0 for answer in follow_ups)
    assert elapsed < 10


def test_provisioned_vm_answers_with_the_real_model(real_stack, key):
    name = "it-vm/SmolLM2-on-a-vm"
    _, replica_id = create_vm_replica(real_stack, name)
    ready = wait_for(real_stack, replica_id, {"SUCCESS", "FAILED"})
    answer = proxied(real_stack, key).chat.completions.create(model=name, messages=MESSAGES, max_tokens=8)
    delete_replica(real_stack, replica_id)
    gone = wait_for(real_stack, replica_id, {None})

    assert ready["vm_status"] == "SUCCESS", ready["error_message"]
    assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
    assert gone is None


def test_real_model_completion_streamed_and_not_equals_the_replicas_own(real_stack, replica_url, key):
    prompt = "The three primary colours are"
    through = proxied(real_stack, key).completions.create(model=MODEL, prompt=prompt, **EXACT)
    straight = direct(replica_url).completions.create(model=MODEL, prompt=prompt, **EXACT)
    streamed = list(proxied(real_stack, key).completions.create(model=MODEL, prompt=prompt, stream=True, **EXACT))

    assert through.choices[0].text == straight.choices[0].text and through.choices[0].text.strip()
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == through.choices[0].text


def test_real_model_embeds_a_string_and_a_list(real_stack, replica_url, key):
    one = proxied(real_stack, key).embeddings.create(model=MODEL, input="red")
    several = proxied(real_stack, key).embeddings.create(model=MODEL, input=["red", "green"])
    straight = direct(replica_url).embeddings.create(model=MODEL, input="red")

    assert len(one.data) == 1 and len(several.data) == 2
    assert len(one.data[0].embedding) == len(straight.data[0].embedding) > 0
    assert one.data[0].embedding == pytest.approx(straight.data[0].embedding, abs=1e-5)
    assert one.usage.prompt_tokens > 0
