"""Chat request validation, as OpenAI and vLLM define it."""

import json

import pytest

from chalicelib.chat.openai_errors import error_body
from chalicelib.chat.request import parse_chat_request
from chalicelib.core.errors import ApiError

MESSAGES = [{"role": "user", "content": "hi"}]


def parse(**body):
    return parse_chat_request(json.dumps({"model": "m/x", "messages": MESSAGES, **body}).encode(), 1 << 20)


def refusal(**body) -> dict:
    with pytest.raises(ApiError) as raised:
        parse(**body)
    assert raised.value.status == 400
    return error_body(raised.value)


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 2.5), ("temperature", -0.1), ("top_p", 1.5), ("presence_penalty", 3),
    ("frequency_penalty", -2.5), ("max_tokens", 0), ("n", 0), ("top_logprobs", 21), ("stop", 5),
    ("stop", ["ok", 3]), ("logit_bias", {"50256": 101}), ("temperature", "hot"), ("stream", "yes"),
    ("tools", [{"type": "function"}]), ("tool_choice", "sometimes"), ("response_format", {"type": "xml"}),
])
def test_out_of_range_parameter_is_refused_naming_it(field, value):
    body = refusal(**{field: value, **({"logprobs": True} if field == "top_logprobs" else {})})

    assert body["error"]["param"].split(".")[0] == field
    assert body["error"]["type"] == "invalid_request_error"
    assert field in body["errors"]


def test_empty_messages_are_refused():
    assert refusal(messages=[])["error"]["param"] == "messages"


def test_message_without_content_is_refused():
    assert refusal(messages=[{"role": "user"}])["error"]["param"] == "messages.0.content"


def test_message_with_unknown_role_is_refused():
    assert refusal(messages=[{"role": "robot", "content": "x"}])["error"]["param"] == "messages.0.role"


def test_missing_model_is_refused():
    with pytest.raises(ApiError) as raised:
        parse_chat_request(json.dumps({"messages": MESSAGES}).encode(), 1 << 20)

    assert error_body(raised.value)["error"]["param"] == "model"


def test_top_logprobs_needs_logprobs():
    assert refusal(top_logprobs=2)["error"]["param"] == "top_logprobs"


def test_malformed_json_and_non_object_bodies_are_bad_requests():
    for raw in (b"{nope", b"[1, 2]", b'"text"'):
        with pytest.raises(ApiError) as raised:
            parse_chat_request(raw, 1 << 20)
        assert raised.value.status == 400


def test_oversize_body_is_refused_before_parsing():
    with pytest.raises(ApiError) as raised:
        parse_chat_request(b"x" * 101, 100)

    assert raised.value.status == 413


def test_vllm_extra_parameters_pass_through_untouched():
    extra = {"top_k": 5, "min_p": 0.1, "guided_json": {"type": "object"}, "repetition_penalty": 1.2}

    request = parse(**extra)

    assert json.loads(request.upstream_body()) == {"model": "m/x", "messages": MESSAGES, **extra}


def test_stream_always_asks_the_replica_for_usage_but_remembers_what_the_client_wanted():
    quiet, asking = parse(stream=True), parse(stream=True, stream_options={"include_usage": True})

    assert json.loads(quiet.upstream_body())["stream_options"] == {"include_usage": True,
                                                                   "continuous_usage_stats": True}
    assert (quiet.client_wants_usage, asking.client_wants_usage) == (False, True)


def test_valid_tools_and_named_tool_choice_are_accepted():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]

    request = parse(tools=tools, tool_choice={"type": "function", "function": {"name": "lookup"}})

    assert request.body["tools"] == tools
