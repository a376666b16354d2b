"""The points games' formula parser, evaluator and solver: exact, typed, and never ``eval``."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visact.env_server import formula
from visact.env_server.formula import (
    DivisionByZero,
    Malformed,
    Value,
    can_extend,
    evaluate,
    solutions,
    tokenize,
)

TOKENS = st.sampled_from(["1", "2", "3", "7", "10", "0", "+", "-", "*", "/", "(", ")", "x", "", "=", " "])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", 7),
        ("2+3*4", 14),
        ("(2+3)*4", 20),
        ("10-4-3", 3),  # left associative
        ("8/4/2", 1),  # left associative
        ("8/(3-8/3)", 24),  # needs exact fractions
        ("1/3+1/3+1/3", 1),
        ("((6))*(4)", 24),
        (" 6 * 4 ", 24),
        ("2-5", -3),
    ],
)
def test_evaluates_exactly(text: str, expected: int) -> None:
    result = evaluate(text)
    assert isinstance(result, Value)
    assert result.value == Fraction(expected)


def test_keeps_fractions_exact() -> None:
    assert evaluate("1/3") == Value(Fraction(1, 3))
    assert evaluate(["7", "/", "2"]) == Value(Fraction(7, 2))


@pytest.mark.parametrize(("text", "position"), [("1/0", 1), ("6*4/(3-3)", 3), ("2+1/(2-2)*5", 3)])
def test_division_by_zero_is_a_typed_result_at_the_slash(text: str, position: int) -> None:
    assert evaluate(text) == DivisionByZero(position)


@pytest.mark.parametrize(
    "text",
    ["", "+", "2+", "(2+3", "2+3)", "()", "2 3", "-2+5", "2**3", "2^3", "a+1", "2=2", "(*2)", ")("],
)
def test_malformed_formulas_are_reported_not_raised(text: str) -> None:
    result = evaluate(text)
    assert isinstance(result, Malformed), result
    assert result.reason


def test_tokens_are_taken_as_given() -> None:
    assert evaluate(["1", "0"]) == Malformed("unexpected '0'", 1)  # two numbers, not ten
    assert evaluate(["10", "+", "2"]) == Value(Fraction(12))
    assert isinstance(evaluate(["6", "", "*", "2"]), Malformed)  # a blank is not a token


def test_tokenize_groups_digits_and_drops_spaces() -> None:
    assert tokenize("(10+2) * 3") == ["(", "10", "+", "2", ")", "*", "3"]
    assert tokenize("") == []
    assert tokenize("1a") == ["1", "a"]


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    deep = "(" * 5000 + "1" + ")" * 5000
    assert isinstance(evaluate(deep), Malformed)
    assert evaluate("(" * 50 + "1" + ")" * 50) == Value(Fraction(1))


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=14))
def test_evaluate_never_raises(tokens: list[str]) -> None:
    assert isinstance(evaluate(tokens), Value | Malformed | DivisionByZero)


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=10))
def test_every_prefix_of_a_well_formed_formula_can_be_extended(tokens: list[str]) -> None:
    if isinstance(evaluate(tokens), Malformed):
        return
    for end in range(len(tokens)):
        assert can_extend(tokens[:end], tokens[end]), (tokens, end)


@pytest.mark.parametrize(
    ("prefix", "token", "ok"),
    [
        ([], "3", True),
        ([], "(", True),
        ([], "+", False),  # no unary operators
        ([], "-", False),
        ([], ")", False),
        (["3"], "4", False),  # two numbers in a row
        (["3"], "*", True),
        (["3", "*"], "/", False),
        (["(", "3"], ")", True),
        (["3"], ")", False),  # nothing to close
        (["(", ")"], "+", False),  # an invalid prefix stays invalid
        (["("], ")", False),  # empty parentheses
    ],
)
def test_can_extend(prefix: list[str], token: str, ok: bool) -> None:
    assert can_extend(prefix, token) is ok


def test_solutions_reach_the_target_using_each_value_once() -> None:
    hands = [(3, 3, 8, 8), (1, 2, 3, 4), (10, 10, 4, 4), (6, 4, 1, 1), (1, 5, 5, 5)]
    for hand in hands:
        found = solutions(hand, 24)
        assert found, hand
        for tokens in found:
            assert evaluate(tokens) == Value(Fraction(24)), tokens
            assert Counter(int(t) for t in tokens if formula.is_number(t)) == Counter(hand)


def test_the_classic_hard_hand_needs_fractions() -> None:
    assert solutions((3, 3, 8, 8), 24) == (("8", "/", "(", "3", "-", "8", "/", "3", ")"),)


def test_unsolvable_hands_have_no_solution() -> None:
    assert formula.solve((1, 1, 1, 1), 24) is None
    assert not formula.is_solvable((1, 1, 1, 1), 24)
    assert formula.solve((5, 5), 12, ("+", "*")) is None


def test_without_parentheses_only_flat_formulas_count() -> None:
    assert formula.solve((1, 1, 1, 8), 24) is not None  # (1+1+1)*8
    assert formula.solve((1, 1, 1, 8), 24, allow_parens=False) is None
    assert not formula.is_solvable((1, 1, 1, 8), 24, allow_parens=False)
    assert formula.solve((3, 4), 12, ("+", "*"), allow_parens=False) == ("3", "*", "4")
    assert formula.solve((10, 2), 12, ("+", "*"), allow_parens=False) == ("10", "+", "2")


def test_is_solvable_agrees_with_the_solution_listing() -> None:
    for hand in itertools.islice(itertools.combinations_with_replacement(range(1, 11), 4), 0, 715, 11):
        assert formula.is_solvable(hand, 24) == bool(solutions(hand, 24)), hand


def test_566_of_the_715_hands_of_values_1_to_10_make_24() -> None:
    hands = list(itertools.combinations_with_replacement(range(1, 11), 4))
    assert len(hands) == 715
    assert sum(formula.is_solvable(hand, 24) for hand in hands) == 566


def test_solutions_are_in_a_deterministic_order_shortest_first() -> None:
    found = solutions((4, 3, 2, 1), 24)
    assert found == solutions((1, 2, 3, 4), 24)
    assert [len(t) for t in found] == sorted(len(t) for t in found)


def test_unknown_operators_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown operators"):
        solutions((1, 2), 3, ("+", "^"))


def test_the_module_never_calls_eval() -> None:
    source = Path(formula.__file__).read_text()
    assert not re.search(r"(?<![\w.])(eval|exec|compile)\(", source)
