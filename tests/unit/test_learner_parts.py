"""Unit tests for the model-free parts of trainer/learner.py: the lr schedule, the value head and
the batch metrics. Every expected number is worked out here by hand.
"""

from __future__ import annotations

import itertools
import math
import typing

import numpy as np
import pytest
import torch

from visact.orchestration.sampled_episodes import png_image
from visact.trainer.advantages import ADVANTAGES
from visact.trainer.config import Advantage, PPOConfig
from visact.trainer.learner import ValueHead, batch_metrics, lr_factor, with_fact_reward
from visact.wire.episodes import EpisodeData, StepData

# ---------------------------------------------------------------------------------------------
# lr_factor
# ---------------------------------------------------------------------------------------------


def test_lr_factor_warms_up_linearly() -> None:
    factors = [lr_factor(u, warmup=4, total=20, floor=0.1) for u in range(4)]
    assert factors == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_lr_factor_cosine_runs_from_one_to_the_floor() -> None:
    # warmup 4, total 20: the cosine spans updates 4..20, its middle at 12
    assert lr_factor(4, warmup=4, total=20, floor=0.1) == pytest.approx(1.0)
    assert lr_factor(12, warmup=4, total=20, floor=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    # a quarter in: 0.1 + 0.9 * 0.5 * (1 + cos(pi / 4))
    assert lr_factor(8, warmup=4, total=20, floor=0.1) == pytest.approx(0.1 + 0.45 * (1 + math.sqrt(0.5)))
    assert lr_factor(20, warmup=4, total=20, floor=0.1) == pytest.approx(0.1)


def test_lr_factor_stays_at_the_floor_after_total() -> None:
    for update in (21, 50, 10_000):
        assert lr_factor(update, warmup=4, total=20, floor=0.1) == pytest.approx(0.1)
    assert lr_factor(30, warmup=0, total=10, floor=0.0) == pytest.approx(0.0)


def test_lr_factor_without_warmup_starts_at_one() -> None:
    assert lr_factor(0, warmup=0, total=10, floor=0.2) == pytest.approx(1.0)
    assert lr_factor(5, warmup=0, total=10, floor=0.2) == pytest.approx(0.6)


def test_lr_factor_decays_monotonically_and_never_below_the_floor() -> None:
    factors = [lr_factor(u, warmup=3, total=40, floor=0.05) for u in range(3, 60)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(factors))
    assert min(factors) == pytest.approx(0.05)
    assert all(f >= 0.05 - 1e-12 for f in factors)


def test_lr_factor_with_total_not_beyond_warmup_does_not_divide_by_zero() -> None:
    assert lr_factor(3, warmup=3, total=3, floor=0.5) == pytest.approx(1.0)
    assert lr_factor(4, warmup=3, total=3, floor=0.5) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# ValueHead
# ---------------------------------------------------------------------------------------------


def test_value_head_maps_hidden_states_to_one_value_each() -> None:
    head = ValueHead(8)
    assert head(torch.randn(5, 8)).shape == (5,)
    assert head(torch.randn(2, 3, 8)).shape == (2, 3)


def test_value_head_starts_at_zero_for_any_input_but_can_learn() -> None:
    torch.manual_seed(0)
    head = ValueHead(8)
    hidden = torch.randn(6, 8) * 10

    values = head(hidden)

    torch.testing.assert_close(values, torch.zeros(6), rtol=0, atol=0)
    (values - 1.0).pow(2).mean().backward()
    last = head.net[-1]
    assert isinstance(last, torch.nn.Linear)
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    first = head.net[0]
    assert isinstance(first, torch.nn.Linear)
    assert first.weight.abs().sum() > 0  # only the output layer is zeroed


def test_value_head_widths_scale_with_the_model_and_cap_at_the_papers() -> None:
    small = [m.out_features for m in ValueHead(8).net if isinstance(m, torch.nn.Linear)]
    large = [m.out_features for m in ValueHead(4096).net if isinstance(m, torch.nn.Linear)]
    assert small == [32, 16, 1]
    assert large == [1024, 512, 1]


def test_value_head_returns_fp32_for_half_precision_input() -> None:
    values = ValueHead(8)(torch.randn(3, 8, dtype=torch.bfloat16))
    assert values.dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# batch_metrics
# ---------------------------------------------------------------------------------------------


def step(
    *, version: int, action_start: int, answer: int, valid: bool, env_reward: float, success: bool = False
) -> StepData:
    return StepData(
        image=png_image(np.zeros((2, 2, 3), dtype=np.uint8)),
        prompt_ids=[1],
        generated_ids=list(range(answer)),
        behavior_log_probs=[-0.1] * answer,
        action_start=action_start,
        reward=env_reward - (0.0 if valid else 0.5),  # the penalty is not part of the env return
        terminated=success,
        truncated=False,
        version=version,
        temperature=0.2,
        valid=valid,
        success=success,
        env_reward=env_reward,
    )


def test_batch_metrics_on_a_hand_made_batch() -> None:
    won = EpisodeData(
        agent_id="a",
        env="counter",
        steps=[
            step(version=3, action_start=1, answer=3, valid=True, env_reward=0.0),
            step(version=4, action_start=2, answer=4, valid=False, env_reward=1.0, success=True),
        ],
    )
    lost = EpisodeData(
        agent_id="b",
        env="counter",
        steps=[step(version=2, action_start=0, answer=1, valid=True, env_reward=-0.5)],
    )

    metrics = batch_metrics([won, lost], latest_version=4)

    assert metrics == pytest.approx(
        {
            "charts/episodes": 2.0,
            "charts/steps": 3.0,
            "charts/success_rate": 0.5,
            "charts/episode_return": (1.0 + -0.5) / 2,
            "charts/valid_action_rate": 2 / 3,
            "charts/cot_tokens": (1 + 2 + 0) / 3,
            "charts/cot_distinct": 3 / 3,  # [0], [0, 1] and none
            "charts/answer_tokens": (3 + 4 + 1) / 3,
            "charts/policy_lag_mean": (1 + 0 + 2) / 3,
            "charts/policy_lag_max": 2.0,
        }
    )


def test_cot_distinct_falls_when_every_answer_thinks_the_same() -> None:
    same = [step(version=0, action_start=3, answer=4, valid=True, env_reward=0.0) for _ in range(4)]
    metrics = batch_metrics([EpisodeData(agent_id="a", env="counter", steps=same)], latest_version=0)
    assert metrics["charts/cot_distinct"] == 1 / 4


def test_batch_metrics_report_fact_accuracy_only_when_facts_were_checked() -> None:
    steps = [step(version=0, action_start=1, answer=2, valid=True, env_reward=0.0) for _ in range(3)]
    steps[0].fact_checks = (("current number", True), ("target number", False))
    steps[1].fact_checks = (("current number", True), ("target number", True))
    metrics = batch_metrics([EpisodeData(agent_id="a", env="numberline", steps=steps)], latest_version=0)
    assert metrics["charts/fact_accuracy"] == pytest.approx(3 / 4)
    assert metrics["charts/fact_accuracy/current_number"] == 1.0
    assert metrics["charts/fact_accuracy/target_number"] == 0.5
    for sample in steps:
        sample.fact_checks = ()
    unchecked = batch_metrics([EpisodeData(agent_id="a", env="numberline", steps=steps)], latest_version=0)
    assert not any(key.startswith("charts/fact_accuracy") for key in unchecked)


def test_fact_reward_lowers_each_checked_step_by_its_share_of_wrong_facts() -> None:
    steps = [step(version=0, action_start=1, answer=2, valid=True, env_reward=r) for r in (0.0, 1.0, 0.0)]
    steps[0].fact_checks = (("current number", True), ("target number", False))
    steps[1].fact_checks = (("current number", False), ("target number", False))  # steps[2]: unchecked
    episode = EpisodeData(agent_id="a", env="numberline", steps=steps)

    shaped = with_fact_reward([episode], 0.5)

    assert [s.reward for s in shaped[0].steps] == pytest.approx([0.0 - 0.25, 1.0 - 0.5, 0.0])
    assert [s.env_reward for s in shaped[0].steps] == [0.0, 1.0, 0.0]  # what success metrics read
    assert [s.reward for s in episode.steps] == [0.0, 1.0, 0.0]  # the hub's copy is untouched
    assert with_fact_reward([episode], 0.0)[0] is episode


def test_batch_metrics_of_an_empty_batch_are_zero() -> None:
    metrics = batch_metrics([], latest_version=7)
    assert metrics["charts/episodes"] == 0.0
    assert set(metrics.values()) == {0.0}


# ---------------------------------------------------------------------------------------------
# group advantages: GRPO (per episode) and GiGPO (plus per state)
# ---------------------------------------------------------------------------------------------


def at(state: int, reward: float, *, last: bool = False) -> StepData:
    """A step taken from ``state`` (its image and prompt) that earned ``reward``."""
    sample = step(version=0, action_start=0, answer=1, valid=True, env_reward=reward, success=last)
    sample.image = png_image(np.full((2, 2, 3), state, dtype=np.uint8))
    sample.prompt_ids = [7, state]
    sample.terminated = last
    return sample


def test_grpo_and_gigpo_advantages_by_hand() -> None:
    # one group (seed 5): A goes s0 -> s1 and wins (return 1); B goes s0 -> s2 -> s1, a bad move
    # first (return 0). Another seed's lone episode C has nothing to compare with.
    a = EpisodeData(agent_id="x", env="n", seed=5, steps=[at(0, 0.0), at(1, 1.0, last=True)])
    b = EpisodeData(agent_id="x", env="n", seed=5, steps=[at(0, -1.0), at(2, 0.0), at(1, 1.0, last=True)])
    c = EpisodeData(agent_id="x", env="n", seed=6, steps=[at(0, 1.0, last=True)])
    # per episode: returns 1 and 0 -> +1, -1 (population std 0.5); C alone -> 0
    config = PPOConfig(gamma=0.9, advantage="grpo")
    values = torch.arange(6, dtype=torch.float32)
    grpo, returns = ADVANTAGES["grpo"]([a, b, c], values, {}, config)
    assert returns is None  # no value function, no value target
    torch.testing.assert_close(grpo, torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0, 0.0]), atol=1e-5, rtol=0)
    # per state, discounted at 0.9: from s0 A got 0 + 0.9 * 1 = 0.9 and B -1 + 0.81 = -0.19
    # (+1, -1); from s1 both got 1 (0 each); s2 only B (0); C's s0 is another seed's (0)
    gigpo, returns = ADVANTAGES["gigpo"]([a, b, c], values, {}, config)
    assert returns is None
    torch.testing.assert_close(gigpo, torch.tensor([2.0, 1.0, -2.0, -1.0, -1.0, 0.0]), atol=1e-5, rtol=0)


def test_every_advantage_choice_has_an_estimator() -> None:
    assert sorted(ADVANTAGES) == sorted(typing.get_args(Advantage))


def test_gae_estimator_bootstraps_truncated_episodes_and_normalizes() -> None:
    # one truncated step (reward 1, value 0) bootstraps from 2.0 at gamma 0.5: advantage 1 + 0.5 * 2 = 2
    step = at(0, 1.0)
    step.truncated = True
    episode = EpisodeData(agent_id="x", env="n", seed=1, steps=[step])
    raw = PPOConfig(gamma=0.5, normalize_advantages=False)
    advantages, returns = ADVANTAGES["gae"]([episode], torch.zeros(1), {0: 2.0}, raw)
    torch.testing.assert_close(advantages, torch.tensor([2.0]))
    assert returns is not None
    torch.testing.assert_close(returns, torch.tensor([2.0]))
    two = [episode, EpisodeData(agent_id="x", env="n", seed=2, steps=[at(0, 0.0, last=True)])]
    normalized, _ = ADVANTAGES["gae"](two, torch.zeros(2), {0: 2.0}, PPOConfig(gamma=0.5))
    assert abs(float(normalized.mean())) < 1e-6 and normalized[0] > normalized[1]
    # raw advantages 2 and 0 (spread 1) under a floor of 4: centred (+-1), divided by 4
    floored, _ = ADVANTAGES["gae"](
        two, torch.zeros(2), {0: 2.0}, PPOConfig(gamma=0.5, advantage_std_floor=4.0)
    )
    torch.testing.assert_close(floored, torch.tensor([0.25, -0.25]))
    with pytest.raises(ValueError, match="--advantage-std-floor must be a finite number >= 0"):
        PPOConfig(advantage_std_floor=-1.0)
