"""Regular expressions as JSON Schema publishes them (ECMA-262), matched with that meaning in Python.

Python's `re` reads the same text differently: `$` also matches before a final newline, `\\d` takes
every script's digits, `\\s` is another set of spaces, `.` stops only at a newline. A pattern in a
request schema is published in the OpenAPI document, so the validator must read it as clients do.
"""

from __future__ import annotations

import functools
import re


def matches(pattern: str, value: str) -> bool:
    """Whether `value` matches a JSON Schema `pattern` as ECMA-262 reads it."""
    return _ecma_pattern(pattern).search(value) is not None


# ECMA-262's \s; Python's differs (it has U+001C-U+001F and U+0085, lacks U+FEFF).
_ECMA_SPACE = r"\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_ECMA_OUTSIDE_CLASS = {
    "$": r"\Z",  # Python's $ also matches before a final newline
    ".": r"[^\n\r\u2028\u2029]",
    r"\s": f"[{_ECMA_SPACE}]",
    r"\S": f"[^{_ECMA_SPACE}]",
}


@functools.lru_cache(maxsize=64)
def _ecma_pattern(pattern: str) -> re.Pattern[str]:
    r"""Compile an ECMA-262 pattern to a Python one that matches the same strings.

    re.ASCII gives \d, \w and \b their ECMA-262 (ASCII) meaning; $, . and \s are rewritten.
    """
    python: list[str] = []
    in_class = False
    tokens = re.findall(r"\\.|.", pattern, re.DOTALL)
    for token in tokens:
        if in_class:
            if token == r"\S":
                raise ValueError(f"\\S inside a character class has no Python spelling: {pattern!r}")
            in_class = token != "]"
            python.append(_ECMA_SPACE if token == r"\s" else token)
        else:
            in_class = token == "["
            python.append(_ECMA_OUTSIDE_CLASS.get(token, token))
    return re.compile("".join(python), re.ASCII)


def decimal_range(minimum: int, maximum: int) -> str:
    """A regex of the decimals (leading zeros allowed; '-0' where 0 is in range) from minimum to maximum."""
    if not 0 <= minimum <= maximum < 10**19:
        raise ValueError(f"decimals are described for 0 <= minimum <= maximum < 10**19: {minimum}, {maximum}")
    positive = "|".join(_decimals_between(max(minimum, 1), maximum)) if maximum else None
    return "|".join(filter(None, ["-?0+" if minimum == 0 else None, positive and f"0*(?:{positive})"]))


def _decimals_between(low: int, high: int) -> list[str]:
    """Alternatives matching the decimals from `low` to `high` (1 <= low), without leading zeros."""
    partial, whole = [], []
    for length in range(len(str(low)), len(str(high)) + 1):
        first, last = max(low, 10 ** (length - 1)), min(high, 10**length - 1)
        if (first, last) == (10 ** (length - 1), 10**length - 1):
            whole.append(length - 1)
        else:
            partial += _same_length_between(str(first), str(last))
    if not whole:
        return partial
    return ["[1-9]" + _any_digits(min(whole), max(whole)), *partial]


def _same_length_between(low: str, high: str) -> list[str]:
    if low == high:
        return [low]
    if len(low) == 1:
        return [f"[{low}-{high}]"]
    if low[0] == high[0]:
        return [low[0] + rest for rest in _same_length_between(low[1:], high[1:])]
    width = len(low) - 1
    head, tail = int(low[0]), int(high[0])
    alternatives = []
    if low[1:].strip("0"):
        alternatives += [low[0] + rest for rest in _same_length_between(low[1:], "9" * width)]
        head += 1
    closing = []
    if high[1:].strip("9"):
        closing = [high[0] + rest for rest in _same_length_between("0" * width, high[1:])]
        tail -= 1
    if head <= tail:
        digits = str(head) if head == tail else f"[{head}-{tail}]"
        alternatives.append(digits + _any_digits(width, width))
    return alternatives + closing


def _any_digits(fewest: int, most: int) -> str:
    if most == 0:
        return ""
    if fewest == most:
        return "[0-9]" if most == 1 else f"[0-9]{{{most}}}"
    return f"[0-9]{{{fewest},{most}}}"
