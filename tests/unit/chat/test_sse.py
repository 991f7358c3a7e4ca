"""The incremental SSE parser: every dialect an OpenAI-compatible replica may speak, split anywhere."""

import pytest

from chalicelib.chat import sse
from chalicelib.chat.sse import Comment, Event, EventTooLarge, Parser

FIRST = b'{"id":"c1","choices":[{"delta":{"content":"Hi"}}]}'
SECOND = b'{"id":"c1","choices":[{"delta":{"content":" there"}}]}'
EXPECTED = [Event(FIRST), Event(SECOND), Event(b"[DONE]")]


def parse_whole(stream: bytes) -> list:
    return list(sse.parse([stream]))


def events(items: list) -> list[Event]:
    return [item for item in items if isinstance(item, Event)]


DIALECTS = {
    "lf": b"data: %s\n\ndata: %s\n\ndata: [DONE]\n\n" % (FIRST, SECOND),
    "crlf": b"data: %s\r\n\r\ndata: %s\r\n\r\ndata: [DONE]\r\n\r\n" % (FIRST, SECOND),
    "cr": b"data: %s\r\rdata: %s\r\rdata: [DONE]\r\r" % (FIRST, SECOND),
    "mixed line ends": b"data: %s\r\n\ndata: %s\n\r\ndata: [DONE]\r\r" % (FIRST, SECOND),
    "no space after the colon": b"data:%s\n\ndata:%s\n\ndata:[DONE]\n\n" % (FIRST, SECOND),
    "keep-alives and fields": (b"retry: 3000\n\n: ping\n\nid: 1\nevent: chunk\ndata: %s\n\n: ping - 2024\r\n\r\n"
                               b"id: 2\nevent: chunk\ndata: %s\n: inside an event\n\ndata: [DONE]\n\n"
                               % (FIRST, SECOND)),
    "done without a blank line": b"data: %s\n\ndata: %s\n\ndata: [DONE]\n" % (FIRST, SECOND),
    "done without any line end": b"data: %s\n\ndata: %s\n\ndata: [DONE]" % (FIRST, SECOND),
    "byte order mark": b"\xef\xbb\xbfdata: %s\n\ndata: %s\n\ndata: [DONE]\n\n" % (FIRST, SECOND),
    "unknown fields and a field without colon": (b"foo: bar\ndata: %s\nignored\n\ndata: %s\n\ndata: [DONE]\n\n"
                                                 % (FIRST, SECOND)),
}


@pytest.mark.parametrize("stream", DIALECTS.values(), ids=DIALECTS.keys())
def test_every_dialect_gives_the_same_events(stream):
    assert events(parse_whole(stream)) == EXPECTED


@pytest.mark.parametrize("stream", DIALECTS.values(), ids=DIALECTS.keys())
def test_a_stream_split_at_any_byte_gives_the_same_events(stream):
    whole = parse_whole(stream)
    for offset in range(len(stream) + 1):
        assert list(sse.parse([stream[:offset], stream[offset:]])) == whole, offset


@pytest.mark.parametrize("stream", DIALECTS.values(), ids=DIALECTS.keys())
def test_a_stream_fed_byte_by_byte_gives_the_same_events(stream):
    assert list(sse.parse(stream[i:i + 1] for i in range(len(stream)))) == parse_whole(stream)


MULTI_LINE = b'data: {"id":"c1",\r\ndata: "n":1}\r\n\r\ndata: [DONE]\r\n\r\n'


def test_crlf_event_of_several_data_lines_split_at_any_byte_stays_one_event():
    for offset in range(len(MULTI_LINE) + 1):
        items = list(sse.parse([MULTI_LINE[:offset], MULTI_LINE[offset:]]))
        assert items == [Event(b'{"id":"c1",\n"n":1}'), Event(b"[DONE]")], offset


def test_cr_ending_one_read_and_lf_starting_the_next_are_one_line_end():
    parser = Parser()

    items = parser.feed(b"data: a\r") + parser.feed(b"\ndata: b\r") + parser.feed(b"\n\r") + parser.feed(b"\n")

    assert items == [Event(b"a\nb")]  # the LF after a read's CR is no blank line: "a" is not cut off early


def test_a_lone_cr_at_the_end_of_a_read_ends_the_line_at_once():
    parser = Parser()

    assert parser.feed(b"data: a\r\r") == [Event(b"a")]
    assert parser.feed(b"data: b\n\n") == [Event(b"b")]


def test_data_lines_are_joined_with_lf():
    assert parse_whole(b"data: {\"a\":\ndata: 1}\n\n") == [Event(b'{"a":\n1}')]


def test_an_empty_data_field_is_an_event_and_an_event_without_data_is_not():
    assert parse_whole(b"data:\n\nevent: nothing\nid: 7\n\n") == [Event(b"")]


def test_comments_are_reported_without_their_colon():
    assert parse_whole(b": ping\n\n:\n\n") == [Comment(b"ping"), Comment(b"")]


def test_an_event_is_dispatched_as_soon_as_its_blank_line_arrives():
    parser = Parser()

    assert parser.feed(b"data: one\n") == []
    assert parser.feed(b"\n") == [Event(b"one")]


def test_event_over_the_bound_is_refused_while_it_accumulates():
    parser = Parser(max_event_bytes=100)
    parser.feed(b"data: " + b"x" * 60 + b"\n")

    with pytest.raises(EventTooLarge):
        parser.feed(b"data: " + b"y" * 50)  # not even a complete line yet


def test_a_line_without_end_over_the_bound_is_refused():
    parser = Parser(max_event_bytes=100)

    with pytest.raises(EventTooLarge):
        for _ in range(20):
            parser.feed(b": " + b"z" * 10)


def test_events_under_the_bound_pass_however_many():
    parser = Parser(max_event_bytes=100)

    items = [item for _ in range(50) for item in parser.feed(b"data: " + b"x" * 80 + b"\n\n")]

    assert len(items) == 50


def test_the_default_bound_is_one_mebibyte():
    big = b"x" * (sse.MAX_EVENT_BYTES - 10)

    assert parse_whole(b"data: " + big + b"\n\n") == [Event(big)]
    with pytest.raises(EventTooLarge):
        parse_whole(b"data: " + big + b"x" * 20 + b"\n\n")


@pytest.mark.parametrize(("event", "wire"), [
    (Event(b'{"a":1}'), b'data: {"a":1}\n\n'),
    (Event(b"[DONE]"), b"data: [DONE]\n\n"),
    (Event(b'{"a":\n1}'), b'data: {"a":\ndata: 1}\n\n'),
    (Event(b""), b"data: \n\n"),
])
def test_events_are_encoded_in_the_canonical_lf_form(event, wire):
    assert sse.encode(event) == wire
    assert parse_whole(wire) == [event]
