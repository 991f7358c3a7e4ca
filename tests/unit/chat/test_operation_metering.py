"""Each operation's usage row: its name, its tokens, and what content it keeps (DynamoDB emulated by moto)."""

import json

import pytest

from chalicelib.chat import sse
from chalicelib.chat.access import Caller
from chalicelib.chat.metering import Meter
from chalicelib.chat.operations import CHAT, COMPLETIONS, EMBEDDINGS
from chalicelib.chat.relay import relay_events
from chalicelib.chat.request import parse_request
from chalicelib.store.tables import Metric

BODIES = {
    CHAT: {"model": "m/x", "messages": [{"role": "user", "content": "hi"}]},
    COMPLETIONS: {"model": "m/x", "prompt": "Once upon"},
    EMBEDDINGS: {"model": "m/x", "input": ["one", "two"]},
}
EMBEDDING_ANSWER = {"object": "list", "data": [{"index": 0, "object": "embedding", "embedding": [0.5, 0.25]}],
                    "usage": {"prompt_tokens": 2, "total_tokens": 2}}


def meter_for(operation, store_content=False, **body) -> Meter:
    request = parse_request(json.dumps({**BODIES[operation], **body}).encode(), 1 << 20, operation)
    caller = Caller(key_id=7, key_hash="h7", user_id="alice", allowed_rpm=10, remaining=9, reset_seconds=30)
    meter = Meter(caller, request, 1_800_000_000.0)
    meter.store_content = store_content
    return meter


def written(meter: Meter) -> Metric:
    meter.write()
    return next(Metric.scan())


@pytest.mark.parametrize("operation", [CHAT, COMPLETIONS, EMBEDDINGS])
def test_row_names_its_operation(api, operation):
    assert written(meter_for(operation)).operation == operation.name


def test_embeddings_row_counts_prompt_tokens_only(api):
    meter = meter_for(EMBEDDINGS)
    meter.observe_answer(EMBEDDING_ANSWER)  # OpenAI's usage: no completion_tokens at all

    row = written(meter)

    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (2, 0, 2)


def test_embeddings_row_stores_the_input_and_never_the_vectors(api):
    meter = meter_for(EMBEDDINGS, store_content=True)
    meter.observe_answer(EMBEDDING_ANSWER)

    row = written(meter)

    assert (json.loads(row.input), row.choices) == (["one", "two"], None)


def test_failed_embeddings_row_has_no_token_counts(api):
    row = written(meter_for(EMBEDDINGS))

    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (None, None, None)


def test_completion_row_stores_the_prompt_and_the_choices(api):
    meter = meter_for(COMPLETIONS, store_content=True)
    meter.observe_answer({"choices": [{"index": 0, "text": " a time"}],
                          "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}})

    row = written(meter)

    assert (json.loads(row.input), json.loads(row.choices)[0]["text"]) == ("Once upon", " a time")
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (2, 2, 4)


def test_streamed_completion_text_is_metered_as_its_first_token_and_its_answer(api):
    meter = meter_for(COMPLETIONS, store_content=True, stream=True)
    chunk = {"object": "text_completion", "choices": [{"index": 0, "text": " a", "finish_reason": None}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}
    events = iter([sse.Event(json.dumps(chunk).encode()), sse.Event(json.dumps(usage).encode())])

    relayed = b"".join(relay_events(events, meter, client_wants_usage=False))
    row = written(meter)

    assert relayed.count(b"data: ") == 2  # the text chunk and [DONE]: usage not asked for is held back
    assert row.time_to_first_token is not None and row.choices == " a"
    assert (row.completion_tokens, row.total_tokens, row.streamed) == (1, 3, True)


def test_old_rows_without_an_operation_are_shown_with_none(api):
    Metric(1, api_key_id=1, created=1_700_000_000, model="m").save()

    rows = api.get("/v1/tables/metric").json["data"]

    assert [row["operation"] for row in rows] == [None]


def test_table_view_shows_each_rows_operation(api):
    meter_for(EMBEDDINGS).write()

    assert [row["operation"] for row in api.get("/v1/tables/metric").json["data"]] == ["embeddings"]
