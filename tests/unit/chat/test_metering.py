"""Usage rows are never lost: retried, cut to fit, or logged whole for replay (DynamoDB emulated by moto).

Failures are injected at the network edge: a botocore hook fails the metric table's PutItem calls.
"""

import io
import json
from collections.abc import Callable, Iterator

import pytest
from botocore.exceptions import EndpointConnectionError

from chalicelib.admin import usage_replay
from chalicelib.chat import metering
from chalicelib.chat.access import Caller
from chalicelib.chat.metering import MAX_CONTENT_BYTES, Meter
from chalicelib.chat.request import parse_chat_request
from chalicelib.core.observability import logger
from chalicelib.store.tables import Metric, UsageCount


@pytest.fixture
def log_lines(capsys) -> Iterator[Callable[[], list[str]]]:
    """What the function prints: the logger's JSON lines and the metrics' (EMF) lines."""
    buffer = io.StringIO()
    previous = logger.registered_handler.setStream(buffer)
    yield lambda: buffer.getvalue().splitlines() + capsys.readouterr().out.splitlines()
    logger.registered_handler.setStream(previous)


@pytest.fixture
def fail_puts(api, monkeypatch) -> Callable[[float], None]:
    """Make the next `count` PutItem calls fail as an unreachable endpoint would; no waits between retries."""
    monkeypatch.setattr(metering, "RETRY_DELAYS", (0, 0, 0))
    client = Metric._get_connection().connection.client
    left = []

    def hook(**_):
        if left and left[0] > 0:
            left[0] -= 1
            raise EndpointConnectionError(endpoint_url="http://dynamodb.invalid")

    client.meta.events.register("before-call.dynamodb.PutItem", hook)

    def arm(count: float) -> None:
        left[:] = [count]

    yield arm
    client.meta.events.unregister("before-call.dynamodb.PutItem", hook)


def meter_for(content: str = "hi", store_content: bool = False) -> Meter:
    body = {"model": "m/x", "messages": [{"role": "user", "content": content}]}
    caller = Caller(key_id=7, key_hash="h7", user_id="alice", allowed_rpm=10, remaining=9, reset_seconds=30)
    meter = Meter(caller, parse_chat_request(json.dumps(body).encode(), 8 << 20), 1_800_000_000.0)
    meter.store_content = store_content
    meter.usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    return meter


def test_row_is_written_after_failed_attempts(fail_puts):
    fail_puts(len(metering.RETRY_DELAYS))

    meter_for().write()

    rows = list(Metric.scan())
    assert [(row.api_key_id, row.total_tokens) for row in rows] == [(7, 8)]


def test_content_over_the_item_limit_is_cut_to_fit_and_marked(api):
    meter = meter_for(content="é" * 300_000, store_content=True)
    meter.answer.append("ü" * 200_000)

    meter.write()

    row = next(Metric.scan())
    assert row.content_truncated is True
    assert len(row.input.encode()) + len(row.choices.encode()) <= MAX_CONTENT_BYTES
    assert row.choices.startswith("ü") and len(row.choices.encode()) >= MAX_CONTENT_BYTES // 2


def test_table_view_shows_that_a_rows_content_was_cut(api):
    meter = meter_for(content="x" * (MAX_CONTENT_BYTES + 1), store_content=True)
    meter.write()

    rows = api.get("/v1/tables/metric").json["data"]

    assert [row["content_truncated"] for row in rows] == [True]


def test_content_that_fits_is_stored_whole_and_not_marked(api):
    meter = meter_for(content="hello", store_content=True)
    meter.answer.append("world")

    meter.write()

    row = next(Metric.scan())
    assert (json.loads(row.input)[0]["content"], row.choices, row.content_truncated) == ("hello", "world", None)


def test_row_that_cannot_be_written_is_logged_whole_and_counted(fail_puts, log_lines):
    fail_puts(float("inf"))

    meter_for().write()

    lines = log_lines()
    logged = [json.loads(line) for line in lines if metering.LOST_ROW_MESSAGE in line]
    assert len(logged) == 1 and logged[0]["level"] == "ERROR"
    assert logged[0]["usage_row"]["total_tokens"] == 8 and logged[0]["usage_row"]["api_key_id"] == 7
    metrics = [json.loads(line) for line in lines if '"UsageRowsLost"' in line]
    assert len(metrics) == 1 and metrics[0]["UsageRowsLost"] == [1.0]
    assert metrics[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": "UsageRowsLost", "Unit": "Count"}]
    assert Metric.count() == 0


def test_logged_rows_are_replayed_once(fail_puts, log_lines):
    fail_puts(float("inf"))
    meter_for().write()
    lines = log_lines()
    fail_puts(0)

    first = usage_replay.replay(lines)
    second = usage_replay.replay(lines)

    assert (first, second) == ((1, 0), (0, 1))
    assert [row.total_tokens for row in Metric.scan()] == [8]
    assert [(count.requests, count.total_tokens) for count in UsageCount.scan()] == [(1, 8)]


def test_written_row_is_counted_once_and_a_failed_count_is_logged_for_replay(api, log_lines, monkeypatch):
    def refuse(row):
        raise EndpointConnectionError(endpoint_url="http://dynamodb.invalid")

    monkeypatch.setattr(metering, "RETRY_DELAYS", (0, 0, 0))
    meter_for().write()
    with monkeypatch.context() as patched:
        patched.setattr(metering.usage_counters, "count", refuse)
        meter_for().write()
    lines = log_lines()

    assert usage_replay.replay(lines) == (0, 0) and usage_replay.replay(lines) == (0, 0)
    assert [(count.requests, count.total_tokens) for count in UsageCount.scan()] == [(2, 16)]
    assert Metric.count() == 2


def test_retries_stop_at_the_deadline(fail_puts, monkeypatch):
    monkeypatch.setattr(metering, "RETRY_DELAYS", (60, 60, 60))
    fail_puts(1)
    meter = meter_for()
    meter.deadline = 1.0  # long past: no time to wait for a retry

    meter.write()

    assert Metric.count() == 0


# Every relayed token metered: a stream's running usage, or what was relayed when the replica reports none


def streamed_meter(usage: dict | None, pieces: int, content: str = "x" * 40) -> Meter:
    body = {"model": "m/x", "stream": True, "messages": [{"role": "user", "content": content}]}
    caller = Caller(key_id=7, key_hash="h7", user_id="alice", allowed_rpm=10, remaining=9, reset_seconds=30)
    meter = Meter(caller, parse_chat_request(json.dumps(body).encode(), 8 << 20), 1_800_000_000.0)
    meter.usage = usage
    for _ in range(pieces):
        meter.relayed([" word"])
    return meter


def test_a_streams_usage_counting_at_least_what_was_relayed_is_kept_as_the_replica_said(api):
    row = streamed_meter({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, pieces=2).write()

    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens, row.usage_estimated) == (3, 2, 5, None)


def test_a_stream_without_any_usage_counts_one_token_per_relayed_piece_and_says_it_is_estimated(api):
    row = streamed_meter(None, pieces=2).write()

    prompt = -(-len(json.dumps([{"role": "user", "content": "x" * 40}]).encode()) // 4)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (prompt, 2, prompt + 2)
    assert row.usage_estimated is True


def test_a_running_usage_behind_what_was_relayed_is_raised_to_it_keeping_the_replicas_prompt(api):
    row = streamed_meter({"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}, pieces=3).write()

    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens, row.usage_estimated) == (3, 3, 6, True)


def test_a_stream_that_relayed_nothing_meters_nothing(api):
    row = streamed_meter(None, pieces=0).write()

    assert (row.total_tokens, row.usage_estimated) == (None, None)


# Logs never hold a prompt or an answer; a replay goes on past a row it cannot count


def test_a_lost_row_is_logged_without_its_prompt_or_answer_even_when_content_is_stored(fail_puts, log_lines):
    fail_puts(float("inf"))
    meter = meter_for(content="MARKER-PROMPT", store_content=True)
    meter.answer.append("MARKER-ANSWER")

    meter.write()

    lines = log_lines()
    (logged,) = [json.loads(line)["usage_row"] for line in lines if metering.LOST_ROW_MESSAGE in line]
    assert not any("MARKER" in line for line in lines)
    assert "input" not in logged and "choices" not in logged and logged["content_truncated"] is True
    assert logged["total_tokens"] == 8


def test_replay_skips_and_reports_a_row_it_cannot_count_and_goes_on(api):
    row = {"id": 41, "api_key_id": 7, "created": 1_800_000_000, "model": "m/x", "total_tokens": 8, "status": 200}
    too_long = {**row, "id": 42, "model": "\U0001F600" * 300}  # 1,200 bytes: past the counters' sort key limit
    lines = [json.dumps({"message": metering.LOST_ROW_MESSAGE, "usage_row": logged}) for logged in (too_long, row)]
    skipped = []

    written = usage_replay.replay(lines, lambda skipped_row, reason: skipped.append((skipped_row["id"], reason)))

    assert written == (1, 0)
    assert [row_id for row_id, _ in skipped] == [42]
    assert [(count.requests, count.total_tokens) for count in UsageCount.scan()] == [(1, 8)]
