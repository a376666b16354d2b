"""Safe arithmetic for the points games: parse, evaluate and solve formulas, never ``eval``.

A formula is a sequence of tokens: integer literals (``"7"``, ``"10"``), the binary
operators ``+ - * /`` and parentheses. Grammar (usual precedence, left associative)::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := NUMBER | "(" expr ")"

There is no unary minus: every card enters through a binary operator, as in the 24
game. Arithmetic is exact (:class:`fractions.Fraction`), so ``8/(3-8/3)`` is exactly 24.

:func:`evaluate` returns a typed result (:class:`Value`, :class:`Malformed` or
:class:`DivisionByZero`) and never raises on bad input. :func:`can_extend` tells
whether a token may be appended to a prefix so that the prefix can still be completed
into a well-formed formula (the games use it to reject malformed appends).
:func:`solutions` lists formulas that reach a target from card values, each card used
exactly once (the oracles and the solvable-hand sampling use it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

OPERATORS: tuple[str, ...] = ("+", "-", "*", "/")
OPEN, CLOSE = "(", ")"
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


@dataclass(frozen=True)
class Value:
    """A well-formed formula and its exact value."""

    value: Fraction


@dataclass(frozen=True)
class Malformed:
    """The tokens do not form a formula; ``position`` is the index of the offending token."""

    reason: str
    position: int


@dataclass(frozen=True)
class DivisionByZero:
    """A well-formed formula that divides by zero at token ``position`` (the ``/``)."""

    position: int


Evaluation = Value | Malformed | DivisionByZero


def is_number(token: str) -> bool:
    """True for an integer literal token such as ``"7"`` or ``"10"``."""
    return token.isascii() and token.isdigit()


def tokenize(text: str) -> list[str]:
    """Split formula text such as ``"(10+2)*3"`` into tokens; spaces are ignored.

    Characters that are not digits, operators or parentheses become one-character
    tokens of their own, which :func:`evaluate` then reports as malformed.
    """
    tokens: list[str] = []
    digits = ""
    for char in text:
        if char.isascii() and char.isdigit():
            digits += char
            continue
        if digits:
            tokens.append(digits)
            digits = ""
        if not char.isspace():
            tokens.append(char)
    if digits:
        tokens.append(digits)
    return tokens


class _Stop(Exception):
    """Internal: parsing stopped with a typed result."""

    def __init__(self, result: Malformed | DivisionByZero) -> None:
        super().__init__(result)
        self.result = result


class _Parser:
    """Recursive-descent evaluator over a token list (depth bounded by the token count)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.index = 0
        #: where the first division by zero is; reported only once the whole formula parses
        self.division_by_zero: int | None = None

    def peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def fail(self, reason: str) -> _Stop:
        return _Stop(Malformed(reason, self.index))

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            operator = self.tokens[self.index]
            self.index += 1
            right = self.term()
            value = value + right if operator == "+" else value - right
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            operator, position = self.tokens[self.index], self.index
            self.index += 1
            right = self.factor()
            if operator == "*":
                value = value * right
            elif right == 0:
                if self.division_by_zero is None:
                    self.division_by_zero = position
                value = Fraction(0)  # keep parsing: a malformed formula is reported as malformed
            else:
                value = value / right
        return value

    def factor(self) -> Fraction:
        token = self.peek()
        if token is None:
            raise self.fail("the formula ends where a number or '(' is expected")
        if is_number(token):
            self.index += 1
            return Fraction(int(token))
        if token == OPEN:
            self.index += 1
            value = self.expr()
            if self.peek() != CLOSE:
                raise self.fail("a '(' is not closed")
            self.index += 1
            return value
        raise self.fail(f"expected a number or '(', got {token!r}")


def evaluate(tokens: Sequence[str] | str) -> Evaluation:
    """Evaluate a formula given as tokens or text; never raises for bad input."""
    token_list = tokenize(tokens) if isinstance(tokens, str) else list(tokens)
    if not token_list:
        return Malformed("the formula is empty", 0)
    parser = _Parser(token_list)
    try:
        value = parser.expr()
    except _Stop as stop:
        return stop.result
    except RecursionError:
        return Malformed("the formula nests too deeply", 0)
    if parser.index != len(token_list):
        return Malformed(f"unexpected {token_list[parser.index]!r}", parser.index)
    if parser.division_by_zero is not None:
        return DivisionByZero(parser.division_by_zero)
    return Value(value)


@dataclass(frozen=True)
class PrefixState:
    """Where a formula prefix stands: whether an operand comes next, and how many '(' are open."""

    expects_operand: bool = True
    open_parens: int = 0
    valid: bool = True


def prefix_state(tokens: Iterable[str]) -> PrefixState:
    """The state after reading ``tokens``; ``valid`` is False once no completion exists."""
    state = PrefixState()
    for token in tokens:
        state = _advance(state, token)
        if not state.valid:
            break
    return state


def _advance(state: PrefixState, token: str) -> PrefixState:
    if is_number(token) and state.expects_operand:
        return PrefixState(False, state.open_parens)
    if token == OPEN and state.expects_operand:
        return PrefixState(True, state.open_parens + 1)
    if token in OPERATORS and not state.expects_operand:
        return PrefixState(True, state.open_parens)
    if token == CLOSE and not state.expects_operand and state.open_parens > 0:
        return PrefixState(False, state.open_parens - 1)
    return PrefixState(state.expects_operand, state.open_parens, valid=False)


def can_extend(prefix: Iterable[str], token: str) -> bool:
    """True when ``prefix + [token]`` can still be completed into a well-formed formula."""
    state = prefix_state(prefix)
    return state.valid and _advance(state, token).valid


# ---------------------------------------------------------------- solving


@dataclass(frozen=True)
class _Node:
    """An expression tree: a leaf number or a binary operation."""

    value: Fraction
    tokens: tuple[str, ...]
    operator: str | None = None  # None for a leaf


def _wrap(node: _Node, parent: str, right_side: bool) -> tuple[str, ...]:
    """The child's tokens, in parentheses only where precedence requires them."""
    if node.operator is None:
        return node.tokens
    child, outer = _PRECEDENCE[node.operator], _PRECEDENCE[parent]
    needs = child < outer or (right_side and child == outer and parent in ("-", "/"))
    return (OPEN, *node.tokens, CLOSE) if needs else node.tokens


def _apply(left: Fraction, right: Fraction, operator: str) -> Fraction | None:
    """``left operator right``, or None for a division by zero."""
    if operator == "+":
        return left + right
    if operator == "-":
        return left - right
    if operator == "*":
        return left * right
    return None if right == 0 else left / right


def _combine(left: _Node, right: _Node, operator: str, value: Fraction) -> _Node:
    tokens = (*_wrap(left, operator, False), operator, *_wrap(right, operator, True))
    return _Node(value, tokens, operator)


def _trees_by_subset(leaves: tuple[_Node, ...], operators: tuple[str, ...], target: Fraction) -> list[_Node]:
    """Every expression tree using each leaf exactly once whose value is ``target``.

    Built bottom-up over subsets: ``by_mask[m]`` holds the distinct trees (by their
    tokens) over the leaves in bit mask ``m``, each made by splitting ``m`` into two
    non-empty halves. For the whole set only trees worth ``target`` are kept (their
    values are computed before their tokens, which is where the time goes).
    """
    full = (1 << len(leaves)) - 1
    by_mask: dict[int, dict[tuple[str, ...], _Node]] = {
        1 << i: {leaf.tokens: leaf} for i, leaf in enumerate(leaves)
    }
    for mask in sorted(range(1, full + 1), key=lambda m: bin(m).count("1")):
        if mask in by_mask:
            continue
        trees: dict[tuple[str, ...], _Node] = {}
        left_mask = (mask - 1) & mask
        while left_mask:
            for left in by_mask[left_mask].values():
                for right in by_mask[mask ^ left_mask].values():
                    for operator in operators:
                        value = _apply(left.value, right.value, operator)
                        if value is None or (mask == full and value != target):
                            continue
                        combined = _combine(left, right, operator, value)
                        trees.setdefault(combined.tokens, combined)
            left_mask = (left_mask - 1) & mask
        by_mask[mask] = trees
    return [tree for tree in by_mask[full].values() if tree.value == target]


@lru_cache(maxsize=4096)
def _solutions_cached(
    values: tuple[int, ...], target: Fraction, operators: tuple[str, ...], allow_parens: bool
) -> tuple[tuple[str, ...], ...]:
    leaves = tuple(_Node(Fraction(v), (str(v),)) for v in values)
    found = {
        tree.tokens
        for tree in _trees_by_subset(leaves, operators, target)
        if allow_parens or OPEN not in tree.tokens
    }
    return tuple(sorted(found, key=lambda tokens: (len(tokens), tokens)))


def solutions(
    values: Sequence[int],
    target: int | Fraction,
    operators: Sequence[str] = OPERATORS,
    allow_parens: bool = True,
) -> tuple[tuple[str, ...], ...]:
    """Formulas (token tuples) using each value exactly once that equal ``target``.

    Parentheses appear only where precedence requires them; with ``allow_parens``
    False, formulas that would need them are left out. Sorted shortest first, then
    lexicographically, so the order is deterministic. Cached per multiset of values.
    """
    _check_operators(operators)
    return _solutions_cached(
        tuple(sorted(int(v) for v in values)), Fraction(target), tuple(sorted(operators)), allow_parens
    )


@lru_cache(maxsize=4096)
def _reachable_values(values: tuple[int, ...], operators: tuple[str, ...]) -> frozenset[Fraction]:
    """Every value a formula over ``values`` (each once, any parentheses) can take."""
    full = (1 << len(values)) - 1
    by_mask: dict[int, set[Fraction]] = {1 << i: {Fraction(v)} for i, v in enumerate(values)}
    for mask in sorted(range(1, full + 1), key=lambda m: bin(m).count("1")):
        if mask in by_mask:
            continue
        reachable: set[Fraction] = set()
        left_mask = (mask - 1) & mask
        while left_mask:
            for left in by_mask[left_mask]:
                for right in by_mask[mask ^ left_mask]:
                    for operator in operators:
                        value = _apply(left, right, operator)
                        if value is not None:
                            reachable.add(value)
            left_mask = (left_mask - 1) & mask
        by_mask[mask] = reachable
    return frozenset(by_mask[full])


def is_solvable(
    values: Sequence[int],
    target: int | Fraction,
    operators: Sequence[str] = OPERATORS,
    allow_parens: bool = True,
) -> bool:
    """True when some formula over ``values`` (each used once) equals ``target``.

    With parentheses allowed this only tracks the reachable values (fast); without
    them it asks :func:`solutions`, which knows which formulas need parentheses.
    """
    if not allow_parens:
        return bool(solutions(values, target, operators, allow_parens=False))
    _check_operators(operators)
    key = tuple(sorted(int(v) for v in values))
    return Fraction(target) in _reachable_values(key, tuple(sorted(operators)))


def _check_operators(operators: Sequence[str]) -> None:
    unknown = set(operators) - set(OPERATORS)
    if unknown:
        raise ValueError(f"unknown operators {sorted(unknown)}; expected a subset of {OPERATORS}")


def solve(
    values: Sequence[int],
    target: int | Fraction,
    operators: Sequence[str] = OPERATORS,
    allow_parens: bool = True,
) -> tuple[str, ...] | None:
    """One formula reaching ``target`` from ``values`` (each used once), or None if there is none."""
    found = solutions(values, target, operators, allow_parens)
    return found[0] if found else None
