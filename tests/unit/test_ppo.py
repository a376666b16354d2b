"""Unit tests for trainer/ppo.py against values computed by hand (or by a tiny independent loop).

Every expected number is written out here; none comes from the function under test.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from visact.trainer.ppo import (
    action_log_prob,
    compute_gae,
    explained_variance,
    gather_token_log_probs,
    group_relative_advantages,
    minibatch_indices,
    normalize_advantages,
    policy_loss,
    ppo_loss,
    split_log_prob,
    truncated_is_weight,
    value_loss,
)

F64 = torch.float64


def t(values: Sequence[Any], dtype: torch.dtype = F64, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=requires_grad)


def b(values: list[bool]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def assert_close(actual: torch.Tensor, expected: Sequence[Any] | float, atol: float = 1e-9) -> None:
    exp = torch.tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual.detach(), exp, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------
# 1b. group-relative advantages (GRPO)
# ---------------------------------------------------------------------------------------------


def test_group_relative_advantages_by_hand() -> None:
    # group a: returns 1, 3 (mean 2, population std 1); group b: -1, -1, 2 (mean 0, std sqrt 2)
    returns = t([1.0, -1.0, 3.0, -1.0, 2.0])
    advantages = group_relative_advantages(returns, ["a", "b", "a", "b", "b"], eps=0.0)
    root2 = math.sqrt(2.0)
    assert_close(advantages, [-1.0, -1 / root2, 1.0, -1 / root2, 2 / root2])


def test_group_relative_advantages_give_zero_to_groups_with_nothing_to_prefer() -> None:
    # all alike, or alone: nothing to compare, so nothing to learn (and no division by zero)
    advantages = group_relative_advantages(t([5.0, 5.0, 7.0]), [("n", 1), ("n", 1), ("n", 2)])
    assert_close(advantages, [0.0, 0.0, 0.0])


def test_group_relative_advantages_are_invariant_to_shift_and_scale_within_a_group() -> None:
    returns = t([0.0, 1.0, 4.0, 10.0])
    keys = [1, 1, 1, 1]
    base = group_relative_advantages(returns, keys)
    assert_close(group_relative_advantages(returns * 3 + 7, keys), base.tolist(), atol=1e-6)
    assert abs(float(base.mean())) < 1e-9


def test_group_relative_advantages_reject_one_key_per_return_missing() -> None:
    with pytest.raises(ValueError, match="3 returns but 2 group keys"):
        group_relative_advantages(t([1.0, 2.0, 3.0]), [1, 2])


# ---------------------------------------------------------------------------------------------
# 1. GAE
# ---------------------------------------------------------------------------------------------


def test_gae_termination_in_middle_and_truncation_at_end() -> None:
    # gamma = lam = 0.5, so gamma * lam = 0.25. Episode 1 = steps 0-1 (terminated at 1),
    # episode 2 = steps 2-3 (truncated at 3, final observation valued 0.8).
    #   t=3 truncated:  delta = 2 + 0.5*0.8 - 0.4 =  2.0;  A3 =  2.0
    #   t=2 continues:  delta = -1 + 0.5*0.4 - 0.2 = -1.0;  A2 = -1.0 + 0.25*2.0 = -0.5
    #   t=1 terminated: delta = 0 + 0 - 1.0 = -1.0;         A1 = -1.0 (no look past the end)
    #   t=0 continues:  delta = 1 + 0.5*1.0 - 0.5 = 1.0;    A0 = 1.0 + 0.25*(-1.0) = 0.75
    adv, ret = compute_gae(
        rewards=t([1.0, 0.0, -1.0, 2.0]),
        values=t([0.5, 1.0, 0.2, 0.4]),
        terminated=b([False, True, False, False]),
        truncated=b([False, False, False, True]),
        next_values=t([99.0, 99.0, 99.0, 0.8]),  # read only where truncated
        gamma=0.5,
        lam=0.5,
    )
    assert_close(adv, [0.75, -1.0, -0.5, 2.0])
    assert_close(ret, [1.25, 0.0, -0.3, 2.4])


def test_gae_unfinished_tail_ends_at_zero() -> None:
    # gamma = lam = 0.5; the last step neither terminated nor truncated: its next value is 0.
    #   t=1: delta = 1 + 0 - 2 = -1;      A1 = -1
    #   t=0: delta = 0 + 0.5*2 - 1 = 0;   A0 = 0 + 0.25*(-1) = -0.25
    adv, ret = compute_gae(
        t([0.0, 1.0]), t([1.0, 2.0]), b([False, False]), b([False, False]), gamma=0.5, lam=0.5
    )
    assert_close(adv, [-0.25, -1.0])
    assert_close(ret, [0.75, 1.0])


def test_gae_terminated_wins_over_truncated() -> None:
    # Both flags set: a true end, bootstrap 0 (not next_values' 10). delta = 1 - 0.5 = 0.5.
    adv, _ = compute_gae(t([1.0]), t([0.5]), b([True]), b([True]), next_values=t([10.0]), gamma=0.9, lam=0.95)
    assert_close(adv, [0.5])


def test_gae_truncation_without_next_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="next_values"):
        compute_gae(t([1.0, 1.0]), t([0.0, 0.0]), b([False, False]), b([False, True]), gamma=0.9, lam=0.95)


def test_gae_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="1-D"):
        compute_gae(t([1.0, 1.0]), t([0.0]), b([False, False]), b([False, False]), gamma=0.9, lam=0.95)


def test_gae_lambda_one_is_monte_carlo_and_lambda_zero_is_td() -> None:
    rewards, values = [1.0, 2.0, 3.0], [0.5, 0.25, 0.125]
    no = b([False, False, False])
    # lam=1, gamma=0.5, terminated at the end: A_t = discounted return - V.
    #   G2 = 3, G1 = 2 + 1.5 = 3.5, G0 = 1 + 1.75 = 2.75
    adv, ret = compute_gae(t(rewards), t(values), b([False, False, True]), no, gamma=0.5, lam=1.0)
    assert_close(adv, [2.75 - 0.5, 3.5 - 0.25, 3.0 - 0.125])
    assert_close(ret, [2.75, 3.5, 3.0])
    # lam=0: A_t = one-step TD error r_t + gamma V(s_{t+1}) - V(s_t); truncated at the end, next value 1.
    adv, _ = compute_gae(
        t(rewards), t(values), no, b([False, False, True]), gamma=0.5, lam=0.0, next_values=t([0.0, 0.0, 1.0])
    )
    assert_close(adv, [1 + 0.125 - 0.5, 2 + 0.0625 - 0.25, 3 + 0.5 - 0.125])


def _reference_gae(
    r: list[float],
    v: list[float],
    term: list[bool],
    trunc: list[bool],
    nv: list[float],
    tail: float,
    gamma: float,
    lam: float,
) -> list[float]:
    """Forward definition: A_t = sum_k (gamma*lam)^k delta_{t+k}, up to the end of t's episode."""
    n = len(r)
    deltas = []
    for i in range(n):
        if term[i]:
            nxt = 0.0
        elif trunc[i]:
            nxt = nv[i]
        elif i == n - 1:
            nxt = tail
        else:
            nxt = v[i + 1]
        deltas.append(r[i] + gamma * nxt - v[i])
    out = []
    for i in range(n):
        total, k = 0.0, 0
        while True:
            total += (gamma * lam) ** k * deltas[i + k]
            if term[i + k] or trunc[i + k] or i + k == n - 1:
                break
            k += 1
        out.append(total)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_forward_sum_definition_with_paper_coefficients(seed: int) -> None:
    rng = random.Random(seed)
    n = 40
    r = [rng.choice([-1.0, 0.0, 1.0, 10.0]) for _ in range(n)]
    v = [rng.uniform(-2, 2) for _ in range(n)]
    term = [rng.random() < 0.1 for _ in range(n)]
    trunc = [rng.random() < 0.1 for _ in range(n)]
    nv = [rng.uniform(-2, 2) for _ in range(n)]
    expected = _reference_gae(r, v, term, trunc, nv, 0.0, 0.9, 0.95)
    adv, _ = compute_gae(t(r), t(v), b(term), b(trunc), next_values=t(nv), gamma=0.9, lam=0.95)
    assert_close(adv, expected)


def test_gae_output_dtype_and_no_grad() -> None:
    values = torch.tensor([0.5, 1.0], dtype=torch.bfloat16, requires_grad=True)
    adv, ret = compute_gae(t([1.0, 0.0]), values, b([False, True]), b([False, False]), gamma=0.9, lam=0.95)
    assert adv.dtype == torch.float32 and ret.dtype == torch.float32
    assert not adv.requires_grad and not ret.requires_grad


# ---------------------------------------------------------------------------------------------
# 2. Log-probs
# ---------------------------------------------------------------------------------------------


def test_gather_token_log_probs_by_hand() -> None:
    # Row of logits log([1, 2, 3]) -> softmax [1/6, 2/6, 3/6]; zeros -> uniform 1/3.
    logits = torch.tensor([[[math.log(1), math.log(2), math.log(3)], [0.0, 0.0, 0.0]]], dtype=F64)
    ids = torch.tensor([[2, 0]])
    out = gather_token_log_probs(logits, ids)
    assert out.shape == (1, 2)
    assert_close(out, [[math.log(0.5), math.log(1 / 3)]])


def test_gather_token_log_probs_bf16_is_fp32_and_stable() -> None:
    # Large logits: bf16 represents 1000 and 1004 exactly (its spacing is 4 there), but could not
    # hold their log-sum-exp to better than ~2; in fp32: log p(1) = 4 - log(1 + e^4), log p(0) =
    # -log(1 + e^4).
    logits = torch.tensor([[1000.0, 1004.0]], dtype=torch.bfloat16)
    assert logits.tolist() == [[1000.0, 1004.0]]
    out = gather_token_log_probs(logits, torch.tensor([1]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([4 - math.log(1 + math.e**4)]), atol=1e-6, rtol=0)
    out0 = gather_token_log_probs(logits, torch.tensor([0]))
    torch.testing.assert_close(out0, torch.tensor([-math.log(1 + math.e**4)]), atol=1e-6, rtol=0)


def test_gather_token_log_probs_gradient_is_onehot_minus_softmax() -> None:
    logits = torch.tensor([[math.log(1), math.log(2), math.log(3)]], dtype=F64, requires_grad=True)
    gather_token_log_probs(logits, torch.tensor([2])).sum().backward()
    assert logits.grad is not None
    assert_close(logits.grad, [[-1 / 6, -2 / 6, 1 - 3 / 6]])


def test_gather_token_log_probs_rejects_misaligned_shapes() -> None:
    with pytest.raises(ValueError, match="leading dims"):
        gather_token_log_probs(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def _batch_2x5() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Row 0: 5 real tokens, action from index 3: CoT = -1-2-3 = -6, action = -4-5 = -9.
    # Row 1: 3 real tokens + 2 pads (poisoned), action from index 1: CoT = -0.5, action = -3.5.
    logp = torch.tensor(
        [[-1.0, -2.0, -3.0, -4.0, -5.0], [-0.5, -1.5, -2.0, -math.inf, math.nan]],
        dtype=F64,
        requires_grad=True,
    )
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    action_start = torch.tensor([3, 1])
    return logp, mask, action_start


def test_split_log_prob_2x5_with_padding() -> None:
    logp, mask, action_start = _batch_2x5()
    cot, act = split_log_prob(logp, mask, action_start)
    assert_close(cot, [-6.0, -0.5])
    assert_close(act, [-9.0, -3.5])


def test_action_log_prob_lambda_half_2x5_with_padding_and_its_gradient() -> None:
    logp, mask, action_start = _batch_2x5()
    out = action_log_prob(logp, mask, action_start, lambda_cot=0.5)
    # Row 0: 0.5 * -6 + -9 = -12; row 1: 0.5 * -0.5 + -3.5 = -3.75.
    assert_close(out, [-12.0, -3.75])
    out.sum().backward()
    # d/d logp: lambda on CoT tokens, 1 on action tokens, 0 on pads (no NaN from the poison).
    assert logp.grad is not None
    assert_close(logp.grad, [[0.5, 0.5, 0.5, 1.0, 1.0], [0.5, 1.0, 1.0, 0.0, 0.0]])


def test_action_log_prob_edges_all_action_and_all_cot() -> None:
    logp = t([[-1.0, -2.0, -3.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert_close(action_log_prob(logp, mask, torch.tensor([0]), 0.3), [-6.0])  # no CoT
    assert_close(action_log_prob(logp, mask, torch.tensor([7]), 0.5), [-3.0])  # all CoT


def test_action_log_prob_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="action_start"):
        action_log_prob(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([1]), 0.5)
    with pytest.raises(ValueError, match="mask"):
        action_log_prob(torch.zeros(2, 3), torch.ones(2, 4), torch.tensor([1, 1]), 0.5)


# ---------------------------------------------------------------------------------------------
# 3. Advantage normalization
# ---------------------------------------------------------------------------------------------


def test_normalize_advantages_by_hand() -> None:
    # mean 2, population std sqrt(2/3).
    s = math.sqrt(2 / 3)
    assert_close(normalize_advantages(t([1.0, 2.0, 3.0]), eps=0.0), [-1 / s, 0.0, 1 / s])
    # One sample: 0 / (0 + eps) = 0, not NaN.
    assert_close(normalize_advantages(t([5.0])), [0.0])


def test_normalize_advantages_floors_a_small_spread() -> None:
    # spread 0.1 under a floor of 1: centred, divided by 1, not blown up by 10
    small = t([0.9, 1.0, 1.1])
    assert_close(normalize_advantages(small, eps=0.0, std_floor=1.0), [-0.1, 0.0, 0.1], atol=1e-6)
    s = math.sqrt(2 / 3) * 0.1
    assert_close(normalize_advantages(small, eps=0.0), [-0.1 / s, 0.0, 0.1 / s], atol=1e-5)
    # a spread above the floor normalizes as without it
    wide = t([-3.0, 0.0, 3.0])
    assert_close(normalize_advantages(wide, std_floor=1.0), normalize_advantages(wide))


# ---------------------------------------------------------------------------------------------
# 4. Losses
# ---------------------------------------------------------------------------------------------

# (advantage, ratio, expected loss, gradient flows) with clip 0.2:
POLICY_CASES = [
    (1.0, 1.1, -1.1, True),  # inside the range: plain -A * ratio
    (1.0, 1.5, -1.2, False),  # A > 0, ratio above 1 + eps: clipped, no gradient
    (1.0, 0.5, -0.5, True),  # A > 0, ratio below 1 - eps: unclipped (pessimistic min)
    (-1.0, 0.9, 0.9, True),  # inside the range
    (-1.0, 0.5, 0.8, False),  # A < 0, ratio below 1 - eps: clipped, no gradient
    (-1.0, 1.5, 1.5, True),  # A < 0, ratio above 1 + eps: unclipped
]


@pytest.mark.parametrize(("adv", "ratio", "expected", "has_grad"), POLICY_CASES)
def test_policy_loss_clip_cases(adv: float, ratio: float, expected: float, has_grad: bool) -> None:
    new = t([math.log(ratio)], requires_grad=True)
    out = policy_loss(new, t([0.0]), t([adv]), clip_coef=0.2)
    assert_close(out.loss, expected)
    assert_close(out.approx_kl, (ratio - 1) - math.log(ratio))  # k3
    assert_close(out.clip_frac, 1.0 if abs(ratio - 1) > 0.2 else 0.0)
    out.loss.backward()
    assert new.grad is not None
    # d(-A * exp(new - old))/d new = -A * ratio when unclipped, 0 when clipped.
    assert_close(new.grad, [-adv * ratio if has_grad else 0.0])


def test_policy_loss_batch_mean_kl_and_clip_frac() -> None:
    # ratios 1.1 (inside) and 2.0 (outside), old log-probs nonzero so only differences matter.
    old = t([-3.0, -1.0])
    new = old + t([math.log(1.1), math.log(2.0)])
    out = policy_loss(new, old, t([1.0, 1.0]), clip_coef=0.2)
    assert_close(out.loss, (-1.1 + -1.2) / 2)
    assert_close(out.approx_kl, ((0.1 - math.log(1.1)) + (1.0 - math.log(2.0))) / 2)
    assert_close(out.clip_frac, 0.5)


def test_truncated_is_weight_by_hand() -> None:
    # old - behavior = log 3 -> 3, truncated to 2; log 0.5 -> 0.5; 0 -> 1.
    behavior = t([0.0, -1.0, -2.0])
    old = behavior + t([math.log(3.0), math.log(0.5), 0.0])
    assert_close(truncated_is_weight(old, behavior, clip=2.0), [2.0, 0.5, 1.0])


def test_policy_loss_with_is_weights_by_hand() -> None:
    # Both samples inside the clip range, A = [1, -1], ratios [1.1, 0.9], weights [2, 0.5]:
    # loss = mean(2 * -1.1, 0.5 * 0.9) = (-2.2 + 0.45) / 2 = -0.875.
    new = t([math.log(1.1), math.log(0.9)], requires_grad=True)
    w = t([2.0, 0.5])
    out = policy_loss(new, t([0.0, 0.0]), t([1.0, -1.0]), clip_coef=0.2, is_weight=w)
    assert_close(out.loss, -0.875)
    out.loss.backward()
    assert new.grad is not None
    # d/d new_b = w_b * -A_b * ratio_b / B
    assert_close(new.grad, [2.0 * -1.1 / 2, 0.5 * 0.9 / 2])


class _PPOInputs:
    """Three samples: ratios 1.1 (inside), 1.5 and 0.7 (outside clip 0.2); values as VALUE_CASES."""

    def __init__(self) -> None:
        self.old_log_prob = t([-1.0, -2.0, -0.5])
        self.new_log_prob = (
            self.old_log_prob + t([math.log(1.1), math.log(1.5), math.log(0.7)])
        ).requires_grad_()
        self.advantages = t([1.0, 1.0, -2.0])
        self.new_values = t([1.1, 1.5, 0.5], requires_grad=True)
        self.old_values = t([1.0, 1.0, 1.0])
        self.returns = t([2.0, 2.0, 2.0])

    def loss(self, behavior_log_prob: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        return ppo_loss(
            new_log_prob=self.new_log_prob,
            old_log_prob=self.old_log_prob,
            behavior_log_prob=behavior_log_prob,
            advantages=self.advantages,
            new_values=self.new_values,
            old_values=self.old_values,
            returns=self.returns,
            clip_coef=0.2,
            value_clip=0.2,
            vf_coef=0.5,
            is_clip=2.0,
        )


def test_ppo_loss_reduces_exactly_to_standard_ppo_when_behavior_equals_old() -> None:
    on_policy, same = _PPOInputs(), _PPOInputs()
    total_none, m_none = on_policy.loss(None)
    total_same, m_same = same.loss(same.old_log_prob.clone())
    assert total_none.item() == total_same.item()
    assert m_none.keys() == m_same.keys()
    assert all(m_none[k] == m_same[k] or (math.isnan(m_none[k]) and math.isnan(m_same[k])) for k in m_none)
    assert m_same["losses/is_weight_mean"] == 1.0
    assert m_same["losses/is_truncated_frac"] == 0.0
    total_none.backward()
    total_same.backward()
    assert on_policy.new_log_prob.grad is not None and same.new_log_prob.grad is not None
    assert torch.equal(on_policy.new_log_prob.grad, same.new_log_prob.grad)
    assert on_policy.new_values.grad is not None and same.new_values.grad is not None
    assert torch.equal(on_policy.new_values.grad, same.new_values.grad)


def test_ppo_loss_stale_behavior_reweights_the_policy_loss() -> None:
    x = _PPOInputs()
    # old - behavior = [1, -1, 0] -> weights [min(e, 2), 1/e, 1] = [2, 1/e, 1] on the per-sample
    # losses [-1.1, -1.2 (clipped at 1.2), 1.6 (A = -2, ratio 0.7 clipped to 0.8: 2 * 0.8)].
    _, m = x.loss(x.old_log_prob - t([1.0, -1.0, 0.0]))
    expected_pg = (2 * -1.1 + math.exp(-1) * -1.2 + 1.6) / 3
    assert m["losses/policy"] == pytest.approx(expected_pg, abs=1e-12)
    assert m["losses/is_weight_mean"] == pytest.approx((2 + math.exp(-1) + 1) / 3, abs=1e-12)
    assert m["losses/is_truncated_frac"] == pytest.approx(1 / 3, abs=1e-12)


# (new, expected loss, gradient flows) with old value 1.0, return 2.0, clip 0.2:
VALUE_CASES = [
    (1.1, 0.5 * 0.81, True),  # inside: both terms (1.1 - 2)^2 = 0.81
    (1.5, 0.5 * 0.64, False),  # outside, toward the target: clipped term (1.2 - 2)^2 = 0.64 wins
    (0.5, 0.5 * 2.25, True),  # outside, away from it: unclipped (0.5 - 2)^2 = 2.25 > (0.8 - 2)^2
]


@pytest.mark.parametrize(("new", "expected", "has_grad"), VALUE_CASES)
def test_value_loss_clip_cases(new: float, expected: float, has_grad: bool) -> None:
    v = t([new], requires_grad=True)
    loss = value_loss(v, t([1.0]), t([2.0]), clip=0.2)
    assert_close(loss, expected)
    loss.backward()
    assert v.grad is not None
    # d(0.5 * (v - R)^2)/dv = v - R when unclipped, 0 when the constant clipped term wins.
    assert_close(v.grad, [new - 2.0 if has_grad else 0.0])


def test_value_loss_without_clip_is_half_mse() -> None:
    # 0.5 * mean((1.5 - 2)^2, (4 - 2)^2) = 0.5 * (0.25 + 4) / 2 = 1.0625
    assert_close(value_loss(t([1.5, 4.0]), t([1.0, 1.0]), t([2.0, 2.0]), clip=None), 1.0625)


def test_explained_variance_cases() -> None:
    returns = t([1.0, 2.0, 3.0, 4.0])
    assert_close(explained_variance(returns.clone(), returns), 1.0)  # perfect
    assert_close(explained_variance(t([7.0] * 4), returns), 0.0)  # constant prediction
    # Residual [0, 0, 0, -1]: Var = 0.25 - 0.0625 = 0.1875; Var[R] = 1.25 -> 1 - 0.15 = 0.85.
    assert_close(explained_variance(t([1.0, 2.0, 3.0, 5.0]), returns), 0.85)
    assert math.isnan(explained_variance(t([1.0, 2.0]), t([3.0, 3.0])).item())  # nothing to explain


def test_ppo_loss_total_and_metrics_by_hand() -> None:
    total, m = _PPOInputs().loss(None)
    # Policy: per-sample [-1.1, -1.2 (clipped), 1.6 (clipped)] -> mean -0.7 / 3.
    pg = (-1.1 - 1.2 + 1.6) / 3
    # Value: the three VALUE_CASES -> 0.5 * (0.81 + 0.64 + 2.25) / 3.
    vl = 0.5 * (0.81 + 0.64 + 2.25) / 3
    kl = ((0.1 - math.log(1.1)) + (0.5 - math.log(1.5)) + (-0.3 - math.log(0.7))) / 3
    # EV of [1.1, 1.5, 0.5] against constant returns: NaN.
    assert total.item() == pytest.approx(pg + 0.5 * vl, abs=1e-12)
    assert m["losses/total"] == pytest.approx(pg + 0.5 * vl, abs=1e-12)
    assert m["losses/policy"] == pytest.approx(pg, abs=1e-12)
    assert m["losses/value"] == pytest.approx(vl, abs=1e-12)
    assert m["losses/approx_kl"] == pytest.approx(kl, abs=1e-12)
    assert m["losses/clip_frac"] == pytest.approx(2 / 3, abs=1e-12)
    assert math.isnan(m["losses/explained_variance"])
    assert all(k.startswith("losses/") for k in m)
    assert all(isinstance(v, float) for v in m.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_flow_end_to_end(dtype: torch.dtype) -> None:
    # Logits -> token log-probs -> CoT-weighted action log-prob -> ppo_loss -> backward.
    g = torch.Generator().manual_seed(0)
    bsz, seq, vocab = 4, 6, 11
    logits = torch.randn(bsz, seq, vocab, generator=g).to(dtype).requires_grad_(True)
    ids = torch.randint(0, vocab, (bsz, seq), generator=g)
    mask = torch.ones(bsz, seq, dtype=torch.bool)
    mask[1, 4:] = False
    action_start = torch.tensor([2, 1, 0, 6])
    new_lp = action_log_prob(gather_token_log_probs(logits, ids), mask, action_start, 0.5)
    assert new_lp.dtype == torch.float32
    old_lp = new_lp.detach() + 0.05 * torch.randn(bsz, generator=g)
    behavior_lp = old_lp - 0.5 * torch.randn(bsz, generator=g)
    values = torch.randn(bsz, generator=g).to(dtype).requires_grad_(True)
    returns = torch.randn(bsz, generator=g)
    adv = normalize_advantages(torch.randn(bsz, generator=g))
    total, metrics = ppo_loss(
        new_log_prob=new_lp,
        old_log_prob=old_lp,
        behavior_log_prob=behavior_lp,
        advantages=adv,
        new_values=values,
        old_values=values.detach().float() + 0.01,
        returns=returns,
        clip_coef=0.1,
        value_clip=0.1,
        vf_coef=0.5,
        is_clip=2.0,
    )
    assert total.dtype == torch.float32
    total.backward()
    assert logits.grad is not None and values.grad is not None
    assert logits.grad.dtype == dtype
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.isfinite(values.grad).all() and values.grad.abs().sum() > 0
    assert all(math.isfinite(v) for v in metrics.values())


def test_ppo_loss_without_value_targets_is_the_policy_loss_alone() -> None:
    # GRPO and GiGPO have no value function: no value loss, no value metrics, a zero gradient
    # for the value head (kept in the graph for data-parallel training)
    new_lp = torch.tensor([-1.0, -2.0], requires_grad=True)
    values = torch.tensor([0.3, -0.7], requires_grad=True)
    common = {
        "new_log_prob": new_lp,
        "old_log_prob": torch.tensor([-1.0, -2.0]),
        "behavior_log_prob": None,
        "advantages": torch.tensor([1.0, -1.0]),
        "new_values": values,
        "old_values": torch.zeros(2),
        "clip_coef": 0.1,
        "value_clip": 0.1,
        "vf_coef": 0.5,
        "is_clip": 2.0,
    }
    total, metrics = ppo_loss(returns=None, **common)  # type: ignore[arg-type]
    assert "losses/value" not in metrics and "losses/explained_variance" not in metrics
    assert metrics["losses/total"] == pytest.approx(metrics["losses/policy"])
    total.backward()
    assert values.grad is not None and not values.grad.any()
    with_value, metrics = ppo_loss(returns=torch.tensor([5.0, 5.0]), **common)  # type: ignore[arg-type]
    assert metrics["losses/value"] > 0 and with_value.item() > total.item()


# ---------------------------------------------------------------------------------------------
# 6. Minibatches
# ---------------------------------------------------------------------------------------------


def test_minibatch_indices_cover_once_and_are_seeded() -> None:
    batches = minibatch_indices(10, 4, torch.Generator().manual_seed(3))
    assert [len(x) for x in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    again = minibatch_indices(10, 4, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(batches, again, strict=True))
    with pytest.raises(ValueError, match="size"):
        minibatch_indices(10, 0)
