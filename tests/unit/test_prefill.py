"""``--prefill-answer``: the answer's fixed opening ends the prompt, the model writes the rest.

Checked on the tiny VLM: the prompt is the plain prompt followed by the opening's own tokens, the
answer is read whole, the log-probs are the learner's, SFT trains on what the agent samples, and
every process of a run gets the setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from visact.agent.action_choice import action_part
from visact.agent.config import AgentConfig
from visact.agent.parsing import action_span_start_token, parse_continuation
from visact.agent.policy import Answer, PolicyInput, VLMPolicy
from visact.configcli import parse_config, to_argv
from visact.model.generation import (
    prompt_token_ids,
    render_prompt,
    teacher_forced_log_probs,
    token_char_spans,
)
from visact.model.loading import LoadedVLM, load_vlm
from visact.model.prompts import answer_prefill, build_messages, format_target, prefill_message
from visact.orchestration.demo import (
    DemoConfig,
    evaluation_config,
    trainer_config,
    warm_start,
    with_game_settings,
)
from visact.trainer.config import TrainerConfig
from visact.trainer.sft import Demo, answer_opening, encode
from visact.trainer.sft_config import SFTConfig

FACTS = ("current number", "target number")
TASK = "Make the current number equal the target."
LEGAL = ("-", "+")


@pytest.fixture(scope="module")
def loaded() -> LoadedVLM:
    return load_vlm("tiny", dtype="float32", device="cpu")


def frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)


def assert_log_probs_are_the_learners(
    loaded: LoadedVLM, item: PolicyInput, answer: Answer, temperature: float
) -> None:
    """The answer's recorded log-probs are what the learner recomputes from its prompt and tokens."""
    with torch.no_grad():
        recomputed = teacher_forced_log_probs(
            loaded, [item.image], [answer.prompt_ids], [answer.generated_ids], temperature=temperature
        )
    torch.testing.assert_close(
        torch.tensor(answer.log_probs), recomputed.log_probs[0].float(), atol=1e-4, rtol=0
    )


def test_the_opening_is_the_first_key_of_every_answer() -> None:
    assert answer_prefill("action") == '{"action":'
    assert format_target((), "", "=", cot=False).startswith(answer_prefill("action"))
    cot = format_target({"current number": "3", "target number": "5"}, "go up", "+")
    assert cot.startswith(answer_prefill("current number"))
    assert format_target((), "think", "+").startswith(answer_prefill("thoughts"))

    plain = build_messages(TASK, LEGAL, FACTS)
    prefilled = build_messages(TASK, LEGAL, FACTS, prefill=True)
    assert prefilled[:-1] == plain and prefilled[-1] == prefill_message('{"current number":')
    assert build_messages(TASK, LEGAL, FACTS, cot=False, prefill=True)[-1] == prefill_message('{"action":')


def test_the_prompt_ends_with_the_opening_tokenized_as_the_full_answer_is(loaded: LoadedVLM) -> None:
    plain = build_messages(TASK, LEGAL, cot=False)
    prefilled = build_messages(TASK, LEGAL, cot=False, prefill=True)
    assert render_prompt(loaded, prefilled) == render_prompt(loaded, plain) + '{"action":'

    [plain_ids, prefilled_ids] = prompt_token_ids(loaded, [frame()] * 2, [plain, prefilled])
    answer = loaded.tokenizer('{"action": "="}', add_special_tokens=False)["input_ids"]
    opening = loaded.tokenizer('{"action":', add_special_tokens=False)["input_ids"]
    # a model SFT'd on the whole answer sees, after the opening, the very tokens it was taught
    assert prefilled_ids == plain_ids + opening and answer[: len(opening)] == opening


def test_parse_continuation_reads_the_whole_answer_and_splits_its_tokens(loaded: LoadedVLM) -> None:
    def spans_of(text: str) -> tuple[str, list[tuple[int, int]]]:
        return token_char_spans(
            loaded.tokenizer, loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        )

    generated, spans = spans_of(' "+"}')
    text, parsed, start = parse_continuation('{"action":', generated, spans, LEGAL)
    assert (text, parsed.action, start) == ('{"action": "+"}', "+", 0)  # the key is in the opening

    rest = ' "3", "target number": "5", "thoughts": "up", "action": "+"}'
    generated, spans = spans_of(rest)
    text, parsed, start = parse_continuation('{"current number":', generated, spans, LEGAL)
    assert parsed.action == "+" and text == '{"current number":' + rest
    assert start == action_span_start_token(spans, rest.index('"action"'))
    assert '"action"' not in loaded.tokenizer.decode(
        loaded.tokenizer(rest, add_special_tokens=False)["input_ids"][:start]
    )

    generated, spans = spans_of(' "3"}')
    _, parsed, start = parse_continuation('{"current number":', generated, spans, LEGAL)
    assert parsed.action is None and start == len(spans)  # no action key: all of it is CoT


@pytest.mark.parametrize("cot", [False, True])
def test_a_prefilled_answer_is_whole_and_its_log_probs_are_the_learners(loaded: LoadedVLM, cot: bool) -> None:
    policy = VLMPolicy(loaded, cot=cot, temperature=1.0, max_new_tokens=24, seed=0, prefill_answer=True)
    items = [PolicyInput(frame(seed), TASK, LEGAL, FACTS) for seed in range(3)]
    answers = policy.act(items)
    opening = '{"current number":' if cot else '{"action":'
    opening_ids = loaded.tokenizer(opening, add_special_tokens=False)["input_ids"]
    for item, answer in zip(items, answers, strict=True):
        assert answer.text.startswith(opening)
        assert answer.prompt_ids[-len(opening_ids) :] == opening_ids
        assert answer.prompt_ids == policy.prompt_ids([item])[0]  # what a value bootstrap sees
        if not cot:
            assert answer.action_start == 0
        assert_log_probs_are_the_learners(loaded, item, answer, 1.0)


def test_likeliest_rewrites_what_follows_the_opening(loaded: LoadedVLM) -> None:
    policy = VLMPolicy(
        loaded,
        cot=False,
        temperature=0.7,
        max_new_tokens=8,
        seed=2,
        prefill_answer=True,
        action_choice="likeliest",
    )
    item = PolicyInput(frame(), TASK, LEGAL)
    [answer] = policy.act([item])
    assert answer.parsed.action in LEGAL and answer.text.endswith(action_part(answer.parsed.action)[8:])
    assert answer.text.startswith('{"action":') and answer.action_start == 0
    written = loaded.tokenizer.decode(answer.generated_ids, skip_special_tokens=True)
    assert written == answer.text[len('{"action":') :]
    assert_log_probs_are_the_learners(loaded, item, answer, 0.7)


def test_sft_trains_on_what_follows_the_opening_with_the_same_weights(loaded: LoadedVLM) -> None:
    target = format_target({"current number": "3", "target number": "5"}, "go up", "+")
    demo = Demo(
        frame(), "the prompt", target, {"current number": "3", "target number": "5"}, (*FACTS, "action")
    )
    plain = encode(loaded, demo, 10.0)
    prefilled = encode(loaded, demo, 10.0, prefill=True)
    opening = loaded.tokenizer('{"current number":', add_special_tokens=False)["input_ids"]
    assert prefilled.prompt_ids == plain.prompt_ids + opening
    assert plain.answer_ids == opening + prefilled.answer_ids
    assert plain.weights == [1.0] * len(opening) + prefilled.weights
    assert sum(prefilled.weighted) == sum(plain.weighted) > 0

    assert answer_opening('{"action": "+"}') == '{"action":'
    for bad in ["not json", "[]", '{ "action": "+"}']:
        with pytest.raises(ValueError, match="target"):
            answer_opening(bad)


def test_every_process_of_a_run_gets_the_setting(tmp_path: Path) -> None:
    assert parse_config(AgentConfig, ["--server", "h:1", "--prefill-answer"]).sampling.prefill_answer
    assert parse_config(SFTConfig, ["--prefill-answer"]).prefill_answer
    config = with_game_settings(
        parse_config(DemoConfig, ["--env", "ezpoints", "--no-cot", "--prefill-answer"])
    )
    trainer = trainer_config(config, tmp_path / "model", tmp_path / "ppo", tmp_path / "trainer.port")
    assert trainer.rollout.prefill_answer and parse_config(TrainerConfig, to_argv(trainer)) == trainer
    assert warm_start(config, tmp_path / "demos.jsonl", tmp_path / "sft").prefill_answer
    agent = evaluation_config(config, ["h:1"], "tiny", None, tmp_path / "eval.json")
    assert agent.sampling.prefill_answer and not agent.sampling.cot
    # unset: on for action-only answers, off for the paper's CoT prompt; what the user sets wins
    assert with_game_settings(parse_config(DemoConfig, ["--env", "ezpoints", "--no-cot"])).prefill_answer
    cot = with_game_settings(parse_config(DemoConfig, ["--env", "ezpoints"]))
    assert cot.prefill_answer is False
    assert not warm_start(cot, tmp_path / "demos.jsonl", tmp_path / "sft").prefill_answer
    chosen = parse_config(DemoConfig, ["--no-cot", "--no-prefill-answer"])
    assert with_game_settings(chosen).prefill_answer is False
