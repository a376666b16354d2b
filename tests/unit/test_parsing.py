"""The action parser: tolerant of almost-JSON, exact about failures; the bad-answer policy; the counter;
and the character-offset to token-index split."""

from __future__ import annotations

import itertools
import math
import random
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from visact.agent.parsing import (
    BadAnswerPolicy,
    ParsedAction,
    ParseFailure,
    ParseStats,
    action_span_start_token,
    answer_values,
    check_facts,
    parse_action,
    resolve,
)
from visact.model.prompts import format_target, key_name
from visact.wire.facts import FactStats

NUMBERLINE = ("-", "+")
BLACKJACK = ("stand", "hit")
EZPOINTS = (*[str(n) for n in range(1, 11)], "+", "*", "=")
POINTS24 = (*[str(n) for n in range(1, 11)], "+", "-", "*", "/", "(", ")", "=")
ALFWORLD = ("go to cabinet 1", "go to cabinet 10", "go to desk 1", "go", "look", "take apple 1 from desk 1")


def _ok(text: str, legal: tuple[str, ...], expected: str) -> ParsedAction:
    parsed = parse_action(text, legal)
    assert parsed.failure is None, parsed.detail
    assert parsed.action == expected, parsed
    assert parsed.ok
    return parsed


def _fails(text: str, legal: tuple[str, ...], failure: ParseFailure) -> ParsedAction:
    parsed = parse_action(text, legal)
    assert parsed.failure is failure, parsed
    assert parsed.action is None
    assert not parsed.ok
    assert parsed.detail
    return parsed


# ---------------------------------------------------------------------------------------------
# Well-formed answers
# ---------------------------------------------------------------------------------------------


def test_well_formed_cot_answer() -> None:
    text = '{"current number": "2", "target number": "4", "thoughts": "2 < 4, so go up.", "action": "+"}'
    parsed = _ok(text, NUMBERLINE, "+")
    assert parsed.detail == ""
    assert parsed.action_char_start == text.index('"action"')


def test_action_only_answer() -> None:
    parsed = _ok('{"action": "stand"}', BLACKJACK, "stand")
    assert parsed.action_char_start == 1


@pytest.mark.parametrize("action", POINTS24)
def test_every_points24_token_parses_exactly(action: str) -> None:
    _ok(format_target({"cards": "4, 6, 8, 1"}, "think", action), POINTS24, action)
    _ok(f"{{'action': '{action}'}}", POINTS24, action)
    _ok(f"{{action: {action}}}", POINTS24, action)


# ---------------------------------------------------------------------------------------------
# Never fooled by action words in the thoughts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"thoughts": "I should not hit", "action": "stand"}',
        '{"thoughts": "action: hit", "action": "stand"}',
        '{"thoughts": "\\"action\\": \\"hit\\"", "action": "stand"}',
        '{"thoughts": "the best action\\": hit, right", "action": "stand"}',
        '{"thoughts": "HIT or hit? no", "action": "stand"}',
        "{'thoughts': 'I'd hit, but action: stand is safer', 'action': 'stand'}",
        '{"thoughts": "I pick "hit"... no", "action": "stand"}',
        '{"thoughts": "maybe {\\"action\\": \\"hit\\"}", "action": "stand"}',
        '{"thoughts": "multi\nline: hit\naction: hit", "action": "stand"}',
        '{"hit": "hit", "thoughts": "hit", "action": "stand"}',
    ],
)
def test_thoughts_mentioning_another_action_do_not_count(text: str) -> None:
    parsed = _ok(text, BLACKJACK, "stand")
    assert parsed.action_char_start == text.rindex("action") - 1


def test_unquoted_thoughts_with_an_action_key_inside_is_ambiguous() -> None:
    # Without quotes there is no telling thoughts from keys: two keys that disagree.
    _fails("{thoughts: my action: hit, action: stand}", BLACKJACK, ParseFailure.AMBIGUOUS)


# ---------------------------------------------------------------------------------------------
# Almost JSON
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"thoughts": "t", "action": "hit"} I hope this helps!', "hit"),
        ('{"thoughts": "t", "action": "hit"}\n\nThe action: stand would lose.', "hit"),
        ('{"thoughts": "t", "action": "hit"', "hit"),
        ('{"thoughts": "t", "action": "hit', "hit"),
        ("{'thoughts': 't', 'action': 'hit'}", "hit"),
        ('{"thoughts": "t", "action": hit}', "hit"),
        ('{"thoughts": "t", "action": hit', "hit"),
        ("{thoughts: t, action: hit}", "hit"),
        ('{"thoughts": "t", "action": "hit",}', "hit"),
        ('{"thoughts": "t", "action": "hit",,}', "hit"),
        ('{\n  "thoughts" : "t" ,\n\n  "action"  :   "hit"  \n}\n', "hit"),
        ('{\r\n\t"thoughts": "t",\r\n\t"action": "hit"\r\n}', "hit"),
        ('{"thoughts": "t"\n "action": "hit"}', "hit"),  # missing comma at a line break
        ('{"thoughts": "t", "action": "Hit"}', "hit"),
        ('{"thoughts": "t", "action": "HIT"}', "hit"),
        ('{"thoughts": "t", "Action": "hit"}', "hit"),
        ('{"thoughts": "t", "ACTION": "hit"}', "hit"),
        ('{"thoughts": "t", "action": " hit "}', "hit"),
        ('```json\n{"thoughts": "t", "action": "hit"}\n```', "hit"),
        ('```\n{"thoughts": "t", "action": "hit"}\n```\nDone.', "hit"),
        ('Sure! Here is my answer: {"thoughts": "t", "action": "hit"}', "hit"),
        ('"thoughts": "t", "action": "hit"', "hit"),  # no braces at all
        ('```json\n"action": "hit"\n```', "hit"),
        ("**action**: hit", "hit"),
        ('{"thoughts": "t", "action": "hit."}', "hit"),
        ('{"thoughts": "t", "action": "I hit"}', "hit"),
        ('{"thoughts": "t", "action": ["hit"]}', "hit"),
        ('{"thoughts": "t", "action": "`hit`"}', "hit"),
        ('{"thoughts": "t", "action": "hit" because it is low}', "hit"),
        ('{"thoughts": "t", "action": "\\u0068it"}', "hit"),
        ('{"thoughts": "I\\\'m low", "action": "hit"}', "hit"),
        ('{"facts": {"player": "12"}, "thoughts": "t", "action": "hit"}', "hit"),
        ('{"thoughts": "t"}\n{"action": "hit"}', "hit"),  # the first object holding an action key
        ('{"action": "hit"}{"action": "stand"}', "hit"),  # text after the answer object is ignored
        ('{"thoughts": "t", "action": "hit", "action": "hit"}', "hit"),  # duplicates that agree
        ('{"thoughts": "t", "action": "hit", "action": "Hit"}', "hit"),
    ],
)
def test_almost_json_is_read(text: str, expected: str) -> None:
    _ok(text, BLACKJACK, expected)


def test_matching_detail_says_how_it_was_matched() -> None:
    assert "ignoring case" in parse_action('{"action": "Hit"}', BLACKJACK).detail
    assert "found 'hit'" in parse_action('{"action": "hit."}', BLACKJACK).detail
    assert parse_action('{"action": "hit"}', BLACKJACK).detail == ""


def test_legal_actions_are_returned_as_spelled() -> None:
    _ok('{"action": "hit"}', ("Stand", "HIT"), "HIT")
    _ok('{"action": "stand"}', (" stand ", "hit"), " stand ")


def test_case_variants_that_are_both_legal_are_exact_or_ambiguous() -> None:
    _ok('{"action": "a"}', ("A", "a"), "a")
    _ok('{"action": "A"}', ("A", "a"), "A")
    _fails('{"action": "Ab"}', ("AB", "ab"), ParseFailure.AMBIGUOUS)


# ---------------------------------------------------------------------------------------------
# Numbers and symbols: "10" is "10", not "1"
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"action": "10"}', "10"),
        ('{"action": "1"}', "1"),
        ("{'action': 10}", "10"),
        ('{"action": 1}', "1"),
        ('{"action": 10', "10"),
        ('{"action": "10."}', "10"),
        ('{"action": "10"', "10"),
        ('{"action": "+1"}', None),
        ('{"action": "("}', "("),
        ('{"action": ")"}', ")"),
        ('{"action": "="}', "="),
        ('{"action": "*"}', "*"),
        ('{"action": "/"}', "/"),
        ('{"action": "-"}', "-"),
    ],
)
def test_numbers_and_symbols_are_exact(text: str, expected: str | None) -> None:
    if expected is None:
        _fails(text, POINTS24, ParseFailure.AMBIGUOUS)
    else:
        _ok(text, POINTS24, expected)


@pytest.mark.parametrize(
    "value", ["+ or -", "- or +", "()", "(10", "10 + 1", "1 or 10", "10, 1", "=)", "either * or /"]
)
def test_values_naming_several_actions_are_ambiguous(value: str) -> None:
    parsed = _fails(f'{{"action": "{value}"}}', POINTS24, ParseFailure.AMBIGUOUS)
    assert repr(value) in parsed.detail


def test_copying_the_prompt_template_is_ambiguous() -> None:
    _fails('{"action": "-" or "+"}', NUMBERLINE, ParseFailure.AMBIGUOUS)


def test_a_number_not_offered_is_not_a_shorter_one() -> None:
    _fails('{"action": "10"}', ("1", "2", "+"), ParseFailure.NOT_LEGAL)
    _fails('{"action": "11"}', POINTS24, ParseFailure.NOT_LEGAL)
    _fails('{"action": "x1"}', ("1", "2"), ParseFailure.NOT_LEGAL)


def test_multiword_actions_prefer_the_longest_mention() -> None:
    _ok('{"action": "go to cabinet 10"}', ALFWORLD, "go to cabinet 10")
    _ok('{"action": "I will go to cabinet 10."}', ALFWORLD, "go to cabinet 10")
    _ok('{"action": "Go to desk 1 now"}', ALFWORLD, "go to desk 1")
    _ok('{"action": "go"}', ALFWORLD, "go")
    _fails('{"action": "go to cabinet 1, then look"}', ALFWORLD, ParseFailure.AMBIGUOUS)


# ---------------------------------------------------------------------------------------------
# Each failure kind, exactly
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n"])
def test_empty_reply(text: str) -> None:
    parsed = _fails(text, BLACKJACK, ParseFailure.EMPTY)
    assert parsed.action_char_start is None


@pytest.mark.parametrize(
    "text",
    ["hit", "I think I should hit.", "Sure: the answer is hit", "thoughts: t", "```\nhit\n```", "}}]]"],
)
def test_no_json(text: str) -> None:
    parsed = _fails(text, BLACKJACK, ParseFailure.NO_JSON)
    assert parsed.action_char_start is None
    assert "no JSON object" in parsed.detail


@pytest.mark.parametrize(
    "text",
    [
        '{"thoughts": "I will hit"}',
        '{"thoughts": "t", "actions": "hit"}',
        '{"thoughts": "t", "act": "hit"}',
        '{"thoughts": "t", "action" "hit"}',
        '{"thoughts": "action: hit"}',
        "{}",
        "{",
    ],
)
def test_no_action_key(text: str) -> None:
    parsed = _fails(text, BLACKJACK, ParseFailure.NO_ACTION_KEY)
    assert parsed.action_char_start is None


def test_no_action_key_names_the_keys_found_and_a_cut_off_reply() -> None:
    closed = _fails('{"current number": "2", "thoughts": "t"}', NUMBERLINE, ParseFailure.NO_ACTION_KEY)
    assert "['current number', 'thoughts']" in closed.detail
    assert "cut off" not in closed.detail
    cut = _fails('{"current number": "2", "thoughts": "so I will', NUMBERLINE, ParseFailure.NO_ACTION_KEY)
    assert "cut off" in cut.detail


@pytest.mark.parametrize("value", ["jump", "", "   ", "stance", "h i t", "hits", "standing", "×", "null"])
def test_not_legal(value: str) -> None:
    text = f'{{"thoughts": "t", "action": "{value}"}}'
    parsed = _fails(text, BLACKJACK, ParseFailure.NOT_LEGAL)
    assert parsed.action_char_start == text.index('"action"')
    assert "['stand', 'hit']" in parsed.detail
    if value.strip():
        assert repr(value) in parsed.detail
    else:
        assert "empty action" in parsed.detail


def test_not_legal_for_empty_and_cut_values() -> None:
    for text in ('{"action": }', '{"action":', '{"action": ,}', '{"action": null}'):
        parsed = _fails(text, BLACKJACK, ParseFailure.NOT_LEGAL)
        assert parsed.action_char_start == 1


def test_points24_detail_lists_every_legal_action() -> None:
    parsed = _fails('{"action": "x"}', POINTS24, ParseFailure.NOT_LEGAL)
    assert repr(list(POINTS24)) in parsed.detail


def test_long_legal_lists_are_shortened_in_details() -> None:
    legal = tuple(f"go to shelf {i}" for i in range(60))
    parsed = _fails('{"action": "fly"}', legal, ParseFailure.NOT_LEGAL)
    assert "(60 in all)" in parsed.detail
    assert "shelf 59" not in parsed.detail


@pytest.mark.parametrize(
    "text",
    [
        '{"action": "hit", "action": "stand"}',
        '{"action": "hit", "thoughts": "t", "action": "stand"}',
        '{"action": "hit", "action": "jump"}',
        '{"action": "hit", "facts": {"action": "stand"}}',
    ],
)
def test_action_keys_that_disagree_are_ambiguous(text: str) -> None:
    parsed = _fails(text, BLACKJACK, ParseFailure.AMBIGUOUS)
    assert "disagree" in parsed.detail
    assert parsed.action_char_start == text.index('"action"')


def test_failure_kinds_have_stable_names() -> None:
    assert [kind.value for kind in ParseFailure] == [
        "empty",
        "no_json",
        "no_action_key",
        "not_legal",
        "ambiguous",
    ]


def test_bad_legal_actions_raise() -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_action('{"action": "+"}', [])
    with pytest.raises(ValueError, match="distinct"):
        parse_action('{"action": "+"}', ["+", "+"])


# ---------------------------------------------------------------------------------------------
# action_char_start
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ('{"thoughts": "t", "action": "hit"}', 18),
        ("{'thoughts': 't', 'action': 'hit'}", 18),
        ("{thoughts: t, action: hit}", 14),
        ("{**Action**: hit}", 1),
        ('  \n{"action": "hit"}', 4),
        ('{"action": "hit", "action": "hit"}', 1),
        ('{"a": 1}{"b": "action"}{"action": "hit"}', 24),
    ],
)
def test_action_char_start_is_the_first_character_of_the_first_action_key(text: str, start: int) -> None:
    parsed = parse_action(text, BLACKJACK)
    assert parsed.action_char_start == start
    assert key_name(text[start:].split(":")[0].strip("\"'")) == "action"


def test_action_char_start_counts_characters_not_bytes() -> None:
    text = '{"thoughts": "五 ♥ 🂡", "action": "hit"}'
    parsed = _ok(text, BLACKJACK, "hit")
    assert parsed.action_char_start == text.index('"action"')
    assert text[parsed.action_char_start :].startswith('"action"')


# ---------------------------------------------------------------------------------------------
# Unicode, size, robustness
# ---------------------------------------------------------------------------------------------


def test_unicode_actions_and_text() -> None:
    _ok('{"thoughts": "Die Straße ist frei 🚗", "action": "STRASSE"}', ("straße", "weg"), "straße")
    _ok('{"thoughts": "五は大きい", "action": "大"}', ("大", "小"), "大")
    _ok("{'action': 'Ä'}", ("ä", "ö"), "ä")
    _fails('{"action": "大 or 小"}', ("大", "小"), ParseFailure.AMBIGUOUS)
    _fails('{"action": "大小"}', ("大", "小"), ParseFailure.NOT_LEGAL)  # letters run together: one other word


def test_very_long_replies_parse_quickly() -> None:
    thoughts = "hit or stand? " * 20_000
    text = f'{{"thoughts": "{thoughts}", "action": "stand"}}'
    began = time.perf_counter()
    parsed = _ok(text, BLACKJACK, "stand")
    assert parsed.action_char_start == len(text) - len('"action": "stand"}')
    _fails("hit " * 50_000, BLACKJACK, ParseFailure.NO_JSON)
    _ok('{"action": "' + "+ " * 50_000 + '"}', NUMBERLINE, "+")  # one action, said many times
    _fails('{"action": "' + "+ - " * 25_000 + '"}', NUMBERLINE, ParseFailure.AMBIGUOUS)
    _fails('" ' * 50_000, BLACKJACK, ParseFailure.NO_JSON)
    _fails("{" * 20_000, BLACKJACK, ParseFailure.NO_ACTION_KEY)
    assert time.perf_counter() - began < 10


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("{}[]:,\"'\\` \nactionhitsd+-10")), max_size=60))
def test_any_text_gives_a_consistent_result(text: str) -> None:
    parsed = parse_action(text, (*BLACKJACK, "+", "-", "1", "10"))
    assert (parsed.action is None) == (parsed.failure is not None)
    if parsed.action is not None:
        assert parsed.action in (*BLACKJACK, "+", "-", "1", "10")
    if parsed.failure in (None, ParseFailure.NOT_LEGAL, ParseFailure.AMBIGUOUS):
        assert parsed.action_char_start is not None
        assert 0 <= parsed.action_char_start < len(text)
        assert text[parsed.action_char_start] in "\"'a"
    else:
        assert parsed.action_char_start is None


# ---------------------------------------------------------------------------------------------
# Round trip: every format_target answer parses back to its action
# ---------------------------------------------------------------------------------------------

_legal_lists = st.lists(
    st.text(min_size=1, max_size=12).filter(str.strip), min_size=1, max_size=8, unique=True
)
_fact_keys = st.text(min_size=1, max_size=10).filter(lambda k: key_name(k) not in ("", "action", "thoughts"))


@st.composite
def _answers(draw: st.DrawFn) -> tuple[str, tuple[str, ...], str, bool]:
    legal = tuple(draw(_legal_lists))
    action = draw(st.sampled_from(legal))
    cot = draw(st.booleans())
    keys = draw(st.lists(_fact_keys, max_size=3, unique_by=key_name))
    facts = {key: draw(st.text(max_size=10)) for key in keys}
    # thoughts that mention other actions, even as a fake action key
    words = st.sampled_from([*legal, '"action": ', "action:", '{"action": "', "}", "'", '"', "\n", "```"])
    thoughts = "".join(draw(st.lists(st.one_of(words, st.text(max_size=8)), max_size=8)))
    return format_target(facts, thoughts, action, cot), legal, action, cot


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=_answers())
def test_format_target_round_trips_through_parse_action(
    answer: tuple[str, tuple[str, ...], str, bool],
) -> None:
    text, legal, action, _ = answer
    parsed = parse_action(text, legal)
    assert parsed.failure is None, (text, parsed)
    assert parsed.action == action
    assert parsed.action_char_start == text.rindex('"action": ')


@settings(max_examples=200, deadline=None)
@given(answer=_answers(), junk=st.sampled_from(["", " ", "\n\nHope this helps.", "}", "\n```"]))
def test_round_trip_survives_fences_and_trailing_text(
    answer: tuple[str, tuple[str, ...], str, bool], junk: str
) -> None:
    text, legal, action, _ = answer
    fenced = "```json\n" + text + junk
    assert parse_action(fenced, legal).action == action
    assert parse_action(fenced, legal).action_char_start == len("```json\n") + text.rindex('"action": ')


# ---------------------------------------------------------------------------------------------
# Bad-answer policy
# ---------------------------------------------------------------------------------------------


def test_resolve_plays_the_parsed_action_without_penalty() -> None:
    parsed = parse_action('{"action": "hit"}', BLACKJACK)
    assert resolve(parsed, BLACKJACK, BadAnswerPolicy(penalty=1.0), random.Random(0)) == ("hit", 0.0)


def test_resolve_plays_a_random_legal_action_and_the_penalty() -> None:
    parsed = parse_action("no idea", POINTS24)
    policy = BadAnswerPolicy(penalty=0.5)
    plays = [resolve(parsed, POINTS24, policy, random.Random(seed)) for seed in range(400)]
    assert {penalty for _, penalty in plays} == {0.5}
    assert {action for action, _ in plays} == set(POINTS24)
    again = [resolve(parsed, POINTS24, policy, random.Random(seed)) for seed in range(400)]
    assert plays == again


def test_paper_policy_has_no_penalty() -> None:
    parsed = parse_action("", NUMBERLINE)
    action, penalty = resolve(parsed, NUMBERLINE, BadAnswerPolicy(), random.Random(1))
    assert action in NUMBERLINE
    assert penalty == 0.0


@pytest.mark.parametrize("penalty", [-0.1, math.nan, math.inf])
def test_policy_penalty_must_be_finite_and_non_negative(penalty: float) -> None:
    with pytest.raises(ValueError, match="penalty"):
        BadAnswerPolicy(penalty=penalty)


def test_resolve_refuses_a_parse_against_other_legal_actions() -> None:
    parsed = parse_action('{"action": "hit"}', BLACKJACK)
    with pytest.raises(ValueError, match="same legal actions"):
        resolve(parsed, NUMBERLINE, BadAnswerPolicy(), random.Random(0))


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------


def test_parse_stats_counts_every_kind() -> None:
    stats = ParseStats()
    assert math.isnan(stats.valid_rate)
    replies = [
        '{"action": "hit"}',
        '{"action": "stand"}',
        "",
        "hit",
        "{}",
        '{"action": "x"}',
        '{"action": "hit stand"}',
    ]
    for reply in replies:
        stats.add(parse_action(reply, BLACKJACK))
    assert stats.total == 7
    assert stats.valid == 2
    assert stats.valid_rate == pytest.approx(2 / 7)
    assert all(stats.failures[kind] == 1 for kind in ParseFailure)
    metrics = stats.metrics()
    assert metrics["parse/valid_rate"] == pytest.approx(2 / 7)
    assert metrics["parse/total"] == 7
    assert metrics["parse/failures/not_legal"] == 1


def test_parse_stats_metrics_include_zero_counts_and_merge() -> None:
    a, b = ParseStats(), ParseStats()
    a.add(parse_action('{"action": "hit"}', BLACKJACK))
    b.add(parse_action("", BLACKJACK))
    b.add(parse_action("", BLACKJACK))
    assert set(a.metrics("agent/parse")) == {
        "agent/parse/valid_rate",
        "agent/parse/total",
        *(f"agent/parse/failures/{kind.value}" for kind in ParseFailure),
    }
    a.merge(b)
    assert (a.total, a.valid, a.failures[ParseFailure.EMPTY]) == (3, 1, 2)
    assert b.total == 2


# ---------------------------------------------------------------------------------------------
# From the character offset to the first action token
# ---------------------------------------------------------------------------------------------


def test_token_starting_at_the_boundary_is_the_first_action_token() -> None:
    # '{"t": "x", ' | '"action": "+"}'
    text = '{"t": "x", "action": "+"}'
    char_start = parse_action(text, NUMBERLINE).action_char_start
    assert char_start == 11
    offsets = [(0, 2), (2, 3), (3, 5), (5, 7), (7, 8), (8, 10), (10, 11), (11, 12), (12, 18), (18, 20)]
    assert action_span_start_token(offsets, char_start) == 7


def test_token_ending_at_the_boundary_is_cot() -> None:
    assert action_span_start_token([(0, 5), (5, 9), (9, 12)], 5) == 1


def test_token_straddling_the_boundary_is_action() -> None:
    # ', "' holds the key's opening quote: its log-prob counts as action
    assert action_span_start_token([(0, 9), (9, 12), (12, 18)], 11) == 1


def test_empty_spans_are_never_the_first_action_token() -> None:
    assert action_span_start_token([(0, 0), (0, 4), (0, 0), (4, 8), (0, 0)], 4) == 3
    assert action_span_start_token([(0, 0), (0, 4)], 0) == 1
    assert action_span_start_token([(0, 3), (3, 3), (3, 6)], 3) == 2


def test_byte_pieces_of_one_character_fall_on_one_side() -> None:
    # '♥' at offset 4 split into three byte tokens that all report its span (4, 5)
    assert action_span_start_token([(0, 4), (4, 5), (4, 5), (4, 5), (5, 9)], 4) == 1
    assert action_span_start_token([(0, 4), (4, 5), (4, 5), (4, 5), (5, 9)], 5) == 4


def test_no_action_key_makes_everything_cot() -> None:
    assert action_span_start_token([(0, 3), (3, 6)], None) == 2
    assert action_span_start_token([], None) == 0


def test_offsets_of_another_text_are_refused() -> None:
    with pytest.raises(ValueError, match="same generated text"):
        action_span_start_token([(0, 3), (3, 6)], 6)
    with pytest.raises(ValueError, match="same generated text"):
        action_span_start_token([(0, 0), (0, 0)], 0)
    with pytest.raises(ValueError, match=">= 0"):
        action_span_start_token([(0, 3)], -1)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), answer=_answers())
def test_the_first_action_token_holds_the_action_key_start(
    data: st.DataObject, answer: tuple[str, tuple[str, ...], str, bool]
) -> None:
    text = answer[0]
    char_start = parse_action(text, answer[1]).action_char_start
    assert char_start is not None
    cuts = sorted(
        set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=20)) if len(text) > 1 else [])
    )
    bounds = [0, *cuts, len(text)]
    offsets = list(itertools.pairwise(bounds))
    assume(offsets)
    index = action_span_start_token(offsets, char_start)
    start, end = offsets[index]
    assert start <= char_start < end
    assert all(b <= char_start for _, b in offsets[:index])
    assert text[char_start:].startswith('"action"')


# ---------------------------------------------------------------------------------------------
# Truthfulness: the facts a chain of thought states, against the environment's
# ---------------------------------------------------------------------------------------------

NUMBERLINE_TRUTH = (("current number", "3"), ("target number", "5"))


def test_check_facts_marks_each_fact_right_or_wrong_in_the_truths_order() -> None:
    answer = '{"current number": "3", "target number": "4", "thoughts": "3 < 4", "action": "+"}'
    assert check_facts(answer, NUMBERLINE_TRUTH) == (("current number", True), ("target number", False))


def test_check_facts_ignores_case_spaces_and_key_markup_but_not_the_value() -> None:
    truth = (("cards", "[1, 3, 4, 6]"), ("formula", "(1+3)"), ("dealer card", "K"))
    answer = '```json\n{\'**Cards**\': \'[1,3, 4,6]\', "formula": "( 1 + 3 )", "dealer card": "k"}\n```'
    assert check_facts(answer, truth) == (("cards", True), ("formula", True), ("dealer card", True))
    wrong = '{"cards": "[1, 3, 4, 7]", "formula": "(1+3)*", "dealer card": "Q"}'
    assert check_facts(wrong, truth) == (("cards", False), ("formula", False), ("dealer card", False))


def test_a_fact_the_answer_does_not_state_is_wrong() -> None:
    cut_off = '{"current number": "3", "targ'
    assert check_facts(cut_off, NUMBERLINE_TRUTH) == (("current number", True), ("target number", False))
    assert check_facts("+", NUMBERLINE_TRUTH) == (("current number", False), ("target number", False))
    assert check_facts('{"action": "+"}', ()) == ()


def test_facts_inside_the_thoughts_or_in_a_later_object_do_not_count() -> None:
    answer = (
        '{"current number": "2", "thoughts": "the target number: 5", "action": "+"} {"target number": "5"}'
    )
    assert check_facts(answer, NUMBERLINE_TRUTH) == (("current number", False), ("target number", False))


def test_answer_values_reads_every_key_of_the_answer_object() -> None:
    text = 'Sure. {"Current Number": 3, "thoughts": "go up, then stop", "action": "+",}'
    assert answer_values(text) == {"current number": "3", "thoughts": "go up, then stop", "action": "+"}
    assert answer_values("no json here") == {}


def test_fact_stats_count_overall_and_per_key() -> None:
    stats = FactStats()
    assert math.isnan(stats.accuracy) and stats.metrics() == {} and stats.by_key() == {}
    stats.add((("current number", True), ("target number", False)))
    stats.add((("current number", True), ("target number", True)))
    stats.add(())  # an unchecked answer changes nothing
    assert stats.accuracy == pytest.approx(3 / 4)
    assert stats.by_key() == {"current number": 1.0, "target number": 0.5}
    assert stats.metrics() == {
        "charts/fact_accuracy": pytest.approx(0.75),
        "charts/fact_accuracy/current_number": 1.0,
        "charts/fact_accuracy/target_number": 0.5,
    }


@pytest.mark.parametrize("game", ["numberline", "ezpoints", "points24", "blackjack"])
def test_the_experts_own_answers_state_every_fact_correctly(game: str) -> None:
    from visact.env_server.games import make

    env = make(game)
    env.reset(seed=3)
    move = env.expert()
    assert move is not None and move.facts
    answer = format_target(move.facts, move.thoughts, move.action)
    assert all(right for _, right in check_facts(answer, move.facts))
