"""Parsing JSON that arrives from outside, with its cost bounded before it is built.

A body's size says little about what `json.loads` makes of it: 4 MiB of `[{},{},...]` becomes about a
million dicts, some 100 MB of Python objects, enough to get a 128 MB Lambda killed before the key is
even checked. So the values are counted before parsing. Counting the structural bytes (`[{,:`) of the
whole text is an upper bound that costs microseconds and no memory; only a text over that bound is
tokenised, strings skipped, to count exactly, which stops as soon as the limit is passed.

Depth costs no memory, but code that recurses over a value (`json.dumps` included) fails on deep
nesting, so it is checked after parsing, and only when there are enough containers to go that deep.

Also refused: bytes that are not UTF-8 (`json.loads` would guess UTF-16 or UTF-32 from the first
bytes), and NaN/Infinity, which Python accepts but JSON does not (a replica would get invalid JSON).

Standard library only: this runs on the chat function's cold start.
"""

from __future__ import annotations

import json
import re
from typing import Any

from chalicelib.errors import BadRequest

MAX_DEPTH = 64  # JSON schemas in `tools` nest deeply; nothing a client sends needs more
MAX_VALUES = 200_000  # tens of thousands of messages; each value costs at most ~100 bytes of memory

# A JSON string (escapes included; the unrolled form does not backtrack), or a byte that starts a value.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{,:]', re.DOTALL)


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
    """How many values parsing `raw` would create, counted up to just past `limit`."""
    count = 1
    for token in _TOKEN.finditer(raw):
        if token.end() - token.start() == 1:  # not a string: a string is two bytes at least
            count += 1
            if count > limit:
                break
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
