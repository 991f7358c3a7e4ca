"""The relay without a network: canonical events, [DONE], keep-alives, errors, and the answer cap."""

import io
import json

import pytest
import urllib3

from chalicelib.chat import sse
from chalicelib.chat.relay import read_answer, relay_events, upstream_events
from chalicelib.core.errors import UpstreamFailed, UpstreamTimedOut

CHUNK = b'{"choices":[{"index":0,"delta":{"content":"Hi"}}]}'
USAGE = b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'


class FakeMeter:
    def __init__(self) -> None:
        self.status = 200
        self.usage = None
        self.time_to_first_token = None
        self.store_content = False
        self.answer: list[str] = []

    def first_token(self) -> None:
        self.time_to_first_token = 0.1

    def relayed(self, pieces: list[str]) -> None:
        self.first_token()

    def observe_answer(self, payload: dict) -> None:
        self.usage = payload.get("usage")

    def fail(self, error) -> None:
        self.status = error.status


def response(body: bytes, headers: dict[str, str] | None = None) -> urllib3.HTTPResponse:
    return urllib3.HTTPResponse(body=io.BytesIO(body), headers=headers or {}, status=200, preload_content=False)


def relayed(*items, wants_usage=False):
    meter = FakeMeter()
    return b"".join(relay_events(iter(items), meter, wants_usage)), meter


def test_events_are_relayed_in_canonical_form_and_the_usage_chunk_is_metered_but_held_back():
    body, meter = relayed(sse.Event(CHUNK), sse.Event(USAGE), sse.Event(b"[DONE]"))

    assert body == b"data: " + CHUNK + b"\n\ndata: [DONE]\n\n"
    assert meter.usage["completion_tokens"] == 1 and meter.time_to_first_token is not None


def test_comments_are_relayed_as_keep_alives():
    body, _ = relayed(sse.Comment(b"ping"), sse.Event(CHUNK), sse.Event(b"[DONE]"))

    assert body.startswith(sse.KEEP_ALIVE)


def test_a_stream_ending_without_done_is_completed_by_the_proxy():
    body, meter = relayed(sse.Event(CHUNK))

    assert body.endswith(b"data: [DONE]\n\n") and meter.status == 200


def test_nothing_after_done_is_read_or_relayed():
    read = []

    def events():
        yield sse.Event(b"[DONE]")
        read.append("after")
        yield sse.Event(CHUNK)

    body = b"".join(relay_events(events(), FakeMeter(), False))

    assert body == b"data: [DONE]\n\n" and read == []


def test_json_over_several_data_lines_is_metered():
    body, meter = relayed(sse.Event(USAGE.replace(b',"usage"', b',\n"usage"')), wants_usage=True)

    assert meter.usage["total_tokens"] == 4
    assert body.startswith(b'data: {"choices":[],\ndata: "usage"')


def test_a_failure_mid_stream_ends_it_with_an_error_event_and_its_status():
    def events():
        yield sse.Event(CHUNK)
        raise UpstreamTimedOut("The model stopped answering.", code="upstream_timeout")

    meter = FakeMeter()
    body = b"".join(relay_events(events(), meter, False))

    last = json.loads(body.split(b"\n\n")[-2].removeprefix(b"data: "))
    assert last["error"]["code"] == "upstream_timeout" and meter.status == 504


def test_an_oversized_upstream_event_is_an_upstream_failure():
    events = upstream_events(response(b"data: " + b"x" * (sse.MAX_EVENT_BYTES + 1)))

    with pytest.raises(UpstreamFailed):
        list(events)


def test_non_streamed_answer_over_the_cap_without_a_length_is_refused_while_read():
    payload = json.dumps({"usage": {}, "pad": "x" * 5000}).encode()

    with pytest.raises(UpstreamFailed, match="over 1000 bytes"):
        read_answer(response(payload), FakeMeter(), max_bytes=1000)


class CountingBody(io.BytesIO):
    reads = 0

    def read1(self, size: int = -1) -> bytes:
        self.reads += 1
        return super().read1(size)

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def test_non_streamed_answer_declaring_a_length_over_the_cap_is_refused_unread_and_closed():
    body = CountingBody(b"{}")

    with pytest.raises(UpstreamFailed):
        read_answer(urllib3.HTTPResponse(body=body, headers={"content-length": "5000"}, preload_content=False),
                    FakeMeter(), max_bytes=1000)

    assert body.reads == 0 and body.closed


def test_non_streamed_answer_under_the_cap_is_metered_and_passed_whole():
    payload = json.dumps({"usage": {"total_tokens": 9}}).encode()
    meter = FakeMeter()

    assert read_answer(response(payload), meter, max_bytes=1000) == payload
    assert meter.usage == {"total_tokens": 9}


def test_an_answer_past_its_deadline_is_a_timeout():
    with pytest.raises(UpstreamTimedOut):
        read_answer(response(b"{}"), FakeMeter(), deadline=0.0)


# Running usage: always asked of the replica, shown to the client only as asked

RUNNING = b'{"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}'


def relayed_as(*items, wants_usage=False, wants_running_usage=False):
    meter = FakeMeter()
    body = b"".join(relay_events(iter(items), meter, wants_usage, wants_running_usage))
    return [line.removeprefix(b"data: ") for line in body.split(b"\n\n") if line], meter


def test_running_usage_is_metered_and_taken_out_of_chunks_for_a_client_that_did_not_ask():
    events, meter = relayed_as(sse.Event(RUNNING), sse.Event(USAGE), sse.Event(b"[DONE]"))

    assert events == [CHUNK, b"[DONE]"]
    assert meter.usage["completion_tokens"] == 1


def test_a_client_asking_for_the_final_usage_gets_it_but_not_the_running_usage():
    events, _ = relayed_as(sse.Event(RUNNING), sse.Event(USAGE), wants_usage=True)

    assert events == [CHUNK, USAGE, b"[DONE]"]


def test_a_client_asking_for_running_usage_gets_every_chunk_as_the_replica_sent_it():
    events, _ = relayed_as(sse.Event(RUNNING), sse.Event(USAGE), wants_usage=True, wants_running_usage=True)

    assert events == [RUNNING, USAGE, b"[DONE]"]


def test_a_chunk_without_usage_is_relayed_byte_for_byte():
    spaced = b'{"choices": [{"index": 0, "delta": {"content": "caf\\u00e9"}}]}'

    events, _ = relayed_as(sse.Event(spaced))

    assert events == [spaced, b"[DONE]"]
