"""From the model's reply to one legal action, saying exactly what went wrong when it cannot.

RL4VLM (method step 3) lower-cases the text after ``"action":`` and takes the one legal action
it contains, else a random one. Here the reply is read as the JSON object the prompt asks for
(``visact.model.prompts``), tolerantly, and every failure has a kind, a message and a count:

1. :func:`parse_action`: the reply to a :class:`ParsedAction` (the action, or why not), plus
   where the action part starts (``action_char_start``) for the CoT/action log-prob split.
2. :class:`BadAnswerPolicy` and :func:`resolve`: the action to play and the format penalty.
3. :class:`ParseStats`: counts per failure kind and the valid-action rate, as metrics.
4. :func:`action_span_start_token`: ``action_char_start`` to the index of the first action
   token, from the tokenizer's offsets (never from hard-coded token ids: RL4VLM issues #17, #19);
   :func:`parse_continuation` does 1 and 4 for a reply whose opening was in the prompt.
5. :func:`check_facts` and :class:`FactStats`: the facts the reply's chain of thought states,
   each checked against the truth (the environment's expert facts), and fact accuracy.

How a reply is read
-------------------
The text is split into tokens by a lenient JSON lexer: ``{ } [ ] : ,``; strings in double or
single quotes (backslash escapes; a quote closes a string only when followed, after spaces or
tabs, by ``, } ] :``, a line break or the end, so an unescaped quote inside ``"thoughts"`` does
not end it; an unclosed string runs to the end); code fences (backticks and a language tag)
are skipped; anything else is a bare word (so unquoted values work). A *key* is a string or
word followed by ``:``; the *action key* is one whose :func:`visact.model.prompts.key_name` is
``"action"``. Because the thoughts are one string, action words inside them are never keys.

The action keys are taken from the first top-level ``{...}`` object holding any (the object may
lack its closing brace; text after it is ignored); failing that, from the text outside objects
(a reply with no braces). A key's *value* is everything after its ``:`` up to the next ``,``,
``}`` or ``]`` at its level, or the next key, or the end: a lone string's decoded content,
otherwise the raw text of that span. The value is then matched to the legal actions:

1. exactly, then after stripping surrounding whitespace;
2. ignoring case (``casefold``), if that names one legal action;
3. else the legal actions *mentioned* in it (case-insensitively; an action that starts or ends
   with a letter or digit must not touch another letter or digit there, so ``"10"`` does not
   mention ``"1"``; a mention inside a longer mention, ``"go"`` in ``"go to desk 1"``, does not
   count): one is the action (``"hit."``, ``'[+]'``), several are AMBIGUOUS (``"+ or -"``),
   none is NOT_LEGAL.

Several action keys must all resolve alike, else AMBIGUOUS.

``action_char_start`` is the offset in the reply of the first character of the first action
key: its opening quote when quoted (``"`` or ``'``), else the first character of the bare word
(``a`` of ``action:``, ``*`` of ``**action**:``). The action part is
``text[action_char_start:]``, so the tokens of ``"action": "+"}`` are action tokens and
everything before (facts, thoughts, the ``, `` before the key) is CoT. It is set whenever an
action key was found, whether or not its value is legal, and None otherwise.
"""

from __future__ import annotations

import enum
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from visact.model.prompts import ACTION_KEY, check_legal_actions, key_name

__all__ = [
    "BadAnswerPolicy",
    "ParseFailure",
    "ParseStats",
    "ParsedAction",
    "action_span_start_token",
    "answer_values",
    "check_facts",
    "parse_action",
    "parse_continuation",
    "resolve",
]


class ParseFailure(enum.Enum):
    """Why a reply names no single legal action."""

    #: The reply is empty or only whitespace.
    EMPTY = "empty"
    #: No ``{`` anywhere and no action key either: not the JSON answer at all.
    NO_JSON = "no_json"
    #: A JSON object, but no ``"action"`` key (often a reply cut off by the token limit).
    NO_ACTION_KEY = "no_action_key"
    #: The action value is no legal action (an empty value included).
    NOT_LEGAL = "not_legal"
    #: The value names several legal actions, or several action keys disagree.
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class ParsedAction:
    """What :func:`parse_action` read: the legal action, or the failure and why."""

    #: The legal action, exactly as spelled in ``legal_actions``; None on failure.
    action: str | None
    #: None on success.
    failure: ParseFailure | None
    #: For people: on failure what came and what was expected; on success how the value was
    #: matched when not exactly (e.g. ignoring case), else "".
    detail: str
    #: Offset in the reply of the first action key's first character (its opening quote if
    #: quoted, else of the bare word); None when there is no action key. See the module docstring.
    action_char_start: int | None

    @property
    def ok(self) -> bool:
        """True when the reply named exactly one legal action."""
        return self.failure is None


# ---------------------------------------------------------------------------------------------
# 1. Parsing: a lenient JSON lexer, the action keys, their values, the match to legal actions
# ---------------------------------------------------------------------------------------------

_PUNCT = frozenset("{}[]:,")
_OPENERS = frozenset("{[")
_CLOSERS = frozenset("}]")
_QUOTES = frozenset("\"'")
_AFTER_CLOSING_QUOTE = frozenset(",}]:\n\r")
_SHOWN_CHARS = 80
_SHOWN_ACTIONS = 20


@dataclass(frozen=True)
class _Token:
    kind: Literal["punct", "string", "word"]
    start: int  # offset of the first character in the reply
    end: int  # offset just past the last character
    value: str  # the punctuation mark, the decoded string content, or the word


def _is(token: _Token, marks: str | frozenset[str]) -> bool:
    return token.kind == "punct" and token.value in marks


def _string_end(text: str, start: int) -> tuple[int, bool]:
    """``(end, closed)`` of the string whose opening quote is at ``start``."""
    quote, i, n = text[start], start + 1, len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == quote:
            after = i + 1
            while after < n and text[after] in " \t":
                after += 1
            if after == n or text[after] in _AFTER_CLOSING_QUOTE:
                return i + 1, True
        i += 1
    return n, False


def _decode(body: str) -> str:
    """A string body's content with its escapes applied; the raw body if they are not JSON's."""
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            out.append("'" if body[i + 1] == "'" else body[i : i + 2])
            i += 2
            continue
        out.append({'"': '\\"', "\\": "\\\\"}.get(char, char))
        i += 1
    try:
        decoded = json.loads('"' + "".join(out) + '"', strict=False)
    except ValueError:
        return body
    return decoded if isinstance(decoded, str) else body


def _skip_fence(text: str, i: int) -> int:
    """The offset after a code fence at ``i``: its backticks and any language tag."""
    n = len(text)
    while i < n and text[i] == "`":
        i += 1
    while i < n and (text[i].isalnum() or text[i] == "_"):
        i += 1
    return i


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif text.startswith("```", i):
            i = _skip_fence(text, i)
        elif char in _PUNCT:
            tokens.append(_Token("punct", i, i + 1, char))
            i += 1
        elif char in _QUOTES:
            end, closed = _string_end(text, i)
            body = text[i + 1 : end - 1 if closed else end]
            tokens.append(_Token("string", i, end, _decode(body)))
            i = end
        else:
            end = i
            while end < n and not text[end].isspace() and text[end] not in _PUNCT:
                end += 1
            tokens.append(_Token("word", i, end, text[i:end]))
            i = end
    return tokens


@dataclass
class _Segment:
    """Tokens of one top-level object (``closed`` when its braces balance), or of the loose text."""

    tokens: list[_Token] = field(default_factory=list)
    closed: bool = False


def _segments(tokens: list[_Token]) -> tuple[list[_Segment], _Segment]:
    """The top-level ``{...}`` objects in order, and the tokens outside every object."""
    objects: list[_Segment] = []
    loose = _Segment()
    depth = 0
    for token in tokens:
        if depth == 0:
            if _is(token, "{"):
                objects.append(_Segment([token]))
                depth = 1
            else:
                loose.tokens.append(token)
            continue
        objects[-1].tokens.append(token)
        if _is(token, _OPENERS):
            depth += 1
        elif _is(token, _CLOSERS):
            depth -= 1
            if depth == 0:
                objects[-1].closed = True
    return objects, loose


def _is_key(tokens: list[_Token], i: int) -> bool:
    return tokens[i].kind != "punct" and i + 1 < len(tokens) and _is(tokens[i + 1], ":")


def _keys(segment: _Segment) -> list[int]:
    return [i for i in range(len(segment.tokens)) if _is_key(segment.tokens, i)]


def _action_keys(segment: _Segment) -> list[int]:
    return [i for i in _keys(segment) if key_name(segment.tokens[i].value) == ACTION_KEY]


def _value(text: str, tokens: list[_Token], key: int) -> str:
    """The value after the key at ``tokens[key]`` (see the module docstring)."""
    value: list[_Token] = []
    depth = 0
    for j in range(key + 2, len(tokens)):
        token = tokens[j]
        if _is(token, _OPENERS):
            depth += 1
        elif _is(token, _CLOSERS) or (_is(token, ",") and depth == 0):
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and _is_key(tokens, j):
            break
        value.append(token)
    if not value:
        return ""
    if len(value) == 1 and value[0].kind == "string":
        return value[0].value
    return text[value[0].start : value[-1].end]


def _ends_ok(haystack: str, start: int, end: int, needle: str) -> bool:
    """A mention of ``needle`` at ``haystack[start:end]`` does not run into letters or digits."""
    if needle[0].isalnum() and start > 0 and haystack[start - 1].isalnum():
        return False
    return not (needle[-1].isalnum() and end < len(haystack) and haystack[end].isalnum())


def _mentions(value: str, legal: tuple[str, ...]) -> list[str]:
    """The legal actions mentioned in ``value``, in legal order (see the module docstring)."""
    folded = value.casefold()
    spans: list[tuple[int, int, str]] = []
    for action in legal:
        needle = action.strip().casefold()
        if not needle:
            continue
        at = folded.find(needle)
        while at != -1:
            if _ends_ok(folded, at, at + len(needle), needle):
                spans.append((at, at + len(needle), action))
            at = folded.find(needle, at + 1)
    # Sorted by start, longest first: a span lies inside an earlier-sorted, different span
    # exactly when its end does not pass the furthest end seen before its group.
    spans.sort(key=lambda span: (span[0], -span[1]))
    found: set[str] = set()
    furthest = -1
    i = 0
    while i < len(spans):
        j = i
        while j < len(spans) and spans[j][:2] == spans[i][:2]:
            j += 1
        if spans[i][1] > furthest:
            found.update(action for _, _, action in spans[i:j])
        furthest = max(furthest, spans[i][1])
        i = j
    return [action for action in legal if action in found]


def _show(text: str) -> str:
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} chars)"


def _show_actions(legal: Sequence[str]) -> str:
    if len(legal) <= _SHOWN_ACTIONS:
        return repr(list(legal))
    return f"{list(legal[:_SHOWN_ACTIONS])!r}... ({len(legal)} in all)"


def _match(value: str, legal: tuple[str, ...]) -> tuple[str | None, ParseFailure | None, str]:
    """``(action, failure, detail)`` for one action value."""
    if value in legal:
        return value, None, ""
    stripped = value.strip()
    if stripped in legal:
        return stripped, None, ""
    same_case = [action for action in legal if action.strip().casefold() == stripped.casefold()]
    if len(same_case) == 1:
        return same_case[0], None, f"matched {_show(value)} to {same_case[0]!r} ignoring case"
    mentioned = same_case or _mentions(value, legal)
    if len(mentioned) == 1:
        return mentioned[0], None, f"found {mentioned[0]!r} in {_show(value)}"
    if mentioned:
        detail = f"action {_show(value)} names {mentioned!r}; expected exactly one of {_show_actions(legal)}"
        return None, ParseFailure.AMBIGUOUS, detail
    what = "empty action" if not stripped else f"action {_show(value)} is not a legal action"
    return None, ParseFailure.NOT_LEGAL, f"{what}; expected one of {_show_actions(legal)}"


def parse_action(text: str, legal_actions: Sequence[str]) -> ParsedAction:
    """Read the model's reply ``text`` as the prompt's JSON answer and find its legal action.

    Tolerant of almost-JSON (text around the object, a missing closing brace, single quotes,
    unquoted values, trailing commas, code fences, case); exact about failures. The rules are
    in the module docstring. Raises ValueError only for bad ``legal_actions``.
    """
    legal = check_legal_actions(legal_actions)
    expected = f'expected {{..., "{ACTION_KEY}": one of {_show_actions(legal)}}}'
    if not text.strip():
        return ParsedAction(None, ParseFailure.EMPTY, f"empty reply; {expected}", None)
    objects, loose = _segments(_lex(text))
    segment = next((s for s in objects if _action_keys(s)), loose)
    keys = _action_keys(segment)
    if not keys:
        if not objects:
            return ParsedAction(
                None, ParseFailure.NO_JSON, f"no JSON object in {_show(text)}; {expected}", None
            )
        first = objects[0]
        found = [first.tokens[i].value for i in _keys(first)]
        cut = "" if first.closed else " and is not closed (was the reply cut off?)"
        detail = f'no "{ACTION_KEY}" key: the JSON object has keys {found!r}{cut}; {expected}'
        return ParsedAction(None, ParseFailure.NO_ACTION_KEY, detail, None)
    char_start = segment.tokens[keys[0]].start
    values = [_value(text, segment.tokens, key) for key in keys]
    outcomes = [_match(value, legal) for value in values]
    if len({(action, failure) for action, failure, _ in outcomes}) > 1:
        shown = ", ".join(_show(value) for value in values)
        detail = f'{len(keys)} "{ACTION_KEY}" keys disagree: {shown}; expected one "{ACTION_KEY}" key'
        return ParsedAction(None, ParseFailure.AMBIGUOUS, detail, char_start)
    action, failure, detail = outcomes[0]
    return ParsedAction(action, failure, detail, char_start)


# ---------------------------------------------------------------------------------------------
# 2. Bad answers: the action to play and the format penalty
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadAnswerPolicy:
    """What a reply that names no single legal action costs, and what is played instead.

    The action played is always a uniformly random legal action (RL4VLM does this, with no
    penalty); ``penalty`` is what the caller subtracts from that turn's reward.
    """

    #: Format penalty, >= 0, subtracted from the reward of a turn with a bad answer (paper: 0).
    penalty: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.penalty) and self.penalty >= 0):
            raise ValueError(
                f"penalty is subtracted from the reward, so it must be a finite number >= 0; "
                f"got {self.penalty} (use 0 for the paper's behaviour)"
            )


def resolve(
    parsed: ParsedAction, legal_actions: Sequence[str], policy: BadAnswerPolicy, rng: random.Random
) -> tuple[str, float]:
    """``(action to play, penalty >= 0)``: the parsed action with no penalty, else a random
    legal action (drawn from ``rng``) and ``policy.penalty``."""
    legal = check_legal_actions(legal_actions)
    if parsed.action is None:
        return rng.choice(legal), policy.penalty
    if parsed.action not in legal:
        raise ValueError(
            f"parsed action {parsed.action!r} is not in legal_actions {_show_actions(legal)}; "
            f"parse and resolve against the same legal actions"
        )
    return parsed.action, 0.0


# ---------------------------------------------------------------------------------------------
# 3. Counting: every bad answer is counted and visible
# ---------------------------------------------------------------------------------------------


@dataclass
class ParseStats:
    """Counts of parsed replies and of each failure kind; ``metrics()`` for the logs."""

    total: int = 0
    failures: Counter[ParseFailure] = field(default_factory=Counter)

    def add(self, parsed: ParsedAction) -> None:
        """Count one reply."""
        self.total += 1
        if parsed.failure is not None:
            self.failures[parsed.failure] += 1

    def merge(self, other: ParseStats) -> None:
        """Add another counter's counts to this one (e.g. from several agents)."""
        self.total += other.total
        self.failures.update(other.failures)

    @property
    def valid(self) -> int:
        """Replies that named exactly one legal action."""
        return self.total - sum(self.failures.values())

    @property
    def valid_rate(self) -> float:
        """``valid / total``; NaN before the first reply (there is no rate yet)."""
        return self.valid / self.total if self.total else math.nan

    def metrics(self, prefix: str = "parse") -> dict[str, float]:
        """``{prefix}/valid_rate``, ``{prefix}/total`` and ``{prefix}/failures/<kind>`` for every kind (zeros too)."""
        out = {f"{prefix}/valid_rate": self.valid_rate, f"{prefix}/total": float(self.total)}
        for kind in ParseFailure:
            out[f"{prefix}/failures/{kind.value}"] = float(self.failures[kind])
        return out


# ---------------------------------------------------------------------------------------------
# 4. From the action's character offset to its first token
# ---------------------------------------------------------------------------------------------


def action_span_start_token(offsets: Sequence[tuple[int, int]], char_start: int | None) -> int:
    """The index of the first generated token of the action part, for ``visact.trainer.ppo.split_log_prob``.

    ``offsets[i] = (start, end)`` is the half-open character span of generated token ``i`` in
    the reply text that was parsed (the tokenizer's offset mapping of the generated tokens, in
    that text's coordinates). ``char_start`` is ``ParsedAction.action_char_start``.

    The answer is the first token that is not empty (``end > start``) and ends after
    ``char_start``: the token holding the character at ``char_start``. So:

    - a token straddling the boundary (``', "'``) belongs to the action part: every token that
      carries a character of the action key counts in full;
    - empty spans (``(0, 0)`` of special tokens, zero-width byte pieces) carry no character and
      are never the answer: they fall on the side their position puts them;
    - byte-level pieces of one multi-byte character that repeat its span all fall on the same
      side, since the first of them is the answer.

    ``char_start=None`` (no action key) gives ``len(offsets)``: everything is CoT. A
    ``char_start`` no token reaches means the offsets belong to another text: ValueError.
    """
    if char_start is None:
        return len(offsets)
    if char_start < 0:
        raise ValueError(f"char_start must be >= 0 (an offset in the reply), got {char_start}")
    for index, (start, end) in enumerate(offsets):
        if end > start and end > char_start:
            return index
    reach = max((end for _, end in offsets), default=0)
    raise ValueError(
        f"no token reaches character {char_start}: the offsets cover up to {reach}; "
        f"pass the offsets of the same generated text that was parsed"
    )


def parse_continuation(
    prefill: str, generated: str, offsets: Sequence[tuple[int, int]], legal_actions: Sequence[str]
) -> tuple[str, ParsedAction, int]:
    """A reply the model wrote after ``prefill`` (its opening, given in the prompt): the whole
    reply ``prefill + generated``, its parse, and the first generated token of the action part.

    ``offsets`` are the generated tokens' character spans in ``generated``. When the action key
    lies in the prefill (``{"action":``), every generated token belongs to the action part (0).
    """
    text = prefill + generated
    parsed = parse_action(text, legal_actions)
    start = parsed.action_char_start
    if start is not None and start < len(prefill):
        return text, parsed, 0
    return text, parsed, action_span_start_token(offsets, None if start is None else start - len(prefill))


# ---------------------------------------------------------------------------------------------
# 5. Truthfulness: the facts the chain of thought states, against the environment's
# ---------------------------------------------------------------------------------------------


def answer_values(text: str) -> dict[str, str]:
    """Every key of the reply's answer object and its value, keys by :func:`agent.prompts.key_name`.

    The object is the first top-level ``{...}`` holding any key (else the loose text), read as
    :func:`parse_action` reads it; a repeated key keeps its first value.
    """
    objects, loose = _segments(_lex(text))
    segment = next((s for s in objects if _keys(s)), loose)
    values: dict[str, str] = {}
    for index in _keys(segment):
        values.setdefault(key_name(segment.tokens[index].value), _value(text, segment.tokens, index))
    return values


def _fact_form(value: str) -> str:
    """How a stated fact is compared with the truth: ignoring case and every space."""
    return "".join(value.split()).casefold()


def check_facts(text: str, truth: Sequence[tuple[str, str]]) -> tuple[tuple[str, bool], ...]:
    """``(key, stated correctly)`` for each ``(key, true value)`` of ``truth``, in its order.

    A fact is stated correctly when the reply's answer object has the key (compared by
    :func:`agent.prompts.key_name`) with the true value, ignoring case and spaces
    (``"[1,3, 4,6]"`` states ``"[1, 3, 4, 6]"``). A missing key is a wrong fact: a reply that
    breaks off before its facts has read nothing. ``truth`` is the environment's expert facts
    for the observation answered (``ExpertMove.facts``).
    """
    stated = answer_values(text)
    return tuple(
        (key, key_name(key) in stated and _fact_form(stated[key_name(key)]) == _fact_form(value))
        for key, value in truth
    )
