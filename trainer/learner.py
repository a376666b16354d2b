"""The learner: one PPO update from a batch of finished episodes, on whatever accelerate gives it.

update(episodes), top to bottom:
  1. score the batch under the current weights (no grad): per-token log-probs of the answers
     ("old", the proximal policy) and values at the last prompt token;
  2. values of the observations after truncated episodes (the bootstrap);
  3. GAE per episode -> advantages and returns;
  4. PPO epochs over shuffled minibatches, each accumulated from micro batches:
     the CoT-weighted action log-prob, the clipped policy loss with the truncated importance
     weight for stale samples, the clipped value loss, gradient clipping, an Adam step;
     with ``target_kl``, the update ends before the step of the first minibatch that has
     drifted further than that from the starting policy (never before the first step: the
     first minibatch is scored by the weights it starts from, its KL is 0 up to rounding);
  5. one scheduler step; the version goes up by one.
The math itself is in ``trainer.ppo``; this file wires it to the model.
Dropout stays off (eval mode) so the ratio starts at exactly 1 on the first minibatch; with
``gradient_checkpointing`` the layers recompute their activations in the backward pass all the same.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agent.adapters import apply_adapter, attach_lora, lora_config, peft_config_from_dict, read_adapter
from agent.generation import teacher_forced_log_probs
from agent.models import (
    LoadedVLM,
    checkpointing_in_eval_mode,
    enable_activation_checkpointing,
    lora_target_modules,
    weights_fingerprint,
)
from agent.parsing import FactStats
from trainer import ppo
from trainer.config import TrainerConfig
from trainer.episodes import EpisodeData, Sample

log = logging.getLogger(__name__)


class ValueHead(nn.Module):
    """An MLP from the hidden state at the last prompt token to a scalar value.

    The paper's head is 4096-1024-512-1; here the widths scale with the model:
    (hidden, min(1024, 4 hidden), min(512, 2 hidden), 1).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        wide, narrow = min(1024, 4 * hidden), min(512, 2 * hidden)
        self.net = nn.Sequential(
            nn.Linear(hidden, wide), nn.ReLU(), nn.Linear(wide, narrow), nn.ReLU(), nn.Linear(narrow, 1)
        )
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.net(hidden.float()).squeeze(-1)


def text_hidden_size(model: Any) -> int:
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size)


def lr_factor(update: int, *, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up for ``warmup`` updates, then a cosine from 1 down to ``floor`` at ``total``."""
    if warmup and update < warmup:
        return (update + 1) / warmup
    progress = min(1.0, (update - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Scored:
    """The batch under some weights: action log-probs and values."""

    action_log_prob: Tensor  # (N,) lambda_cot * cot + action, fp32
    values: Tensor  # (N,)


class Learner:
    """Holds the LoRA-adapted model, the value head and the optimizer; runs PPO updates."""

    def __init__(self, config: TrainerConfig, loaded: LoadedVLM, accelerator: Any) -> None:
        self.config = config
        self.accelerator = accelerator
        self.fingerprint = weights_fingerprint(loaded.model)
        self.loaded = loaded
        self.vocab_size = int(loaded.base_model.get_output_embeddings().weight.shape[0])
        self.max_tokens = int(getattr(loaded.tokenizer, "model_max_length", 1 << 30) or 1 << 30)
        self.version = 0
        self.updates = 0

        initial: tuple[dict[str, Tensor], dict[str, Any]] | None = None
        if config.init_adapter is not None:
            initial = read_adapter(_adapter_path(config.init_adapter).read_bytes())
            lora = peft_config_from_dict(initial[1])
        else:
            targets = lora_target_modules(loaded.model, loaded.traits, include_vision=config.lora_vision)
            lora = lora_config(targets, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
        if config.gradient_checkpointing:
            enable_activation_checkpointing(loaded.model)
        model = attach_lora(loaded.model, lora)
        if initial is not None:
            apply_adapter(model, initial[0])
        model.eval()
        self.value_head = ValueHead(text_hidden_size(loaded.base_model)).to(loaded.device)
        self.lora_parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": self.lora_parameters, "lr": config.lr},
                {"params": list(self.value_head.parameters()), "lr": config.lr * config.value_lr_scale},
            ],
            weight_decay=0.0,
        )
        floor = config.lr_min / config.lr if config.lr else 0.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda u: lr_factor(u, warmup=config.warmup_updates, total=config.lr_updates, floor=floor),
        )
        model, self.value_head, self.optimizer, self.scheduler = accelerator.prepare(
            model, self.value_head, self.optimizer, self.scheduler
        )
        self.loaded.model = model
        self._shuffle = torch.Generator().manual_seed(config.seed)

    @property
    def peft_model(self) -> Any:
        return self.accelerator.unwrap_model(self.loaded.model)

    # ------------------------------------------------------------------ forward passes
    def _forward(self, samples: Sequence[Sample]) -> tuple[Tensor, Tensor]:
        """(action log-prob (B,), value (B,)) of samples under the current weights."""
        checkpointing = self.config.gradient_checkpointing
        with checkpointing_in_eval_mode(self.loaded.model) if checkpointing else nullcontext():
            forced = teacher_forced_log_probs(
                self.loaded,
                [s.image for s in samples],
                [s.prompt_ids for s in samples],
                [s.generated_ids for s in samples],
                temperature=samples[0].temperature,
                return_hidden=True,
            )
        starts = torch.tensor([s.action_start for s in samples], device=forced.log_probs.device)
        action = ppo.action_log_prob(forced.log_probs, forced.mask, starts, self.config.lambda_cot)
        assert forced.last_prompt_hidden is not None
        return action, self.value_head(forced.last_prompt_hidden)

    def _minibatch_mean(self, local_share_sum: float) -> float:
        """A minibatch's mean of a metric from each process's share-weighted sum (the sum of them
        all); every process gets the same number, so all of them stop early together or none."""
        total = torch.tensor(local_share_sum, dtype=torch.float32, device=self.accelerator.device)
        return float(self.accelerator.reduce(total, reduction="sum"))

    @torch.no_grad()
    def score(self, samples: Sequence[Sample]) -> Scored:
        """Action log-probs and values of every sample, in micro batches, without gradients."""
        actions, values = [], []
        for chunk in _chunks(list(range(len(samples))), self.config.micro_batch_size):
            action, value = self._forward([samples[i] for i in chunk])
            actions.append(action.float().cpu())
            values.append(value.float().cpu())
        return Scored(torch.cat(actions), torch.cat(values))

    @torch.no_grad()
    def bootstrap_values(self, episodes: Sequence[EpisodeData]) -> dict[int, float]:
        """V(next observation) for each truncated episode, by index."""
        out: dict[int, float] = {}
        dummy = [int(self.loaded.tokenizer.eos_token_id or 0)]  # one token so the prompt's last hidden exists
        truncated = [i for i, e in enumerate(episodes) if e.bootstrap_image is not None]
        for chunk in _chunks(truncated, self.config.micro_batch_size):
            forced = teacher_forced_log_probs(
                self.loaded,
                [episodes[i].bootstrap_image for i in chunk],  # type: ignore[misc]
                [episodes[i].bootstrap_prompt_ids for i in chunk],
                [dummy for _ in chunk],
                temperature=self.config.temperature,
                return_hidden=True,
            )
            assert forced.last_prompt_hidden is not None
            for i, value in zip(
                chunk, self.value_head(forced.last_prompt_hidden).float().cpu().tolist(), strict=True
            ):
                out[i] = value
        return out

    # ------------------------------------------------------------------ the update
    def _gae(self, episodes: Sequence[EpisodeData], values: Tensor) -> tuple[Tensor, Tensor]:
        """GAE per episode (truncated episodes bootstrap from their next observation): the
        advantage and the value target of every step, in batch order."""
        config = self.config
        n = sum(len(e.steps) for e in episodes)
        bootstrap = self.bootstrap_values(episodes)
        advantages = torch.zeros(n)
        returns = torch.zeros(n)
        start = 0
        for index, episode in enumerate(episodes):
            end = start + len(episode.steps)
            steps = episode.steps
            next_values = torch.zeros(len(steps))
            if index in bootstrap:
                next_values[-1] = bootstrap[index]
            adv, ret = ppo.compute_gae(
                torch.tensor([s.reward for s in steps]),
                values[start:end],
                torch.tensor([s.terminated for s in steps]),
                torch.tensor([s.truncated for s in steps]),
                gamma=config.gamma,
                lam=config.gae_lambda,
                next_values=next_values,
            )
            advantages[start:end], returns[start:end] = adv, ret
            start = end
        return advantages, returns

    def update(self, episodes: Sequence[EpisodeData]) -> dict[str, float]:
        """One PPO update on ``episodes``; returns metrics. Bumps ``version``."""
        config = self.config
        started = time.monotonic()
        episodes = with_fact_reward(episodes, config.fact_reward)
        samples = [s for e in episodes for s in e.steps]
        n = len(samples)

        # 1. the batch under the current ("old") weights, and under the sampler ("behavior")
        old = self.score(samples)
        behavior = torch.stack(
            [
                ppo.action_log_prob(
                    torch.tensor([s.behavior_log_probs]),
                    torch.ones(1, len(s.generated_ids), dtype=torch.bool),
                    torch.tensor([s.action_start]),
                    config.lambda_cot,
                )[0]
                for s in samples
            ]
        )

        # 2.-3. advantages and value targets
        if config.group_relative:
            advantages = group_advantages(episodes, gamma=config.gamma, per_state=config.advantage == "gigpo")
            returns = old.values.detach().float().clone()  # no value target of its own: no value loss
        else:
            advantages, returns = self._gae(episodes, old.values)
            if config.normalize_advantages and n > 1:
                advantages = ppo.normalize_advantages(advantages)
        vf_coef = 0.0 if config.group_relative else config.vf_coef

        # 4. PPO epochs over minibatches, accumulated from micro batches
        sums: dict[str, float] = defaultdict(float)
        optimizer_steps = 0
        stop_kl = math.nan  # the KL that ended the update early, if one did
        for _ in range(config.ppo_epochs):
            for minibatch in ppo.minibatch_indices(n, config.minibatch_size, self._shuffle):
                indices = minibatch.tolist()
                self.optimizer.zero_grad(set_to_none=True)
                step_sums: dict[str, float] = defaultdict(float)
                for micro in _chunks(indices, config.micro_batch_size):
                    # Several processes (accelerate launch): each takes its share of the micro batch;
                    # DDP averages the gradients, hence the factor num_processes below.
                    mine, real = _shard(micro, self.accelerator.process_index, self.accelerator.num_processes)
                    new_log_prob, new_values = self._forward([samples[i] for i in mine])
                    if not real:  # nothing of this micro batch here: join the all-reduce with zeros
                        self.accelerator.backward((new_log_prob.sum() + new_values.sum()) * 0.0)
                        continue
                    device = new_log_prob.device
                    rows = torch.tensor(mine[:real])
                    loss, metrics = ppo.ppo_loss(
                        new_log_prob=new_log_prob[:real],
                        old_log_prob=old.action_log_prob[rows].to(device),
                        behavior_log_prob=behavior[rows].to(device),
                        advantages=advantages[rows].to(device),
                        new_values=new_values[:real],
                        old_values=old.values[rows].to(device),
                        returns=returns[rows].to(device),
                        clip_coef=config.clip,
                        value_clip=config.value_clip or None,
                        vf_coef=vf_coef,
                        is_clip=config.is_clip,
                    )
                    share = real / len(indices)
                    self.accelerator.backward(loss * share * self.accelerator.num_processes)
                    for key, value in metrics.items():
                        step_sums[key] += value * share
                if config.target_kl and optimizer_steps:  # the first step is always taken
                    kl = self._minibatch_mean(step_sums["losses/approx_kl"])
                    if kl > config.target_kl:
                        stop_kl = kl
                        break
                for key, value in step_sums.items():
                    sums[key] += value
                grad_norm = self.accelerator.clip_grad_norm_(
                    [*self.lora_parameters, *self.value_head.parameters()], config.max_grad_norm
                )
                sums["losses/grad_norm"] += float(grad_norm)
                self.optimizer.step()
                optimizer_steps += 1
            if not math.isnan(stop_kl):
                break

        # 5. schedule, version
        self.scheduler.step()
        self.updates += 1
        self.version += 1
        metrics = {key: value / max(1, optimizer_steps) for key, value in sums.items()}
        metrics.update(batch_metrics(episodes, latest_version=self.version - 1))
        metrics["charts/learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        metrics["charts/optimizer_steps"] = float(optimizer_steps)
        metrics["charts/kl_stopped_early"] = float(not math.isnan(stop_kl))
        if not math.isnan(stop_kl):
            metrics["losses/stop_kl"] = stop_kl
        metrics["charts/advantage_std"] = float(advantages.std()) if n > 1 else 0.0
        if config.group_relative:  # no value loss: its numbers would only mislead
            metrics.pop("losses/value", None)
            metrics.pop("losses/explained_variance", None)
            groups = len({(e.env, e.seed) for e in episodes})
            metrics["charts/groups"] = float(groups)
            metrics["charts/group_size_mean"] = len(episodes) / groups
        seconds = time.monotonic() - started
        metrics["perf/update_seconds"] = seconds
        metrics["perf/samples_per_second"] = n * config.ppo_epochs / max(seconds, 1e-9)
        return metrics


def with_fact_reward(episodes: Sequence[EpisodeData], coef: float) -> list[EpisodeData]:
    """The episodes with each step's reward lowered by ``coef`` x the share of the facts its CoT
    stated wrongly (``Sample.fact_checks``; unchecked steps as they are): a reward for reading the
    image right, not only for acting right. Without it PPO fixes a model's actions and leaves the
    facts its thoughts state wrong (docs/learning-notes.md). Copies: the hub's episodes stay as
    the agents sent them."""
    if not coef:
        return list(episodes)
    shaped = []
    for episode in episodes:
        steps = [
            replace(
                s, reward=s.reward - coef * sum(not right for _, right in s.fact_checks) / len(s.fact_checks)
            )
            if s.fact_checks
            else s
            for s in episode.steps
        ]
        shaped.append(replace(episode, steps=steps))
    return shaped


def group_advantages(episodes: Sequence[EpisodeData], *, gamma: float, per_state: bool) -> Tensor:
    """Every step's advantage from its group (the batch's episodes of one env and seed), in batch
    order: GRPO, each step gets its episode's return against its group's; GiGPO (``per_state``,
    Feng et al. 2025) adds the step's discounted return against those of the group's steps taken
    from the same state (same image and prompt), so that of two episodes that met one state, the
    step that did better from it is preferred, whatever else the episodes did."""
    per_episode = ppo.group_relative_advantages(
        torch.tensor([e.total_reward for e in episodes]), [(e.env, e.seed) for e in episodes]
    )
    advantages = torch.cat([per_episode[i].repeat(len(e.steps)) for i, e in enumerate(episodes)])
    if not per_state:
        return advantages.float()
    step_returns: list[float] = []
    anchors: list[tuple[str, int, bytes]] = []
    for episode in episodes:
        future = 0.0
        returns = []
        for sample in reversed(episode.steps):
            future = sample.reward + gamma * future
            returns.append(future)
        step_returns += reversed(returns)
        anchors += [(episode.env, episode.seed, _state_key(s)) for s in episode.steps]
    per_step = ppo.group_relative_advantages(torch.tensor(step_returns), list(anchors))
    return (advantages + per_step).float()


def _state_key(sample: Sample) -> bytes:
    """What identifies the state a step was taken from: its image and its prompt."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((sample.image.shape, sample.prompt_ids)).encode())
    digest.update(np.ascontiguousarray(sample.image).tobytes())
    return digest.digest()


def batch_metrics(episodes: Sequence[EpisodeData], *, latest_version: int) -> dict[str, float]:
    """What the batch says about the agents: success, returns, answer health, staleness."""
    samples = [s for e in episodes for s in e.steps]
    lags = [latest_version - s.version for s in samples]
    facts = FactStats()
    for sample in samples:
        facts.add(sample.fact_checks)
    return {
        # the CoT's facts against the environment's truth (absent when the agents check none)
        **facts.metrics(),
        "charts/episodes": float(len(episodes)),
        "charts/steps": float(len(samples)),
        "charts/success_rate": sum(e.success for e in episodes) / max(1, len(episodes)),
        "charts/episode_return": sum(e.env_return for e in episodes) / max(1, len(episodes)),
        "charts/valid_action_rate": sum(s.valid for s in samples) / max(1, len(samples)),
        "charts/cot_tokens": sum(s.action_start for s in samples) / max(1, len(samples)),
        # collapse to one repeated thought (RAGEN's "echo trap") shows as this falling toward 1/steps
        "charts/cot_distinct": len({tuple(s.generated_ids[: s.action_start]) for s in samples})
        / max(1, len(samples)),
        "charts/answer_tokens": sum(len(s.generated_ids) for s in samples) / max(1, len(samples)),
        "charts/policy_lag_mean": sum(lags) / max(1, len(lags)),
        "charts/policy_lag_max": float(max(lags, default=0)),
    }


def _shard(micro: list[int], rank: int, world: int) -> tuple[list[int], int]:
    """This process's rows of a micro batch, and how many of them are real.

    Every process must run the same number of backward passes, so one that gets no rows takes
    the micro batch's first row as a placeholder (real = 0) and contributes zero gradient.
    """
    mine = micro[rank::world]
    return (mine, len(mine)) if mine else (micro[:1], 0)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _adapter_path(path: Any) -> Any:
    """An adapter file, or a directory holding ``adapter.safetensors``."""
    from agent.adapters import ADAPTER_FILE

    return path / ADAPTER_FILE if path.is_dir() else path
