"""Parsing outside JSON with its cost bounded: depth, value count, UTF-8, no NaN."""

import json
import tracemalloc

import pytest

from chalicelib.chat.request import parse_chat_request
from chalicelib.core import bounded_json
from chalicelib.core.bounded_json import MAX_DEPTH, MAX_VALUES, InvalidJson
from chalicelib.core.errors import ApiError

FOUR_MIB = 4 * 1024 * 1024


def refusal(raw: bytes) -> str:
    with pytest.raises(InvalidJson) as raised:
        bounded_json.loads(raw)
    assert raised.value.status == 400
    return raised.value.message


def test_ordinary_json_parses_as_json_loads_does():
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": 'say "hi" \\ there, {[:'}],
                      "temperature": 0.5, "stop": ["]", "}"]}).encode()

    assert bounded_json.loads(raw) == json.loads(raw)


def test_nesting_at_the_limit_parses_and_one_deeper_is_refused():
    at_limit = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH

    assert bounded_json.loads(at_limit) is not None
    assert "nests deeper" in refusal(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))


def test_thousands_deep_nesting_is_a_400_not_a_recursion_error():
    assert "nests deeper" in refusal(b'{"a":' * 5000 + b"1" + b"}" * 5000)


def test_brackets_inside_strings_do_not_count_as_nesting():
    raw = json.dumps({"content": "[" * 10_000 + '\\"{' * 1000}).encode()

    assert bounded_json.loads(raw) == json.loads(raw)


def test_many_flat_containers_that_stay_shallow_are_not_mistaken_for_depth():
    raw = json.dumps([[1]] * 1000).encode()

    assert len(bounded_json.loads(raw)) == 1000


def test_more_values_than_the_limit_are_refused_before_parsing():
    raw = b"[" + b"{}," * MAX_VALUES + b"{}]"

    assert "more than" in refusal(raw)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_refused(constant):
    assert "not a number" in refusal(b'{"temperature": ' + constant + b"}")


@pytest.mark.parametrize("raw", [b'{"a": "\xff"}', "{}".encode("utf-16"), "{}".encode("utf-32")])
def test_bytes_that_are_not_utf8_are_refused(raw):
    assert refusal(raw) == "Request body is not valid UTF-8."


def test_syntax_error_keeps_the_plain_message():
    assert refusal(b"name=x") == "Request body is not valid JSON."


def test_lone_surrogate_escape_survives_the_round_trip_to_the_replica():
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'

    request = parse_chat_request(raw, FOUR_MIB)

    assert json.loads(request.upstream_body())["messages"][0]["content"] == "\ud800"


WORST_CHAT_BODIES = {
    # as many small objects as the value limit allows
    "objects": lambda: json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}] * 45_000}),
    # one huge string of 4-byte characters (stored 4 bytes per character), as a vision image would be
    "astral": lambda: json.dumps({"model": "m", "messages": [{"role": "user", "content": "\U0001F600" * 1_000_000}]},
                                 ensure_ascii=False),
    # many distinct numbers
    "numbers": lambda: json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                   "logit_bias": {str(i): 1.5 for i in range(60_000)}}),
}


@pytest.mark.parametrize("name", WORST_CHAT_BODIES)
def test_worst_chat_bodies_within_the_cap_stay_within_a_memory_budget(name):
    raw = WORST_CHAT_BODIES[name]().encode()
    assert len(raw) <= FOUR_MIB
    tracemalloc.start()
    try:
        try:
            parse_chat_request(raw, FOUR_MIB).upstream_body()
        except ApiError:
            pass  # a refusal is an answer too: what is measured is the memory it took to get there
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 60 * 1024 * 1024, f"{name}: {peak / 2**20:.1f} MiB"


# Counting values in time linear in the body, whatever its shape

ONE_MIB = 1024 * 1024


@pytest.mark.parametrize("text", [
    '{"a": [1, 2, {"b": "c,d:[{"}]}', '["\\"", "x\\\\", {"k\\"": "v\\\\"}]', '"just, a: [string{"',
    '[[], {}, [{}], {"": []}]', '{"\\\\\\"": "\\\\\\\\\\"", "x": ["\\u0022,", ","]}',
])
def test_values_are_counted_outside_strings_escapes_and_all(text):
    raw = text.encode()
    outside = reference_outside(raw)

    assert bounded_json._values(raw, MAX_VALUES) == 1 + sum(outside.count(symbol) for symbol in "[{,:")


def reference_outside(raw: bytes) -> str:
    """The text with its strings removed, by a plain character-by-character reading of JSON."""
    out, inside, escaped = [], False, False
    for char in raw.decode():
        if inside:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                inside = False
        elif char == '"':
            inside = True
        else:
            out.append(char)
    return "".join(out)


@pytest.mark.parametrize("name", ["escaped quotes, then commas", "an unterminated string of escaped quotes",
                                  "quotes and commas", "a lone backslash at the end"])
def test_hostile_shapes_of_a_mebibyte_are_refused_in_one_pass(name):
    """Before, the first body took hours of CPU: each `\\"` started a scan to the end. The test's timeout is
    the bound here, not a timed assertion: a quadratic count would not finish."""
    body = {
        "escaped quotes, then commas": '{"model":"m","messages":"' + '\\"' * 100_000 + "," * (ONE_MIB - 200_030),
        "an unterminated string of escaped quotes": '{"model":"m","messages":"' + '\\"' * (ONE_MIB // 2),
        "quotes and commas": '{"model":"m","messages":[' + '",' * (ONE_MIB // 2),
        "a lone backslash at the end": '{"a":"' + '\\"' * 100_000 + "," * 300_000 + "\\",
    }[name].encode()

    assert refusal(body) in ("Request body is not valid JSON.", f"Request body holds more than {MAX_VALUES} values.")
