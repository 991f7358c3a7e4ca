"""`POST /v1/completions` and `/v1/embeddings` through the official openai client and the local stack: the chat
pipeline (the same key, limits, replica choice, relay and usage row) for the two other OpenAI operations."""

import base64
import struct

import openai
import pytest

from tests.integration.conftest import start_local_stack

PROMPT = "Once upon a time"


@pytest.fixture
def key(stack):
    return stack.new_key()


def direct(replica):
    return openai.OpenAI(base_url=replica.base_url, api_key="unused", max_retries=0)


def test_non_streamed_completion_is_the_replicas_answer(stack, served, replica, key):
    through_proxy = stack.client(key["api_key"]).completions.create(model=served, prompt=PROMPT, max_tokens=5)
    straight = direct(replica).completions.create(model=served, prompt=PROMPT, max_tokens=5)

    assert [choice.text for choice in through_proxy.choices] == [choice.text for choice in straight.choices]
    assert through_proxy.usage == straight.usage
    assert replica.last_request == {"model": served, "prompt": PROMPT, "max_tokens": 5}


def test_streamed_completion_relays_every_text_chunk_and_hides_usage_not_asked_for(stack, served, replica, key):
    chunks = list(stack.client(key["api_key"]).completions.create(model=served, prompt=PROMPT, stream=True))
    forwarded = replica.last_request
    straight = list(direct(replica).completions.create(model=served, prompt=PROMPT, stream=True))

    assert [chunk.choices[0].text for chunk in chunks] == [chunk.choices[0].text for chunk in straight]
    assert all(chunk.usage is None for chunk in chunks)
    assert forwarded["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_streamed_completion_usage_chunk_is_forwarded_when_asked_for(stack, served, key):
    chunks = list(stack.client(key["api_key"]).completions.create(
        model=served, prompt=PROMPT, stream=True, stream_options={"include_usage": True}))

    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_embeddings_of_a_string_and_of_a_list_are_the_replicas(stack, served, replica, key):
    client = stack.client(key["api_key"])

    one = client.embeddings.create(model=served, input="hello")
    several = client.embeddings.create(model=served, input=["hello", "world"], encoding_format="float")
    straight = direct(replica).embeddings.create(model=served, input=["hello", "world"], encoding_format="float")

    assert len(one.data) == 1 and len(one.data[0].embedding) == 8
    assert [item.embedding for item in several.data] == [item.embedding for item in straight.data]
    assert one.data[0].embedding == several.data[0].embedding  # the SDK's base64 default, decoded, is the same


def test_completion_and_embeddings_each_leave_a_usage_row_naming_the_operation(stack, served, key):
    client = stack.client(key["api_key"])
    completion = client.completions.create(model=served, prompt=PROMPT)
    list(client.completions.create(model=served, prompt=PROMPT, stream=True))
    embedding = client.embeddings.create(model=served, input=["a b", "c"])
    client.chat.completions.create(model=served, messages=[{"role": "user", "content": "hi"}])

    rows = sorted(stack.usage_rows(key["id"], expected=4), key=lambda row: row["id"])

    assert [(row["operation"], row["streamed"], row["status"]) for row in rows] == [
        ("completions", False, 200), ("completions", True, 200), ("embeddings", False, 200),
        ("chat.completions", False, 200)]
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"], rows[0]["total_tokens"]) == (
        completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens)
    assert rows[1]["completion_tokens"] > 0 and rows[1]["time_to_first_token"] is not None
    assert (rows[2]["prompt_tokens"], rows[2]["completion_tokens"], rows[2]["total_tokens"]) == (
        embedding.usage.prompt_tokens, 0, embedding.usage.prompt_tokens)


@pytest.mark.parametrize("call", ["completion", "embedding"])
def test_a_bad_key_is_an_authentication_error(stack, served, call):
    with pytest.raises(openai.AuthenticationError):
        _call(stack.client("hsk_not-a-key"), call, served)


@pytest.mark.parametrize("call", ["completion", "embedding"])
def test_a_key_over_its_limit_is_rate_limited(stack, served, call):
    key = stack.new_key(allowed_rpm=1)
    client = stack.client(key["api_key"])
    _call(client, call, served)

    with pytest.raises(openai.RateLimitError) as raised:
        _call(client, call, served)

    assert raised.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize("call", ["completion", "embedding"])
def test_an_unknown_model_is_not_found(stack, key, call):
    with pytest.raises(openai.NotFoundError) as raised:
        _call(stack.client(key["api_key"]), call, "no/such-model")

    assert raised.value.code == "model_not_found"


def test_a_bad_prompt_is_a_bad_request_naming_it(stack, served, key):
    with pytest.raises(openai.BadRequestError) as raised:
        stack.client(key["api_key"]).completions.create(model=served, prompt=["a", 1])

    assert raised.value.body["param"] == "prompt.1"


def test_mock_llm_answers_completions_and_embeddings_without_a_replica():
    own = start_local_stack({"MOCK_LLM": "true", "MOCK_REPLICA": "0"})
    try:
        own.register_model("mocked/model")
        key = own.new_key()
        client = own.client(key["api_key"])

        completion = client.completions.create(model="mocked/model", prompt=PROMPT)
        streamed = list(client.completions.create(model="mocked/model", prompt=PROMPT, stream=True))
        floats = client.embeddings.create(model="mocked/model", input="hi", dimensions=4, encoding_format="float")
        encoded = client.embeddings.with_raw_response.create(model="mocked/model", input="hi", dimensions=4,
                                                             encoding_format="base64").http_response.json()

        assert completion.choices[0].text.startswith("Mock answer to: Once upon a time")
        assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == completion.choices[0].text
        assert list(struct.unpack("<4f", base64.b64decode(encoded["data"][0]["embedding"]))) == floats.data[
            0].embedding
        assert len(own.usage_rows(key["id"], expected=4)) == 4
    finally:
        own.stop()


def _call(client, call, model):
    if call == "completion":
        return client.completions.create(model=model, prompt=PROMPT, max_tokens=2)
    return client.embeddings.create(model=model, input="hello")
