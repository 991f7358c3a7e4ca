"""The mock replies: vLLM's reply shapes, with token counts that agree with the content."""

import json

import pytest

from chalicelib.chat.mock import replies as mock_replies

MODEL = "mock/model"


def chat(**fields):
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        **fields,
    }


def events(request):
    return list(mock_replies.stream_events(request, model=MODEL))


def chunks(request):
    """The JSON chunks of a stream, without [DONE]."""
    return [json.loads(event.removeprefix(b"data: ")) for event in events(request)[:-1]]


def streamed_content(request):
    return "".join(choice["delta"].get("content", "") for chunk in chunks(request) for choice in chunk["choices"])


def test_completion_has_vllm_shape():
    reply = mock_replies.completion(chat(), model=MODEL)

    assert reply["id"].startswith("chatcmpl-")
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["created"], int)
    assert reply["model"] == MODEL
    [choice] = reply["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["tool_calls"] == []
    assert choice["logprobs"] is None
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", None)
    assert set(reply["usage"]) == {"prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details"}


def test_usage_counts_agree_with_the_prompt_and_the_content():
    request = chat()

    reply = mock_replies.completion(request, model=MODEL)

    usage = reply["usage"]
    content = reply["choices"][0]["message"]["content"]
    assert usage["prompt_tokens"] == len(mock_replies.tokenize("You answer briefly. What is the capital of France?"))
    assert usage["completion_tokens"] == len(mock_replies.tokenize(content)) == mock_replies.DEFAULT_ANSWER_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_prompt_tokens_count_only_the_text_parts_of_a_list_content():
    request = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe this"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "please."},
    ]}]}

    assert mock_replies.prompt_tokens(request) == 4


def test_same_request_gives_same_content():
    first = mock_replies.completion(chat(), model=MODEL)
    second = mock_replies.completion(chat(), model=MODEL)

    assert first["choices"] == second["choices"]
    assert first["usage"] == second["usage"]


def test_answer_echoes_the_last_user_message():
    content = mock_replies.completion(chat(), model=MODEL)["choices"][0]["message"]["content"]

    assert content.startswith("Mock answer to: What is the capital of France")


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_cap_shortens_the_answer_and_finishes_with_length(field):
    reply = mock_replies.completion(chat(**{field: 5}), model=MODEL)

    assert reply["usage"]["completion_tokens"] == 5
    assert reply["choices"][0]["message"]["content"] == "Mock answer to: What"
    assert reply["choices"][0]["finish_reason"] == "length"


def test_the_smaller_of_both_caps_wins():
    reply = mock_replies.completion(chat(max_tokens=9, max_completion_tokens=3), model=MODEL)

    assert reply["usage"]["completion_tokens"] == 3


def test_cap_above_the_natural_length_finishes_with_stop():
    reply = mock_replies.completion(chat(max_tokens=100), model=MODEL)

    assert reply["usage"]["completion_tokens"] == mock_replies.DEFAULT_ANSWER_TOKENS
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_ignore_eos_runs_to_the_cap_and_min_tokens_lengthens():
    to_cap = mock_replies.completion(chat(max_tokens=40, ignore_eos=True), model=MODEL)
    longer = mock_replies.completion(chat(min_tokens=30), model=MODEL)

    assert to_cap["usage"]["completion_tokens"] == 40
    assert to_cap["choices"][0]["finish_reason"] == "length"
    assert longer["usage"]["completion_tokens"] == 30


@pytest.mark.parametrize("stop", [" capital", [" nowhere", " capital"]])
def test_stop_string_truncates_before_it_and_is_the_stop_reason(stop):
    reply = mock_replies.completion(chat(stop=stop), model=MODEL)

    choice = reply["choices"][0]
    assert choice["message"]["content"] == "Mock answer to: What is the"
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", " capital")
    assert reply["usage"]["completion_tokens"] == 7


def test_earliest_stop_string_wins():
    reply = mock_replies.completion(chat(stop=["France", "answer"]), model=MODEL)

    assert reply["choices"][0]["message"]["content"] == "Mock "
    assert reply["choices"][0]["stop_reason"] == "answer"


def test_stop_string_beyond_the_cap_does_not_apply():
    reply = mock_replies.completion(chat(max_tokens=3, stop="France"), model=MODEL)

    assert reply["choices"][0]["message"]["content"] == "Mock answer to"
    assert reply["choices"][0]["finish_reason"] == "length"


def test_n_gives_n_choices_and_counts_all_their_tokens():
    reply = mock_replies.completion(chat(n=3), model=MODEL)

    assert [choice["index"] for choice in reply["choices"]] == [0, 1, 2]
    assert len({choice["message"]["content"] for choice in reply["choices"]}) == 3
    assert reply["usage"]["completion_tokens"] == 3 * mock_replies.DEFAULT_ANSWER_TOKENS


def test_stream_is_framed_as_sse_and_ends_with_done():
    framed = events(chat(stream=True))

    assert framed[-1] == b"data: [DONE]\n\n"
    assert all(event.startswith(b"data: ") and event.endswith(b"\n\n") for event in framed)
    assert all(b"\n" not in event[:-2] for event in framed)


def test_stream_chunks_share_id_created_and_object():
    streamed = chunks(chat(stream=True))

    assert len({(chunk["id"], chunk["created"], chunk["model"]) for chunk in streamed}) == 1
    assert {chunk["object"] for chunk in streamed} == {"chat.completion.chunk"}


def test_stream_opens_with_the_role_then_one_chunk_per_token_then_the_finish():
    streamed = chunks(chat(stream=True, max_tokens=4))

    deltas = [chunk["choices"][0]["delta"] for chunk in streamed]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Mock"}, {"content": " answer"},
                      {"content": " to"}, {"content": ":"}, {"content": ""}]
    assert [chunk["choices"][0]["finish_reason"] for chunk in streamed] == [None] * 5 + ["length"]


def test_streamed_content_equals_the_non_streamed_content():
    for fields in ({}, {"max_tokens": 7}, {"stop": "capital"}):
        expected = mock_replies.completion(chat(**fields), model=MODEL)["choices"][0]["message"]["content"]

        assert streamed_content(chat(stream=True, **fields)) == expected


def test_include_usage_adds_exactly_one_final_usage_chunk_with_empty_choices():
    request = chat(stream=True, stream_options={"include_usage": True})

    streamed = chunks(request)

    assert [chunk for chunk in streamed if "usage" in chunk] == [streamed[-1]]
    assert streamed[-1]["choices"] == []
    expected = mock_replies.completion(request, model=MODEL)["usage"]
    assert streamed[-1]["usage"] == {key: expected[key] for key in ("prompt_tokens", "total_tokens",
                                                                    "completion_tokens")}


@pytest.mark.parametrize("options", [None, {}, {"include_usage": False}])
def test_without_include_usage_no_chunk_carries_usage(options):
    streamed = chunks(chat(stream=True, stream_options=options))

    assert not [chunk for chunk in streamed if "usage" in chunk]
    assert all(chunk["choices"] for chunk in streamed)


def test_usage_chunk_counts_the_streamed_token_chunks():
    streamed = chunks(chat(stream=True, stop="France", stream_options={"include_usage": True}))

    token_chunks = [chunk for chunk in streamed if mock_replies.is_token_chunk(chunk)]
    assert streamed[-1]["usage"]["completion_tokens"] == len(token_chunks)


def test_models_list_has_vllm_shape():
    listing = mock_replies.models_list(MODEL)

    assert listing["object"] == "list"
    [card] = listing["data"]
    assert (card["id"], card["object"], card["owned_by"], card["root"], card["parent"]) == (
        MODEL, "model", "vllm", MODEL, None)
    assert isinstance(card["max_model_len"], int)
    assert card["permission"][0]["object"] == "model_permission"


def test_error_body_has_vllm_shape():
    body = mock_replies.error_body("The model `x` does not exist.", "NotFoundError", 404)

    assert body == {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError",
                    "param": None, "code": 404}


@pytest.mark.parametrize("request_body", [
    [], {}, {"messages": []}, {"messages": "hi"}, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"},
    {"messages": [{"role": "user", "content": "hi"}], "stop": 3},
])
def test_request_problem_names_what_vllm_refuses(request_body):
    assert mock_replies.request_problem(request_body)


def test_request_problem_accepts_a_plain_chat():
    assert mock_replies.request_problem(chat(stream=True, max_tokens=5, stop=["x"])) is None


def test_running_usage_puts_the_usage_so_far_in_every_chunk_as_vllm_does():
    request = chat(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})

    chunks = list(mock_replies.stream_chunks(request, model=MODEL))

    pieces = [chunk for chunk in chunks if chunk["choices"] and chunk["choices"][0]["delta"].get("content")]
    assert [chunk["usage"]["completion_tokens"] for chunk in pieces] == list(range(1, len(pieces) + 1))
    assert all("usage" in chunk for chunk in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == len(pieces)
