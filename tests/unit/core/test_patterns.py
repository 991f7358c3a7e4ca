"""chalicelib.core.patterns: a schema's pattern means what ECMA-262 says, as in the published document."""

import pytest

from chalicelib.core.patterns import decimal_range, matches


def test_pattern_end_anchor_does_not_match_before_a_final_newline():
    assert not matches("^a$", "a\n")


def test_pattern_digit_class_is_ascii_only():
    assert (matches(r"^\d$", "7"), matches(r"^\d$", "٧")) == (True, False)


@pytest.mark.parametrize(("character", "is_space"), [("\ufeff", True), ("\u2028", True), ("\x1c", False),
                                                     ("\x85", False)])
def test_pattern_space_class_is_ecma_whitespace(character, is_space):
    assert matches(r"^\s$", character) is is_space
    assert matches(r"^[\s]$", character) is is_space


@pytest.mark.parametrize("terminator", ["\n", "\r", "\u2028", "\u2029"])
def test_pattern_dot_does_not_match_a_line_terminator(terminator):
    assert not matches("^.$", terminator)


def test_escaped_dollar_in_a_pattern_is_a_literal_dollar():
    assert matches(r"^\$[$]$", "$$")


@pytest.mark.parametrize(("low", "high", "inside", "outside"), [
    (1, 100, ["1", "01", "99", "100"], ["0", "00", "101", "-1", "1000"]),
    (0, 65535, ["0", "-0", "00", "65535", "9999"], ["-1", "65536", "99999", ""]),
    (3, 250, ["3", "10", "199", "249", "250"], ["2", "251", "300", "1000"]),
])
def test_decimal_range_matches_the_decimals_in_range_only(low, high, inside, outside):
    pattern = f"^(?:{decimal_range(low, high)})$"

    assert [matches(pattern, text) for text in inside + outside] == [True] * len(inside) + [False] * len(outside)


def test_decimal_range_of_negative_numbers_is_refused():
    with pytest.raises(ValueError):
        decimal_range(-1, 5)
