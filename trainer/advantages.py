"""Advantage estimators: one function per ``trainer serve --advantage NAME``, in ``ADVANTAGES``.

Each takes the batch's episodes (in batch order), the old values of their steps, the bootstrap
values of truncated episodes (by episode index) and the PPO config, and returns every step's
advantage and value target (None for an estimator without a value function: no value loss). The tensor
math is in ``visact.trainer.ppo``; this file only walks episodes. A new estimator is one function
here, one entry in ``ADVANTAGES`` and its name in ``PPOConfig.advantage``'s choices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from visact.trainer import ppo
from visact.trainer.config import PPOConfig
from visact.wire.episodes import EpisodeData, StepData


class Advantages(NamedTuple):
    advantages: Tensor  # one per step, in batch order
    returns: Tensor | None  # the value target of every step; None: no value function, no value loss


Estimator = Callable[[Sequence[EpisodeData], Tensor, dict[int, float], PPOConfig], Advantages]


def gae(
    episodes: Sequence[EpisodeData], values: Tensor, bootstrap: dict[int, float], config: PPOConfig
) -> Advantages:
    """The paper's: GAE per episode from the value head (truncated episodes bootstrap from the
    value of their next observation), normalized per batch unless ``--no-normalize-advantages``."""
    n = sum(len(e.steps) for e in episodes)
    advantages = torch.zeros(n)
    returns = torch.zeros(n)
    start = 0
    for index, episode in enumerate(episodes):
        steps = episode.steps
        end = start + len(steps)
        next_values = torch.zeros(len(steps))
        if index in bootstrap:
            next_values[-1] = bootstrap[index]
        advantages[start:end], returns[start:end] = ppo.compute_gae(
            torch.tensor([s.reward for s in steps]),
            values[start:end],
            torch.tensor([s.terminated for s in steps]),
            torch.tensor([s.truncated for s in steps]),
            gamma=config.gamma,
            lam=config.gae_lambda,
            next_values=next_values,
        )
        start = end
    if config.normalize_advantages and n > 1:
        advantages = ppo.normalize_advantages(advantages, std_floor=config.advantage_std_floor)
    return Advantages(advantages, returns)


def grpo(
    episodes: Sequence[EpisodeData], values: Tensor, bootstrap: dict[int, float], config: PPOConfig
) -> Advantages:
    """GRPO: every step gets its episode's return against its group's (the batch's episodes of
    one env and seed). No value function, so no value target and no value loss."""
    del values, bootstrap
    return Advantages(_episode_advantages(episodes), None)


def gigpo(
    episodes: Sequence[EpisodeData], values: Tensor, bootstrap: dict[int, float], config: PPOConfig
) -> Advantages:
    """GiGPO (Feng et al. 2025): GRPO plus each step's discounted return against those of the
    group's steps taken from the same state (same image and prompt), so that of two episodes that
    met one state, the step that did better from it is preferred, whatever else the episodes did."""
    del values, bootstrap
    step_returns: list[float] = []
    anchors: list[tuple[str, int, bytes]] = []
    for episode in episodes:
        future = 0.0
        returns = []
        for sample in reversed(episode.steps):
            future = sample.reward + config.gamma * future
            returns.append(future)
        step_returns += reversed(returns)
        anchors += [(episode.env, episode.seed, _state_key(s)) for s in episode.steps]
    per_state = ppo.group_relative_advantages(torch.tensor(step_returns), list(anchors))
    advantages = (_episode_advantages(episodes) + per_state).float()
    return Advantages(advantages, None)


ADVANTAGES: dict[str, Estimator] = {"gae": gae, "grpo": grpo, "gigpo": gigpo}


def _episode_advantages(episodes: Sequence[EpisodeData]) -> Tensor:
    """Each episode's total reward against its group's, repeated over its steps."""
    per_episode = ppo.group_relative_advantages(
        torch.tensor([e.total_reward for e in episodes]), [(e.env, e.seed) for e in episodes]
    )
    return torch.cat([per_episode[i].repeat(len(e.steps)) for i, e in enumerate(episodes)]).float()


def _state_key(sample: StepData) -> bytes:
    """What identifies the state a step was taken from: its image and its prompt."""
    pixels = sample.image.pixels()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(pixels.shape).encode())
    digest.update(np.asarray(sample.prompt_ids, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.digest()
