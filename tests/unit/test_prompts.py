"""The prompt builder: message structure, the paper's answer format, the target answer, validation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from visact.model.prompts import (
    ACTION_KEY,
    THOUGHTS_KEY,
    answer_format,
    answer_keys,
    build_messages,
    check_legal_actions,
    format_target,
    instruction_text,
)

NUMBERLINE_FACTS = ("current number", "target number")
POINTS24 = (*[str(n) for n in range(1, 11)], "+", "-", "*", "/", "(", ")", "=")
TASK = "Move the current number to the target number."


def _text(messages: list[dict]) -> str:
    return messages[0]["content"][1]["text"]


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


def test_messages_are_one_user_turn_with_the_image_then_the_text() -> None:
    messages = build_messages(TASK, ["-", "+"], NUMBERLINE_FACTS)
    assert len(messages) == 1
    assert messages[0]["role"] == "user"
    content = messages[0]["content"]
    assert content[0] == {"type": "image"}
    assert content[1]["type"] == "text"
    assert set(content[1]) == {"type", "text"}
    assert len(content) == 2
    json.dumps(messages)  # plain data, as a chat template expects


def test_numberline_prompt_is_task_then_the_papers_format() -> None:
    text = _text(build_messages(TASK, ["-", "+"], NUMBERLINE_FACTS))
    assert text == (
        f"{TASK}\n"
        "Reply with a valid JSON object in exactly this format:\n"
        '{"current number": "x", "target number": "x", "thoughts": "{first read the facts off the '
        'image, then think about which action to choose}", "action": "-" or "+"}'
    )


def test_task_text_comes_first_and_is_stripped() -> None:
    text = instruction_text("  \nReach 21.\n", ["stand", "hit"], ("player cards",))
    assert text.startswith("Reach 21.\nReply")


def test_empty_task_gives_no_blank_first_line() -> None:
    assert instruction_text("", ["-", "+"]).startswith("Reply with a valid JSON object")


def test_action_only_prompt_keeps_only_the_action_key() -> None:
    text = _text(build_messages(TASK, ["-", "+"], NUMBERLINE_FACTS, cot=False))
    assert text.endswith('\n{"action": "-" or "+"}')
    assert THOUGHTS_KEY not in text
    assert '"current number"' not in text


def test_cot_without_fact_keys_asks_only_for_thoughts() -> None:
    fmt = answer_format(["stand", "hit"], ())
    assert fmt == '{"thoughts": "{think about which action to choose}", "action": "stand" or "hit"}'


def test_every_legal_action_is_listed_quoted_in_order() -> None:
    fmt = answer_format(POINTS24, ("cards", "formula"))
    listed = fmt.split('"action": ', 1)[1].rstrip("}")
    assert listed == " or ".join(f'"{a}"' for a in POINTS24)


def test_actions_and_keys_with_quotes_are_json_quoted() -> None:
    fmt = answer_format(['say "hi"', "wait"], ('the "sign"',))
    assert '"say \\"hi\\"" or "wait"' in fmt
    assert '"the \\"sign\\"": "x"' in fmt


def test_template_keys_follow_answer_keys_order() -> None:
    fmt = answer_format(["-", "+"], NUMBERLINE_FACTS)
    positions = [fmt.index(json.dumps(k)) for k in answer_keys(NUMBERLINE_FACTS)]
    assert positions == sorted(positions)
    assert answer_keys(NUMBERLINE_FACTS) == (*NUMBERLINE_FACTS, THOUGHTS_KEY, ACTION_KEY)
    assert answer_keys(NUMBERLINE_FACTS, cot=False) == (ACTION_KEY,)


def test_no_chat_template_is_hard_coded() -> None:
    text = _text(build_messages(TASK, ["-", "+"], NUMBERLINE_FACTS))
    for marker in ("<|", "[INST]", "USER:", "ASSISTANT:", "<image>", "<s>"):
        assert marker not in text


def test_prompt_is_concise() -> None:
    overhead = len(instruction_text("", ["-", "+"], NUMBERLINE_FACTS))
    assert overhead < 250, overhead


def test_unicode_is_kept_verbatim() -> None:
    text = instruction_text("Zähle bis 5 — 五", ["größer", "kleiner"], ("Zahl",))
    assert "Zähle bis 5 — 五" in text
    assert '"größer" or "kleiner"' in text
    assert "\\u" not in text


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("legal", "message"),
    [
        ([], "empty"),
        (["+", "+"], "distinct"),
        (["+", " "], "non-blank"),
        (["+", ""], "non-blank"),
        ("+-", "sequence of strings"),
        (["+", 3], "non-blank string"),
    ],
)
def test_bad_legal_actions_are_refused(legal: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_messages(TASK, legal, ())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        check_legal_actions(legal)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fact_keys",
    [("action",), ("Action",), (" THOUGHTS ",), ("**action**",), ("a", "A"), ("",), ("a", " a ")],
)
def test_fact_keys_that_collide_are_refused(fact_keys: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="fact key"):
        build_messages(TASK, ["-", "+"], fact_keys)
    with pytest.raises(ValueError, match="fact key"):
        format_target(dict.fromkeys(fact_keys, "1"), "t", "+")


def test_action_only_prompt_ignores_fact_keys() -> None:
    assert build_messages(TASK, ["-", "+"], ("action",), cot=False) == build_messages(
        TASK, ["-", "+"], (), cot=False
    )


def test_task_must_be_text() -> None:
    with pytest.raises(ValueError, match="task"):
        build_messages(None, ["-", "+"])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The target answer
# ---------------------------------------------------------------------------------------------


def test_format_target_numberline() -> None:
    target = format_target({"current number": "2", "target number": "4"}, "2 < 4, so go up.", "+")
    assert target == (
        '{"current number": "2", "target number": "4", "thoughts": "2 < 4, so go up.", "action": "+"}'
    )


def test_format_target_takes_pairs_in_their_order() -> None:
    target = format_target((("target number", "4"), ("current number", "2")), "t", "-")
    assert list(json.loads(target)) == ["target number", "current number", THOUGHTS_KEY, ACTION_KEY]


def test_format_target_action_only_ignores_facts_and_thoughts() -> None:
    assert format_target({"current number": "2"}, "long thoughts", "+", cot=False) == '{"action": "+"}'


def test_format_target_keeps_unicode_and_escapes_quotes() -> None:
    target = format_target({"Karte": "König ♥"}, 'he said "hit"\nthen 五', "stand")
    assert "König ♥" in target
    assert "五" in target
    assert "\n" not in target  # one line
    assert json.loads(target) == {
        "Karte": "König ♥",
        THOUGHTS_KEY: 'he said "hit"\nthen 五',
        ACTION_KEY: "stand",
    }


def test_format_target_matches_the_prompt_template_keys() -> None:
    target = format_target(dict.fromkeys(NUMBERLINE_FACTS, "3"), "t", "+")
    assert tuple(json.loads(target)) == answer_keys(NUMBERLINE_FACTS)
    fmt = answer_format(["-", "+"], NUMBERLINE_FACTS)
    assert target.split(": ")[0] == fmt.split(": ")[0]


def test_format_target_is_deterministic() -> None:
    facts = {"b": "1", "a": "2"}
    assert format_target(facts, "t", "+") == format_target(dict(facts), "t", "+")
    assert format_target(facts, "t", "+").index('"b"') < format_target(facts, "t", "+").index('"a"')


# ---------------------------------------------------------------------------------------------
# Purity
# ---------------------------------------------------------------------------------------------

PROBE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "numpy"):
            raise ImportError("blocked for this test: " + name)
        return None
sys.meta_path.insert(0, Block())
import visact.model.prompts, visact.agent.parsing
print(visact.agent.parsing.parse_action('{"action": "+"}', ["-", "+"]).action)
"""


def test_prompt_and_parsing_modules_are_pure() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "+"
