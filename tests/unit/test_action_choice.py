"""``--action-choice likeliest`` on the tiny VLM: the CoT is kept, the action part rewritten to a
legal action drawn by the model's own probabilities, and the tokens' log-probs are the ones the
learner recomputes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from visact.agent.action_choice import action_part, common_prefix_length
from visact.agent.config import AgentConfig, PolicyConfig, SamplingConfig, ServersConfig
from visact.agent.policy import PolicyInput, VLMPolicy
from visact.configcli import parse_config
from visact.model.engines import SamplingSettings
from visact.model.engines.transformers_engine import TransformersEngine
from visact.model.generation import Sample, teacher_forced_log_probs, token_char_spans
from visact.model.loading import LoadedVLM, load_vlm

LEGAL = ("go to cabinet 1", "open cabinet 1", "open cabinet 2", "look")
COT = '{"thoughts": "the cabinet is closed", '


@pytest.fixture(scope="module")
def loaded() -> LoadedVLM:
    return load_vlm("tiny", dtype="float32", device="cpu")


class Writes(TransformersEngine):
    """The tiny VLM, except that its answer is always ``text`` (as if it had sampled it): the
    scoring is the real engine's."""

    def __init__(self, loaded: LoadedVLM, text: str) -> None:
        super().__init__(loaded, seed=0)
        self.text = text

    def sample(
        self,
        images: Sequence[Any],
        prompts: Sequence[Any],
        settings: SamplingSettings,
        versions: Sequence[int | None] | None = None,
    ) -> list[Sample]:
        prompt_ids = self.prompt_ids(images, prompts)
        ids = list(self.loaded.tokenizer(self.text, add_special_tokens=False)["input_ids"])
        ids += list(self.loaded.stop_ids[:1])
        text, spans = token_char_spans(self.loaded.tokenizer, ids)
        return [Sample(p, ids, [0.0] * len(ids), text, spans, True, self.version) for p in prompt_ids]


def observation(legal: tuple[str, ...] = LEGAL) -> PolicyInput:
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return PolicyInput(image, "open the cabinet", legal)


def test_the_cot_is_kept_and_the_action_part_is_a_legal_action_with_the_learners_log_probs(
    loaded: LoadedVLM,
) -> None:
    engine = Writes(loaded, COT + '"action": "open cabinet 10"}')
    policy = VLMPolicy(engine, temperature=0.7, action_choice="likeliest", seed=1)
    [answer] = policy.act([observation()])

    assert answer.parsed.action in LEGAL and answer.parsed.failure is None
    assert answer.text.startswith(COT) and answer.text.endswith(action_part(answer.parsed.action))
    assert answer.generated_ids[-1] == loaded.stop_ids[0]
    assert 0 < answer.action_start < len(answer.generated_ids)
    with torch.no_grad():
        recomputed = teacher_forced_log_probs(
            loaded, [observation().image], [answer.prompt_ids], [answer.generated_ids], temperature=0.7
        )
    torch.testing.assert_close(
        torch.tensor(answer.log_probs), recomputed.log_probs[0].float(), atol=1e-4, rtol=0
    )
    cot_tokens = loaded.tokenizer.decode(answer.generated_ids[: answer.action_start])
    assert '"action"' not in cot_tokens and "thoughts" in cot_tokens
    assert (
        policy.choice_stats.choices == 1 and policy.choice_stats.changed == 1
    )  # "open cabinet 10" is not legal


def test_choices_follow_the_models_probabilities_of_the_legal_actions(loaded: LoadedVLM) -> None:
    legal = ("open cabinet 1", "open cabinet 2", "open cabinet 3", "open cabinet 4")  # alike in length
    engine = Writes(loaded, COT + '"action": "open cabinet 2"}')
    image = observation(legal).image
    prompt = engine.prompt_ids([image], [VLMPolicy(engine).messages(observation(legal))])[0]
    candidates = [
        [*loaded.tokenizer(COT + action_part(a), add_special_tokens=False)["input_ids"], loaded.stop_ids[0]]
        for a in legal
    ]
    shared = common_prefix_length(candidates)
    with torch.no_grad():
        scored = teacher_forced_log_probs(
            loaded, [image] * len(legal), [prompt] * len(legal), candidates, 2.0
        )
    totals = (scored.log_probs[:, shared:]).sum(dim=1).double()
    expected = torch.softmax(totals, dim=0).numpy()

    policy = VLMPolicy(engine, temperature=2.0, action_choice="likeliest", seed=3)
    answers = [a for _ in range(10) for a in policy.act([observation(legal)] * 10)]
    draws = Counter(a.parsed.action for a in answers)
    observed = np.array([draws[a] for a in legal]) / len(answers)
    # 100 draws: each share within 4.5 binomial standard deviations of the model's probability
    assert np.all(np.abs(observed - expected) <= 4.5 * np.sqrt(expected * (1 - expected) / 100) + 1e-9)
    assert policy.choice_stats.choices == 100
    assert policy.choice_stats.changed == 100 - draws["open cabinet 2"]

    # at a low temperature the likeliest action is (nearly) always the one drawn
    cold = VLMPolicy(engine, temperature=0.05, action_choice="likeliest", seed=3)
    assert {a.parsed.action for a in cold.act([observation(legal)] * 4)} == {legal[int(totals.argmax())]}


def test_an_answer_without_an_action_key_is_left_as_written(loaded: LoadedVLM) -> None:
    engine = Writes(loaded, '{"thoughts": "no idea"}')
    policy = VLMPolicy(engine, temperature=0.7, action_choice="likeliest")
    [answer] = policy.act([observation()])
    assert answer.text == '{"thoughts": "no idea"}' and answer.parsed.action is None
    assert policy.choice_stats.choices == 0 and policy.choice_stats.changed_rate is None


def test_common_prefix_and_the_action_part() -> None:
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5], [6]]) == 0
    assert action_part("open cabinet 1") == '"action": "open cabinet 1"}'


def test_likeliest_needs_the_transformers_engine() -> None:
    assert (
        parse_config(AgentConfig, ["--server", "h:1", "--action-choice", "likeliest"]).sampling.action_choice
        == "likeliest"
    )
    with pytest.raises(ValueError, match="use --engine transformers"):
        AgentConfig(
            servers=ServersConfig(server=["h:1"]),
            policy=PolicyConfig(engine="vllm"),
            sampling=SamplingConfig(action_choice="likeliest"),
        )
