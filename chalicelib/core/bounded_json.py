"""Parsing JSON that arrives from outside, with its cost bounded before it is built.

A body's size says little about what `json.loads` makes of it: 4 MiB of `[{},{},...]` becomes about a
million dicts, some 100 MB of Python objects, enough to get a 128 MB Lambda killed before the key is
even checked. So the values are counted before parsing. Counting the structural bytes (`[{,:`) of the
whole text is an upper bound that costs microseconds and no memory; only a text over that bound is
counted exactly, strings skipped, in time linear in its length whatever its shape (`make bench` measures
the worst shapes against `json.loads` of an ordinary body), stopping once the limit is passed.

Depth costs no memory, but code that recurses over a value (`json.dumps` included) fails on deep
nesting, so it is checked after parsing, and only when there are enough containers to go that deep.

Also refused: bytes that are not UTF-8 (`json.loads` would guess UTF-16 or UTF-32 from the first
bytes), and NaN/Infinity, which Python accepts but JSON does not (a replica would get invalid JSON).

Standard library only: this runs on the chat function's cold start.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib.core.errors import BadRequest

MAX_DEPTH = 64  # JSON schemas in `tools` nest deeply; nothing a client sends needs more
MAX_VALUES = 200_000  # tens of thousands of messages; each value costs at most ~100 bytes of memory

_CHUNK = 1024 * 1024  # the parts of one chunk are built at a time: at most a few MB for the worst text

class InvalidJson(BadRequest):
    """A body that is not JSON, or not JSON the service will build."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_json")


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> Any:
    """`raw` parsed, or InvalidJson saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("Request body is not valid UTF-8.") from None
    containers = raw.count(b"[") + raw.count(b"{")
    if 1 + containers + raw.count(b",") + raw.count(b":") > max_values and _values(raw, max_values) > max_values:
        raise InvalidJson(f"Request body holds more than {max_values} values.")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        raise InvalidJson("Request body is not valid JSON.") from None
    except RecursionError:  # the interpreter's own limit, far above max_depth
        raise InvalidJson(f"Request body nests deeper than {max_depth} levels.") from None
    if containers > max_depth and _deeper_than(value, max_depth):
        raise InvalidJson(f"Request body nests deeper than {max_depth} levels.")
    return value


def _values(raw: bytes, limit: int) -> int:
    """How many values parsing `raw` would create: 1 and one per `[{,:` outside strings, counted until past `limit`.

    In one pass of C loops, whatever the text's shape: escape pairs are dropped first (a backslash outside a
    string makes the text invalid JSON anyway), then every other piece between quotes is outside strings.
    A regex that found each string instead went back to each `"` of an unterminated one: quadratic.
    """
    if b"\\" in raw:  # left to right, as a parser pairs them: `\\\"` is an escaped backslash, then a quote
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    count, inside = 1, False
    for start in range(0, len(raw), _CHUNK):
        pieces = raw[start:start + _CHUNK].split(b'"')
        outside = b"".join(pieces[1::2] if inside else pieces[0::2])
        count += outside.count(b"[") + outside.count(b"{") + outside.count(b",") + outside.count(b":")
        if count > limit:
            break
        inside ^= len(pieces) % 2 == 0  # an odd number of quotes in this chunk
    return count


def _deeper_than(value: Any, max_depth: int) -> bool:
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _refuse_constant(name: str) -> Any:
    raise InvalidJson(f"Request body is not valid JSON: {name} is not a number.")
