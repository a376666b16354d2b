"""The PPO math of visact, as pure torch functions that read top to bottom.

The learner owns the data, the model and the minibatch/epoch loop; everything it computes
with lives here, in the order it is used:

1. Advantages: GAE over one session's steps, with terminations and truncations; or, instead,
   group-relative advantages (GRPO): each episode's return against its group's.
2. Log-probs: token log-probs from logits, then the CoT-weighted action log-prob
   ``log pi(a|o) = lambda_cot * sum log p(CoT tokens) + sum log p(action tokens)``.
3. Advantage normalization.
4. Losses: truncated importance weights for stale samples, the clipped policy loss with its
   diagnostics (approx KL, clip fraction), the clipped value loss, explained variance.
5. ``ppo_loss``: all of it combined into one scalar and a dict of ``losses/...`` metrics.
6. ``minibatch_indices``: the shuffled split the learner's epoch loop iterates over.

No config object is read here: every coefficient is an explicit argument (the paper's values
are given in the docstrings; the learner's config holds the ones in use). Losses are computed
in at least fp32 whatever the model's dtype (bf16 log-probs and values are upcast).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "PolicyLoss",
    "action_log_prob",
    "compute_gae",
    "explained_variance",
    "gather_token_log_probs",
    "group_relative_advantages",
    "minibatch_indices",
    "normalize_advantages",
    "policy_loss",
    "ppo_loss",
    "split_log_prob",
    "truncated_is_weight",
    "value_loss",
]


def _upcast(x: Tensor) -> Tensor:
    """``x`` in fp32, or wider if it already is (fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# ---------------------------------------------------------------------------------------------
# 1. Advantages: generalized advantage estimation (GAE)
# ---------------------------------------------------------------------------------------------


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    *,
    gamma: float,
    lam: float,
    next_values: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GAE advantages and returns for the steps of one session, in order (1-D tensors of length T).

    Step ``t`` saw observation ``s_t`` (value ``values[t]``, read at the last prompt token),
    got ``rewards[t]`` and ended the episode if ``terminated[t]`` or ``truncated[t]``. Several
    episodes may follow each other in the sequence (a session is reset after each end); the
    recursion never crosses an episode end.

    The value of the observation reached by step ``t`` is

    - ``0`` if ``terminated[t]`` (a true end: nothing more to earn; wins over ``truncated``);
    - ``next_values[t]`` if ``truncated[t]`` (a time limit: the episode would have gone on, so
      bootstrap from the value of its final observation; required when any step is truncated,
      pass ``torch.zeros_like(values)`` to knowingly treat truncation as termination);
    - ``0`` for the last step of an unfinished tail (the learner passes whole episodes only:
      each ends terminated or truncated);
    - ``values[t + 1]`` otherwise.

    With that ``V'_t`` and ``c_t = 0`` at an episode end or at the last step, else ``1``::

        delta_t = r_t + gamma * V'_t - V(s_t)
        A_t     = delta_t + gamma * lam * c_t * A_{t+1}
        R_t     = A_t + V(s_t)                      (the value target)

    Paper: gamma 0.9, lam 0.95. ``terminated``/``truncated`` may be bool or 0/1; ``next_values``
    is read only where ``truncated`` is set. No gradient flows (inputs are detached). Returns
    ``(advantages, returns)`` on ``values.device`` in fp32 (fp64 if ``values`` is fp64).
    """
    n = values.shape[0]
    named = {"rewards": rewards, "values": values, "terminated": terminated, "truncated": truncated}
    if next_values is not None:
        named["next_values"] = next_values
    for name, x in named.items():
        if x.dim() != 1 or x.shape[0] != n:
            raise ValueError(
                f"compute_gae takes the steps of one session as 1-D tensors of one length: "
                f"values has shape {tuple(values.shape)}, {name} has {tuple(x.shape)}"
            )
    term = terminated.detach().bool().tolist()
    trunc = truncated.detach().bool().tolist()
    if next_values is None and any(tr and not te for tr, te in zip(trunc, term, strict=True)):
        raise ValueError(
            "a step is truncated but next_values is None: pass next_values with the value of "
            "each truncated step's final observation (or torch.zeros_like(values) to treat "
            "truncation as termination)"
        )
    r = rewards.detach().double().tolist()
    v = values.detach().double().tolist()
    nv = next_values.detach().double().tolist() if next_values is not None else [0.0] * n

    adv = [0.0] * n
    next_adv = 0.0
    for t in reversed(range(n)):
        if term[t]:
            next_value, continues = 0.0, False
        elif trunc[t]:
            next_value, continues = nv[t], False
        elif t == n - 1:
            next_value, continues = 0.0, False
        else:
            next_value, continues = v[t + 1], True
        delta = r[t] + gamma * next_value - v[t]
        next_adv = delta + gamma * lam * next_adv * continues
        adv[t] = next_adv

    dtype = torch.promote_types(values.dtype, torch.float32)
    advantages = torch.tensor(adv, dtype=dtype, device=values.device)
    returns = advantages + values.detach().to(dtype)
    return advantages, returns


def group_relative_advantages(returns: Tensor, groups: list[Hashable], eps: float = 1e-6) -> Tensor:
    """GRPO's advantage of each episode: ``(R - mean(R_group)) / (std(R_group) + eps)``.

    ``returns`` holds one undiscounted return per episode, ``groups`` its group (episodes of the
    same env from the same seed: the same start, played differently). The std is the
    population std, so a group whose episodes all scored alike, and a group of one, give 0:
    nothing to prefer. No value function is involved (Shao et al. 2024, DeepSeekMath; used for
    VLM agents by verl-agent and RAGEN). Every step of an episode gets its episode's advantage.
    """
    if len(groups) != len(returns):
        raise ValueError(f"{len(returns)} returns but {len(groups)} group keys")
    r = _upcast(returns.detach())
    advantages = torch.zeros_like(r)
    members: dict[Hashable, list[int]] = {}
    for index, key in enumerate(groups):
        members.setdefault(key, []).append(index)
    for rows in members.values():
        group = r[rows]
        advantages[rows] = (group - group.mean()) / (group.std(correction=0) + eps)
    return advantages


# ---------------------------------------------------------------------------------------------
# 2. Log-probs: from logits to the CoT-weighted action log-prob
# ---------------------------------------------------------------------------------------------


def gather_token_log_probs(logits: Tensor, token_ids: Tensor) -> Tensor:
    """``log softmax(logits)[..., token_ids]``: the log-prob of each given token, in fp32.

    ``logits`` is ``(..., V)`` (any dtype; the log-softmax runs in fp32 so bf16 logits lose no
    precision in the normalizer), ``token_ids`` is ``(...)`` integer. Aligning the two (logits
    at position ``i`` predict token ``i + 1``) is the caller's job. Returns ``(...)`` fp32 (fp64
    for fp64 logits), differentiable with respect to ``logits``.
    """
    if logits.shape[:-1] != token_ids.shape:
        raise ValueError(
            f"logits (..., V) and token_ids (...) must agree on the leading dims: "
            f"got {tuple(logits.shape)} and {tuple(token_ids.shape)}"
        )
    log_probs = torch.log_softmax(_upcast(logits), dim=-1)
    return log_probs.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)


def split_log_prob(token_log_probs: Tensor, mask: Tensor, action_start: Tensor) -> tuple[Tensor, Tensor]:
    """``(cot_sum, action_sum)``: the summed log-probs of the CoT part and of the action part.

    ``token_log_probs`` is ``(B, T)``: position ``j`` of row ``b`` is the ``j``-th generated
    token of sequence ``b`` (right padding). ``mask`` is ``(B, T)``, true/1 on real tokens.
    ``action_start`` is ``(B,)``: the index of the first action token (where ``"action":``
    starts). Then, over real tokens only::

        cot_sum[b]    = sum_{j <  action_start[b]} logp[b, j]
        action_sum[b] = sum_{j >= action_start[b]} logp[b, j]

    ``action_start = 0`` makes everything action (the no-CoT prompt); ``action_start >= len``
    makes everything CoT. Padded positions are excluded with ``where`` so even ``-inf``/NaN
    there cannot leak into the sums or their gradients.
    """
    if token_log_probs.dim() != 2 or mask.shape != token_log_probs.shape:
        raise ValueError(
            f"token_log_probs and mask must both be (B, T): got {tuple(token_log_probs.shape)} "
            f"and {tuple(mask.shape)}"
        )
    if action_start.shape != token_log_probs.shape[:1]:
        raise ValueError(
            f"action_start must be (B,) = ({token_log_probs.shape[0]},): got {tuple(action_start.shape)}"
        )
    logp = _upcast(token_log_probs)
    positions = torch.arange(logp.shape[1], device=logp.device).unsqueeze(0)  # (1, T)
    is_cot = positions < action_start.to(logp.device).unsqueeze(1)  # (B, T)
    real = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    cot_sum = torch.where(real & is_cot, logp, zero).sum(dim=1)
    action_sum = torch.where(real & ~is_cot, logp, zero).sum(dim=1)
    return cot_sum, action_sum


def action_log_prob(token_log_probs: Tensor, mask: Tensor, action_start: Tensor, lambda_cot: float) -> Tensor:
    """``log pi(a|o) = lambda_cot * cot_sum + action_sum`` per sequence, shape ``(B,)``.

    The RL4VLM action log-prob: the CoT tokens count with weight ``lambda_cot`` (paper: 0.5 for
    the card games, 0.2 for ALFWorld), the action tokens in full. Arguments as in
    ``split_log_prob``. The same function must score the sampler's tokens and the learner's,
    so that the PPO ratio compares like with like.
    """
    cot_sum, action_sum = split_log_prob(token_log_probs, mask, action_start)
    return lambda_cot * cot_sum + action_sum


# ---------------------------------------------------------------------------------------------
# 3. Advantage normalization
# ---------------------------------------------------------------------------------------------


def normalize_advantages(advantages: Tensor, eps: float = 1e-8, std_floor: float = 0.0) -> Tensor:
    """``(A - mean(A)) / (max(std(A), std_floor) + eps)``, with the population std (so one
    sample gives 0).

    RL4VLM normalizes once over the whole update batch, before the epochs; cleanrl per
    minibatch. Which (if any) is the learner's choice. ``std_floor`` (in reward units) keeps a
    batch whose steps all did about as well as expected (every episode won, say) from having
    its leftover noise scaled up to unit-size advantages: below the floor they are only centred.
    """
    a = _upcast(advantages)
    return (a - a.mean()) / (a.std(correction=0).clamp(min=std_floor) + eps)


# ---------------------------------------------------------------------------------------------
# 4. Losses
# ---------------------------------------------------------------------------------------------


def truncated_is_weight(old_log_prob: Tensor, behavior_log_prob: Tensor, clip: float) -> Tensor:
    """``w = min(pi_old / pi_behavior, clip) = min(exp(old - behavior), clip)`` per sample, no grad.

    Stale samples were drawn by the sampler's (behavior) policy, possibly several weight
    versions behind. Decoupled PPO (Hilton et al. 2021, "Batch size-invariance for policy
    optimization") keeps the trust region around the proximal policy ``pi_old`` (the learner's
    policy at the start of this update, recomputed) and corrects the sampling distribution with
    ``pi_old / pi_behavior``; truncating that ratio at ``clip`` (e.g. 2.0) bounds the variance
    at the cost of a little bias. When ``behavior == old`` the weight is exactly 1.
    """
    log_w = _upcast(old_log_prob.detach()) - _upcast(behavior_log_prob.detach())
    return torch.exp(log_w).clamp(max=clip)


class PolicyLoss(NamedTuple):
    """What ``policy_loss`` returns: the loss (with grad) and two no-grad diagnostics."""

    loss: Tensor
    """Scalar to minimize."""
    approx_kl: Tensor
    """k3 estimate of KL(pi_old || pi_new), detached."""
    clip_frac: Tensor
    """Fraction of samples with ``|ratio - 1| > clip_coef``, detached."""


def policy_loss(
    new_log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    clip_coef: float,
    is_weight: Tensor | None = None,
) -> PolicyLoss:
    """The PPO clipped surrogate, optionally importance-weighted, all tensors ``(B,)``.

    With ``ratio = exp(new - old)`` and per-sample weight ``w`` (1 if ``is_weight`` is None)::

        loss = mean_b w_b * max(-A_b * ratio_b, -A_b * clip(ratio_b, 1 - eps, 1 + eps))

    i.e. minus the pessimistic (min) of the unclipped and clipped objectives: a positive
    advantage stops pulling once the ratio passes ``1 + eps``, a negative one once it falls
    below ``1 - eps``; moves that made things worse are never clipped. Paper: ``eps = 0.1``.

    ``approx_kl`` is Schulman's low-variance, unbiased, always non-negative "k3" estimator of
    ``KL(pi_old || pi_new)`` from samples of ``pi_old``: ``mean((ratio - 1) - log ratio)``
    (unweighted: a diagnostic, not a term of the loss).
    """
    new = _upcast(new_log_prob)
    log_ratio = new - _upcast(old_log_prob.detach())
    ratio = torch.exp(log_ratio)
    adv = _upcast(advantages.detach())
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    per_sample = torch.maximum(unclipped, clipped)
    if is_weight is not None:
        per_sample = is_weight.detach().to(per_sample.dtype) * per_sample
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_frac = ((ratio - 1.0).abs() > clip_coef).to(ratio.dtype).mean()
    return PolicyLoss(per_sample.mean(), approx_kl, clip_frac)


def value_loss(new_values: Tensor, old_values: Tensor, returns: Tensor, clip: float | None) -> Tensor:
    """The clipped value loss, all tensors ``(B,)``; the RL4VLM / PPO2 form.

    ::

        v_clip = old + clamp(new - old, -clip, clip)
        loss   = 0.5 * mean(max((new - R)^2, (v_clip - R)^2))

    The value may not move more than ``clip`` from its rollout-time estimate ``old`` and get
    credit for it (paper: clip = the policy clip, 0.1). ``clip=None`` gives ``0.5 * MSE``. The
    ``0.5`` is part of this loss; the value coefficient (paper: 0.5) multiplies it in
    ``ppo_loss``, as in RL4VLM.
    """
    new = _upcast(new_values)
    old = _upcast(old_values.detach())
    target = _upcast(returns.detach())
    unclipped = (new - target) ** 2
    if clip is None:
        return 0.5 * unclipped.mean()
    v_clip = old + (new - old).clamp(-clip, clip)
    clipped = (v_clip - target) ** 2
    return 0.5 * torch.maximum(unclipped, clipped).mean()


def explained_variance(values: Tensor, returns: Tensor) -> Tensor:
    """``1 - Var[R - V] / Var[R]``, detached: 1 is perfect, 0 no better than a constant.

    Negative when the predictions are worse than predicting the mean; NaN when the returns are
    constant (nothing to explain).
    """
    v = _upcast(values.detach())
    r = _upcast(returns.detach())
    var_r = r.var(correction=0)
    if var_r == 0:
        return torch.full((), float("nan"), dtype=r.dtype, device=r.device)
    return 1.0 - (r - v).var(correction=0) / var_r


# ---------------------------------------------------------------------------------------------
# 5. Everything together
# ---------------------------------------------------------------------------------------------


def ppo_loss(
    *,
    new_log_prob: Tensor,
    old_log_prob: Tensor,
    behavior_log_prob: Tensor | None,
    advantages: Tensor,
    new_values: Tensor,
    old_values: Tensor,
    returns: Tensor | None,
    clip_coef: float,
    value_clip: float | None,
    vf_coef: float,
    is_clip: float,
) -> tuple[Tensor, dict[str, float]]:
    """Total PPO loss of one minibatch and its metrics. All tensors are ``(B,)``.

    - ``new_log_prob``: ``action_log_prob`` under the policy being trained (with grad);
    - ``old_log_prob``: the same under the proximal policy (the learner's at the start of
      this update); ``behavior_log_prob``: what the sampler recorded, or None if the samples
      are on-policy (then no importance weight);
    - ``advantages`` (normalized or not, the caller's choice), ``returns`` from ``compute_gae``,
      or None for an estimator without a value function (GRPO, GiGPO): no value loss then;
    - ``new_values`` (with grad) and ``old_values`` (at rollout time) from the value head.

    ::

        w     = min(exp(old - behavior), is_clip)            (1 if behavior is None)
        total = policy_loss(new, old, A, clip_coef, w) + vf_coef * value_loss(V, V_old, R, value_clip)

    Paper: clip_coef 0.1, value_clip 0.1, vf_coef 0.5. Metrics (Python floats):
    ``losses/total``, ``losses/policy``, ``losses/value``, ``losses/approx_kl``,
    ``losses/clip_frac``, ``losses/explained_variance`` (of ``new_values``),
    ``losses/is_weight_mean``, ``losses/is_truncated_frac`` (samples whose weight hit
    ``is_clip``).
    """
    is_weight = None
    if behavior_log_prob is not None:
        is_weight = truncated_is_weight(old_log_prob, behavior_log_prob, is_clip)
    pg = policy_loss(new_log_prob, old_log_prob, advantages, clip_coef, is_weight)
    metrics = {
        "losses/policy": pg.loss.item(),
        "losses/approx_kl": pg.approx_kl.item(),
        "losses/clip_frac": pg.clip_frac.item(),
        "losses/is_weight_mean": 1.0,
        "losses/is_truncated_frac": 0.0,
    }
    if returns is None:
        # no value target: the value head stays in the graph with a zero gradient, so that
        # data-parallel training sees every parameter used
        total = pg.loss + 0.0 * new_values.sum()
    else:
        v_loss = value_loss(new_values, old_values, returns, value_clip)
        total = pg.loss + vf_coef * v_loss
        metrics["losses/value"] = v_loss.item()
        metrics["losses/explained_variance"] = explained_variance(new_values, returns).item()
    metrics["losses/total"] = total.item()
    if is_weight is not None:
        metrics["losses/is_weight_mean"] = is_weight.mean().item()
        metrics["losses/is_truncated_frac"] = (is_weight >= is_clip).to(is_weight.dtype).mean().item()
    return total, metrics


# ---------------------------------------------------------------------------------------------
# 6. Minibatches
# ---------------------------------------------------------------------------------------------


def minibatch_indices(n: int, size: int, generator: torch.Generator | None = None) -> list[Tensor]:
    """A random permutation of ``range(n)`` cut into minibatches of ``size`` (the last may be
    smaller). One call per epoch; seed ``generator`` for reproducible shuffles."""
    if n < 0 or size <= 0:
        raise ValueError(f"minibatch_indices needs n >= 0 and size > 0: got n={n}, size={size}")
    return list(torch.randperm(n, generator=generator).split(size))
