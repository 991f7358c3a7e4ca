"""Completion and embeddings requests validated as OpenAI and vLLM define them; the operation a path names."""

import json

import pytest

from chalicelib.chat import operations
from chalicelib.chat.openai_errors import error_body
from chalicelib.chat.operations import CHAT, COMPLETIONS, EMBEDDINGS
from chalicelib.chat.request import parse_request
from chalicelib.core.errors import ApiError


def completion(**body):
    return parse_request(json.dumps({"model": "m/x", "prompt": "Once upon", **body}).encode(), 1 << 20, COMPLETIONS)


def embedding(**body):
    return parse_request(json.dumps({"model": "m/x", "input": "hello", **body}).encode(), 1 << 20, EMBEDDINGS)


def refusal(parse, **body) -> dict:
    with pytest.raises(ApiError) as raised:
        parse(**body)
    assert raised.value.status == 400
    return error_body(raised.value)


PROMPTS = ["Once upon", "", ["a", "b"], [1, 2, 3], [[1, 2], [3]]]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_completion_prompt_in_each_openai_shape_is_accepted(prompt):
    assert completion(prompt=prompt).body["prompt"] == prompt


@pytest.mark.parametrize(("prompt", "param"), [
    ([], "prompt"), (["a", 1], "prompt.1"), ([[1], 2], "prompt.1"), ([[]], "prompt.0"), ([-1], "prompt.0"),
    ([["a"]], "prompt.0.0"), (3, "prompt"), (None, "prompt"), ([True], "prompt.0"),
])
def test_completion_prompt_of_no_openai_shape_is_refused_naming_it(prompt, param):
    assert refusal(completion, prompt=prompt)["error"]["param"] == param


def test_completion_without_a_prompt_is_refused():
    with pytest.raises(ApiError) as raised:
        parse_request(b'{"model": "m/x"}', 1 << 20, COMPLETIONS)

    assert error_body(raised.value)["error"]["param"] == "prompt"


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 2.5), ("top_p", 1.5), ("presence_penalty", 3), ("frequency_penalty", -2.5), ("max_tokens", -1),
    ("n", 0), ("best_of", 0), ("logprobs", -1), ("logprobs", True), ("echo", "yes"), ("suffix", 3), ("stop", 5),
    ("stop", ["ok", 3]), ("seed", 1.5), ("stream", "yes"), ("logit_bias", {"50256": 101}), ("user", 1),
])
def test_out_of_range_completion_parameter_is_refused_naming_it(field, value):
    body = refusal(completion, **{field: value})

    assert body["error"]["param"].split(".")[0] == field
    assert body["error"]["type"] == "invalid_request_error"


def test_completion_max_tokens_of_zero_is_accepted_for_echo_scoring():
    assert completion(max_tokens=0, echo=True, logprobs=1).body["max_tokens"] == 0


def test_completion_stream_options_without_stream_are_refused():
    assert refusal(completion, stream_options={"include_usage": True})["error"]["param"] == "stream_options"


def test_streamed_completion_always_asks_the_replica_for_usage():
    request = completion(stream=True)

    assert json.loads(request.upstream_body())["stream_options"] == {"include_usage": True,
                                                                     "continuous_usage_stats": True}
    assert request.stream and not request.client_wants_usage


def test_completion_vllm_parameters_pass_through_untouched():
    extras = {"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "guided_regex": "a+", "prompt_logprobs": 2}

    assert json.loads(completion(**extras).upstream_body()) == {"model": "m/x", "prompt": "Once upon", **extras}


@pytest.mark.parametrize("value", ["hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_embedding_input_in_each_openai_shape_is_accepted(value):
    assert embedding(input=value).body["input"] == value


@pytest.mark.parametrize(("value", "param"), [
    ("", "input"), ([], "input"), ([""], "input.0"), (["a", [1]], "input.1"), ([[]], "input.0"), (None, "input"),
])
def test_empty_or_mixed_embedding_input_is_refused_naming_it(value, param):
    assert refusal(embedding, input=value)["error"]["param"] == param


@pytest.mark.parametrize(("field", "value"), [
    ("encoding_format", "int8"), ("dimensions", 0), ("dimensions", 1.5), ("user", 3), ("model", ""),
])
def test_out_of_range_embedding_parameter_is_refused_naming_it(field, value):
    assert refusal(embedding, **{field: value})["error"]["param"] == field


def test_embedding_request_is_never_a_stream_and_its_extras_pass_through():
    request = embedding(stream=True, truncate_prompt_tokens=16, encoding_format="base64", dimensions=4)

    assert not request.stream
    assert json.loads(request.upstream_body()) == {"model": "m/x", "input": "hello", "stream": True,
                                                   "truncate_prompt_tokens": 16, "encoding_format": "base64",
                                                   "dimensions": 4}


@pytest.mark.parametrize(("path", "operation"), [
    ("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETIONS), ("/v1/embeddings", EMBEDDINGS),
    ("/api/v1/completions/", COMPLETIONS), ("/v1/embeddings?x=1", EMBEDDINGS), ("/v1/moderations", None),
    ("/v1/completions/extra", None), ("/", None),
])
def test_a_path_names_its_operation(path, operation):
    assert operations.for_path(path) is operation


def test_each_operation_goes_to_the_same_path_under_the_replicas_endpoint():
    assert [operation.replica_path for operation in operations.OPERATIONS] == [
        "/chat/completions", "/completions", "/embeddings"]
