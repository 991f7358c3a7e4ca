"""The mock completions and embeddings: vLLM's reply shapes, deterministic, with tokens that agree."""

import base64
import json
import math
import struct

import pytest

from chalicelib.chat.mock import completions as mock_completions
from chalicelib.chat.mock import embeddings as mock_embeddings
from chalicelib.chat.mock.answers import answer
from chalicelib.chat.operations import COMPLETIONS, EMBEDDINGS
from chalicelib.core.errors import BadRequest

MODEL = "mock/model"


def streamed(request):
    events = list(mock_completions.stream_events(request, model=MODEL))
    assert events[-1] == b"data: [DONE]\n\n"
    return [json.loads(event.removeprefix(b"data: ")) for event in events[:-1]]


def test_completion_has_vllms_text_completion_shape():
    reply = mock_completions.completion({"prompt": "Tell me a story", "max_tokens": 5}, model=MODEL)

    assert reply["id"].startswith("cmpl-") and reply["object"] == "text_completion"
    assert [choice["finish_reason"] for choice in reply["choices"]] == ["length"]
    assert reply["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9,
                              "prompt_tokens_details": None}


def test_completion_is_deterministic_and_answers_the_prompt():
    first, second = (mock_completions.completion({"prompt": "Tell me a story"}, model=MODEL) for _ in range(2))

    assert first["choices"] == second["choices"]
    assert first["choices"][0]["text"].startswith("Mock answer to: Tell me a story")


def test_n_choices_per_prompt_are_indexed_prompt_by_prompt():
    reply = mock_completions.completion({"prompt": ["a", [1, 2]], "n": 2}, model=MODEL)

    assert [choice["index"] for choice in reply["choices"]] == [0, 1, 2, 3]
    assert reply["usage"]["prompt_tokens"] == 3  # one word, two token ids: each prompt counted once


def test_echo_puts_the_prompt_before_the_text():
    reply = mock_completions.completion({"prompt": "Say", "echo": True, "max_tokens": 2}, model=MODEL)

    assert reply["choices"][0]["text"].startswith("SayMock")


def test_stream_text_adds_up_to_the_completion_and_usage_comes_last_when_asked():
    request = {"prompt": "Tell me a story", "stream": True, "stream_options": {"include_usage": True}}
    chunks = streamed(request)
    whole = mock_completions.completion(request, model=MODEL)

    text = "".join(choice["text"] for chunk in chunks[:-1] for choice in chunk["choices"])
    assert text == whole["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == whole["usage"][
        "completion_tokens"]


@pytest.mark.parametrize("prompt", [None, [], ["a", 1], [[1], "a"], [[]], 5])
def test_completion_problem_names_a_prompt_of_no_openai_shape(prompt):
    assert mock_completions.request_problem({"prompt": prompt}).startswith("prompt")


def test_embeddings_are_unit_vectors_of_eight_numbers_the_same_for_the_same_text():
    reply = mock_embeddings.embeddings({"input": ["same", "same", "other"]}, model=MODEL)
    vectors = [item["embedding"] for item in reply["data"]]

    assert reply["object"] == "list" and [item["index"] for item in reply["data"]] == [0, 1, 2]
    assert [len(vector) for vector in vectors] == [8, 8, 8]
    assert vectors[0] == vectors[1] != vectors[2]
    assert math.isclose(sum(value * value for value in vectors[0]), 1.0, rel_tol=1e-5)
    assert reply["usage"] == {"prompt_tokens": 3, "total_tokens": 3, "completion_tokens": 0,
                              "prompt_tokens_details": None}


def test_base64_embedding_is_the_little_endian_float32_of_the_float_one():
    floats = mock_embeddings.embeddings({"input": "hi", "dimensions": 4}, model=MODEL)["data"][0]["embedding"]
    encoded = mock_embeddings.embeddings({"input": "hi", "dimensions": 4, "encoding_format": "base64"},
                                         model=MODEL)["data"][0]["embedding"]

    assert list(struct.unpack("<4f", base64.b64decode(encoded))) == floats


@pytest.mark.parametrize(("request_body", "param"), [
    ({"input": "x", "dimensions": mock_embeddings.MAX_DIMENSIONS + 1}, "dimensions"),
    ({"input": ["x"] * 2049, "dimensions": 128}, "input"),
    ({"input": ""}, "input"),
])
def test_mock_llm_refuses_embeddings_the_mock_model_cannot_make_naming_why(request_body, param):
    with pytest.raises(BadRequest) as raised:
        answer(EMBEDDINGS, {"model": MODEL, **request_body}, MODEL)

    assert raised.value.param == param


def test_mock_llm_refuses_more_completion_choices_than_the_mock_model_makes():
    with pytest.raises(BadRequest) as raised:
        answer(COMPLETIONS, {"model": MODEL, "prompt": ["a"] * 10, "n": 13}, MODEL)

    assert raised.value.param == "n"
