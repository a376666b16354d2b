"""The SFT loss weights: which answer tokens count as image-dependent; and the running success."""

from __future__ import annotations

import json

import numpy as np
import pytest

from visact.model.prompts import format_target
from visact.trainer.metrics import trailing_success
from visact.trainer.sft import (
    Demo,
    image_labels,
    informative_words,
    thought_spans,
    token_weights,
    value_spans,
)
from visact.trainer.sft_config import SFTConfig

THOUGHTS = [
    "The current number 2 is less than the target 4, so I should increase it.",
    "The current number 5 is greater than the target 1, so I should decrease it.",
    "The current number 0 is less than the target 3, so I should increase it.",
]


def target(thoughts: str) -> str:
    return format_target({"current number": "2", "target number": "4"}, thoughts, "+")


def test_informative_words_are_those_not_in_every_thought() -> None:
    words = informative_words(THOUGHTS, below=0.9)
    assert words == {"0", "1", "2", "3", "4", "5", "less", "greater", "increase", "decrease"}
    assert informative_words(THOUGHTS, below=0.0) == frozenset()
    assert informative_words(["", ""], below=0.9) == frozenset()


def test_thought_spans_cover_only_informative_words_inside_the_thoughts() -> None:
    answer = target(THOUGHTS[0])
    spans = thought_spans(answer, frozenset({"2", "less", "increase"}))
    assert [answer[s:e] for s, e in spans] == ["2", "less", "increase"]
    thoughts_start = answer.index('"thoughts"')
    assert all(s > thoughts_start for s, _ in spans)  # the "2" of "current number" is not a thought


def test_symbol_words_weight_a_plans_operators_like_its_numbers() -> None:
    plans = [
        "The cards are [8, 3, 10, 1], and (8-3)*(10-1) = 24. The formula is empty, so I append '('.",
        "The cards are [4, 6, 2, 2], and 4*6*(2/2) = 24. The formula is empty, so I append '4'.",
        "The cards are [6, 6, 6, 6], and 6+6+6+6 = 24. The formula is empty, so I append '6'.",
    ]
    plain = informative_words(plans, below=0.9)
    assert not {"+", "-", "*", "/", "(", ")"} & plain and {"8", "10"} <= plain
    symbols = informative_words(plans, below=0.9, symbols="+-*/()")
    assert symbols - plain == {"+", "-", "*", "/", "(", ")"}
    assert "*" not in informative_words(plans[:2], below=0.9, symbols="+-*/()")  # in every thought
    answer = format_target({"cards": "[8, 3, 10, 1]"}, plans[0], "(")
    spans = thought_spans(answer, symbols, "+-*/()")
    assert [answer[s:e] for s, e in spans][:8] == ["8", "3", "10", "1", "(", "8", "-", "3"]
    assert "-" not in [answer[s:e] for s, e in thought_spans(answer, symbols)]  # not a word without it


def test_value_spans_and_token_weights() -> None:
    answer = target(THOUGHTS[0])
    spans = value_spans(answer, ["current number", "target number", "action"])
    assert [answer[s:e] for s, e in spans] == ["2", "4", "+"]
    offsets = [(0, 1), (answer.index("2"), answer.index("2") + 1), (1, 2)]
    assert token_weights(offsets, spans, 10.0) == [1.0, 10.0, 1.0]
    assert json.loads(answer)["action"] == "+"


def test_config_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="common-words"):
        SFTConfig(common_words=1.5)
    with pytest.raises(ValueError, match="vision-lr-scale"):
        SFTConfig(vision_lr_scale=-1)


def test_trailing_success_weights_whole_updates_by_their_episodes() -> None:
    rows = [
        {"charts/episodes": 100.0, "charts/success_rate": 0.0},
        {"charts/episodes": 150.0, "charts/success_rate": 0.5},
        {"charts/episodes": 50.0, "charts/success_rate": 1.0},
    ]
    # the last two updates hold 200 episodes: (75 + 50) / 200
    assert trailing_success(rows, 200) == pytest.approx(0.625)
    assert trailing_success(rows, 50) == pytest.approx(1.0)
    assert trailing_success(rows, 1000) == pytest.approx(125 / 300)
    assert trailing_success([], 200) is None


def demo(prompt: str, **facts: str) -> Demo:
    return Demo(np.zeros((2, 2, 3), np.uint8), prompt, "{}", dict(facts), (*facts, "action"))


def test_warmup_labels_split_list_facts_and_leave_out_facts_the_prompt_states() -> None:
    demos = [
        demo("The current formula is empty.", cards="[7, 2, 4, 10]", formula=""),
        demo("The current formula is '7*'.", cards="[7, 2, 4, 10]", formula="7*"),
        demo("Your cards.", dealer="K", player="[A, 7]", total="18"),
    ]
    assert image_labels(demos) == [
        {"cards[0]": "7", "cards[1]": "2", "cards[2]": "4", "cards[3]": "10"},
        {"cards[0]": "7", "cards[1]": "2", "cards[2]": "4", "cards[3]": "10"},
        {"dealer": "K", "player[0]": "A", "player[1]": "7", "total": "18"},
    ]
    # a value that only some prompts hold ("0" in "between 0 and 5") is still read off the image
    numbers = [demo("between 0 and 5", current="0"), demo("between 0 and 5", current="3")]
    assert image_labels(numbers) == [{"current": "0"}, {"current": "3"}]
