"""The learner: one PPO update from a batch of finished episodes, on whatever accelerate gives it.

update(episodes), top to bottom:
  1. score the batch under the current weights (no grad): per-token log-probs of the answers
     ("old", the proximal policy) and values at the last prompt token;
  2. values of the observations after truncated episodes (the bootstrap). A micro batch the
     model fails on (in 1 or 2) is scored sample by sample; an episode with a sample it cannot
     score is dropped from the update whole (counted in ``counters/samples_dropped`` and
     ``counters/episodes_dropped``, logged with its agent and episode id), and training goes on
     with the rest; with several processes, every process drops what any of them could not score;
     with ``kl_coef``, the answers are scored once more with the adapters off (the reference
     policy) and each step's reward loses ``kl_coef`` x (log pi - log pi_ref);
  3. advantages and value targets by ``--advantage`` (``visact.trainer.advantages``: GAE per
     episode, the paper's; GRPO; GiGPO);
  4. PPO epochs over shuffled minibatches, each accumulated from micro batches:
     the CoT-weighted action log-prob, the clipped policy loss with the truncated importance
     weight for stale samples, the clipped value loss, gradient clipping, an Adam step;
     with ``target_kl``, the update ends before the step of the first minibatch that has
     drifted further than that from the starting policy (never before the first step: the
     first minibatch is scored by the weights it starts from, its KL is 0 up to rounding);
  5. one scheduler step; the version goes up by one.
The math itself is in ``visact.trainer.ppo``; this file wires it to the model.
Images stay PNG files until a micro batch needs their pixels (decoded then, dropped after).
Dropout stays off (eval mode) so the ratio starts at exactly 1 on the first minibatch; with
``gradient_checkpointing`` the layers recompute their activations in the backward pass all the same.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from visact.model.adapters import (
    adapted_modules,
    apply_adapter,
    attach_lora,
    lora_config,
    peft_config_from_dict,
    read_adapter,
)
from visact.model.generation import teacher_forced_log_probs
from visact.model.loading import (
    LoadedVLM,
    checkpointing_in_eval_mode,
    enable_activation_checkpointing,
    lora_target_modules,
    weights_fingerprint,
)
from visact.trainer import ppo
from visact.trainer.advantages import ADVANTAGES
from visact.trainer.config import TrainerConfig
from visact.wire.episodes import EpisodeData, StepData
from visact.wire.facts import FactStats

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
    #: samples the model could not score (index -> why); their rows are NaN
    failed: dict[int, str] = field(default_factory=dict)

    def rows(self, kept: list[int]) -> Scored:
        return Scored(self.action_log_prob[kept], self.values[kept])


@dataclass
class Targets:
    """What one update trains towards, per sample in batch order."""

    old: Scored  # the batch under the weights the update starts from (the proximal policy)
    behavior: Tensor  # (N,) the action log-probs the sampler recorded (for the importance weight)
    advantages: Tensor  # (N,)
    returns: Tensor | None  # (N,) value targets; None: the estimator has no value function


def behavior_log_probs(samples: Sequence[StepData], lambda_cot: float) -> Tensor:
    """Each sample's CoT-weighted action log-prob from the log-probs its sampler recorded."""
    return torch.stack(
        [
            ppo.action_log_prob(
                torch.tensor([s.behavior_log_probs]),
                torch.ones(1, len(s.generated_ids), dtype=torch.bool),
                torch.tensor([s.action_start]),
                lambda_cot,
            )[0]
            for s in samples
        ]
    )


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
        #: samples that could not be scored, and the episodes dropped for them, since the start
        self.counters = {"samples_dropped": 0, "episodes_dropped": 0}

        initial: tuple[dict[str, Tensor], dict[str, Any]] | None = None
        if config.vlm.init_adapter is not None:
            initial = read_adapter(_adapter_path(config.vlm.init_adapter).read_bytes())
            lora = peft_config_from_dict(initial[1])
        else:
            targets = lora_target_modules(
                loaded.model,
                loaded.traits,
                include_vision=config.lora.vision,
                include_projector=config.lora.projector,
            )
            lora = lora_config(targets, r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout)
        if config.vlm.gradient_checkpointing:
            enable_activation_checkpointing(loaded.model)
        self.lora = lora  # the peft LoraConfig of every version
        model = attach_lora(loaded.model, lora)
        self.lora_modules = adapted_modules(model)  # what every version adapts (agents learn it at Register)
        if initial is not None:
            apply_adapter(model, initial[0])
        model.eval()
        self.value_head = ValueHead(text_hidden_size(loaded.base_model)).to(loaded.device)
        self.lora_parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": self.lora_parameters, "lr": config.ppo.lr},
                {
                    "params": list(self.value_head.parameters()),
                    "lr": config.ppo.lr * config.ppo.value_lr_scale,
                },
            ],
            weight_decay=0.0,
        )
        floor = config.ppo.lr_min / config.ppo.lr if config.ppo.lr else 0.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda u: lr_factor(
                u, warmup=config.ppo.warmup_updates, total=config.ppo.lr_updates, floor=floor
            ),
        )
        model, self.value_head, self.optimizer, self.scheduler = accelerator.prepare(
            model, self.value_head, self.optimizer, self.scheduler
        )
        self.loaded.model = model
        #: the same model and value head without the multi-process wrapper, to score without
        #: gradients: no collective runs there, so a process that fails on a sample alone leaves no
        #: other waiting in one (the processes agree on what to drop once, _dropped_everywhere)
        self._local = dataclasses.replace(loaded, model=accelerator.unwrap_model(model))
        self._local_value_head = accelerator.unwrap_model(self.value_head)
        self._shuffle = torch.Generator().manual_seed(config.run.seed)

    @property
    def peft_model(self) -> Any:
        return self.accelerator.unwrap_model(self.loaded.model)

    # ------------------------------------------------------------------ forward passes
    def _forward(self, samples: Sequence[StepData], *, local: bool = False) -> tuple[Tensor, Tensor]:
        """(action log-prob (B,), value (B,)) of samples under the current weights (``local``:
        through the model without its multi-process wrapper, for scoring without gradients)."""
        loaded, value_head = (
            (self._local, self._local_value_head) if local else (self.loaded, self.value_head)
        )
        checkpointing = self.config.vlm.gradient_checkpointing
        with checkpointing_in_eval_mode(loaded.model) if checkpointing else nullcontext():
            forced = teacher_forced_log_probs(
                loaded,
                [s.image.pixels() for s in samples],  # decoded for this micro batch only
                [s.prompt_ids for s in samples],
                [s.generated_ids for s in samples],
                temperature=samples[0].temperature,
                return_hidden=True,
            )
        starts = torch.tensor([s.action_start for s in samples], device=forced.log_probs.device)
        action = ppo.action_log_prob(forced.log_probs, forced.mask, starts, self.config.ppo.lambda_cot)
        assert forced.last_prompt_hidden is not None
        return action, value_head(forced.last_prompt_hidden)

    def _minibatch_mean(self, local_share_sum: float) -> float:
        """A minibatch's mean of a metric from each process's share-weighted sum (the sum of them
        all); every process gets the same number, so all of them stop early together or none."""
        total = torch.tensor(local_share_sum, dtype=torch.float32, device=self.accelerator.device)
        return float(self.accelerator.reduce(total, reduction="sum"))

    @torch.no_grad()
    def score(self, samples: Sequence[StepData]) -> Scored:
        """Action log-probs and values of every sample, in micro batches, without gradients; a
        micro batch the model fails on is scored sample by sample, and the samples that fail
        alone are reported in ``failed``."""
        actions, values = [], []
        failed: dict[int, str] = {}
        for chunk in _chunks(list(range(len(samples))), self.config.ppo.micro_batch_size):
            action, value = _each_alone_if_need_be(
                chunk, lambda rows: self._forward([samples[i] for i in rows], local=True), failed, outputs=2
            )
            actions.append(action)
            values.append(value)
        return Scored(torch.cat(actions), torch.cat(values), failed)

    @torch.no_grad()
    def reference_log_probs(self, samples: Sequence[StepData]) -> Tensor:
        """Action log-probs of ``samples`` under the reference policy: the model with its adapters
        off (the weights PPO started from, e.g. the SFT model); NaN for a sample the model fails
        on, which :func:`with_kl_penalty` counts as no distance."""
        with self.peft_model.disable_adapter():
            return self.score(samples).action_log_prob

    @torch.no_grad()
    def bootstrap_values(self, episodes: Sequence[EpisodeData]) -> tuple[dict[int, float], dict[int, str]]:
        """V(next observation) for each truncated episode, by index; and the episodes whose
        bootstrap the model could not score (index -> why)."""
        out: dict[int, float] = {}
        failed: dict[int, str] = {}
        dummy = [int(self.loaded.tokenizer.eos_token_id or 0)]  # one token so the prompt's last hidden exists

        def values_of(rows: list[int]) -> tuple[Tensor]:
            forced = teacher_forced_log_probs(
                self._local,
                [episodes[i].bootstrap_image.pixels() for i in rows],  # type: ignore[union-attr]
                [episodes[i].bootstrap_prompt_ids for i in rows],
                [dummy for _ in rows],
                temperature=self.config.rollout.temperature,
                return_hidden=True,
            )
            assert forced.last_prompt_hidden is not None
            return (self._local_value_head(forced.last_prompt_hidden),)

        truncated = [i for i, e in enumerate(episodes) if e.bootstrap_image is not None]
        for chunk in _chunks(truncated, self.config.ppo.micro_batch_size):
            (value,) = _each_alone_if_need_be(chunk, values_of, failed, outputs=1)
            for i, v in zip(chunk, value.tolist(), strict=True):
                if i not in failed:
                    out[i] = v
        return out, failed

    def _scored_batch(
        self, episodes: Sequence[EpisodeData]
    ) -> tuple[list[EpisodeData], Scored, dict[int, float]]:
        """The episodes the model can score, their samples' scores and their bootstrap values.

        An episode with a sample (or a bootstrap) the model fails on is dropped whole (its
        returns need every step), counted and logged; every process drops the same ones."""
        samples = [s for e in episodes for s in e.steps]
        old = self.score(samples)
        bootstrap, bootstrap_failed = self.bootstrap_values(episodes)
        owner = [i for i, e in enumerate(episodes) for _ in e.steps]
        reasons: dict[int, list[str]] = {}
        for row, error in old.failed.items():
            step = row - owner.index(owner[row])
            reasons.setdefault(owner[row], []).append(f"step {step}: {error}")
        for index, error in bootstrap_failed.items():
            reasons.setdefault(index, []).append(f"bootstrap: {error}")
        dropped = self._dropped_everywhere(set(reasons), len(episodes))
        if not dropped:
            return list(episodes), old, bootstrap
        for index in sorted(dropped):
            episode = episodes[index]
            why = reasons.get(index, ["failed on another learner process"])
            self.counters["samples_dropped"] += len(why)
            self.counters["episodes_dropped"] += 1
            if self.accelerator.is_main_process:
                for reason in why:
                    log.warning(
                        "sample dropped: the model cannot score it",
                        extra={
                            "agent": episode.agent_id,
                            "episode": episode.episode_id,
                            "steps": len(episode.steps),
                            "error": reason[:500],
                        },
                    )
        kept = [i for i in range(len(episodes)) if i not in dropped]
        rows = [row for row, index in enumerate(owner) if index not in dropped]
        renumbered = {old_index: new for new, old_index in enumerate(kept)}
        return (
            [episodes[i] for i in kept],
            old.rows(rows),
            {renumbered[i]: v for i, v in bootstrap.items() if i in renumbered},
        )

    def _dropped_everywhere(self, dropped: set[int], episodes: int) -> set[int]:
        """The episodes any learner process drops (each process has its own view; they must agree,
        or one would wait in a gradient all-reduce the others never join)."""
        if self.accelerator.num_processes == 1:
            return dropped
        mask = torch.zeros(episodes, dtype=torch.float32, device=self.accelerator.device)
        if dropped:
            mask[sorted(dropped)] = 1.0
        mask = self.accelerator.reduce(mask, reduction="sum")
        return {int(i) for i in torch.nonzero(mask.cpu() > 0).flatten().tolist()}

    # ------------------------------------------------------------------ the update
    def update(self, episodes: Sequence[EpisodeData]) -> dict[str, float]:
        """One PPO update on ``episodes``; returns metrics. Bumps ``version``."""
        config = self.config
        started = time.monotonic()
        episodes = with_fact_reward(episodes, config.rollout.fact_reward)

        # 1.-2. the batch under the current ("old") weights, and under the sampler ("behavior")
        episodes, old, bootstrap = self._scored_batch(episodes)
        samples = [s for e in episodes for s in e.steps]
        if not samples:  # nothing the model can score: the weights stay, under a new version
            return self._nothing_trained(started)
        kl_ref = math.nan
        if config.ppo.kl_coef:  # rewards pay for the distance from the reference policy
            to_reference = old.action_log_prob - self.reference_log_probs(samples)
            episodes = with_kl_penalty(episodes, to_reference, config.ppo.kl_coef)
            kl_ref = float(to_reference.nanmean())
        behavior = behavior_log_probs(samples, config.ppo.lambda_cot)

        # 3. advantages and value targets, by the configured estimator
        advantages, returns = ADVANTAGES[config.ppo.advantage](episodes, old.values, bootstrap, config.ppo)
        targets = Targets(old, behavior, advantages, returns)

        # 4. PPO epochs over shuffled minibatches, each one optimizer step (or the KL stop)
        sums: dict[str, float] = defaultdict(float)
        optimizer_steps = 0
        stop_kl = math.nan  # the KL that ended the update early, if one did
        for _ in range(config.ppo.ppo_epochs):
            for minibatch in ppo.minibatch_indices(len(samples), config.ppo.minibatch_size, self._shuffle):
                step_sums = self._minibatch_gradients(samples, minibatch.tolist(), targets)
                if config.ppo.target_kl and optimizer_steps:  # the first step is always taken
                    kl = self._minibatch_mean(step_sums["losses/approx_kl"])
                    if kl > config.ppo.target_kl:
                        stop_kl = kl
                        break
                for key, value in step_sums.items():
                    sums[key] += value
                sums["losses/grad_norm"] += self._optimizer_step()
                optimizer_steps += 1
            if not math.isnan(stop_kl):
                break

        # 5. schedule, version
        self.scheduler.step()
        self.updates += 1
        self.version += 1
        metrics = {key: value / max(1, optimizer_steps) for key, value in sums.items()}
        metrics.update(self._update_metrics(episodes, targets, optimizer_steps, stop_kl, started))
        if not math.isnan(kl_ref):
            metrics["charts/kl_to_reference"] = kl_ref
        return metrics

    def _minibatch_gradients(
        self, samples: list[StepData], indices: list[int], targets: Targets
    ) -> dict[str, float]:
        """Zero the gradients, then accumulate the PPO loss of one minibatch from micro batches;
        returns its loss metrics (this process's share of the minibatch means)."""
        config = self.config
        self.optimizer.zero_grad(set_to_none=True)
        step_sums: dict[str, float] = defaultdict(float)
        for micro in _chunks(indices, config.ppo.micro_batch_size):
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
                old_log_prob=targets.old.action_log_prob[rows].to(device),
                behavior_log_prob=targets.behavior[rows].to(device),
                advantages=targets.advantages[rows].to(device),
                new_values=new_values[:real],
                old_values=targets.old.values[rows].to(device),
                returns=None if targets.returns is None else targets.returns[rows].to(device),
                clip_coef=config.ppo.clip,
                value_clip=config.ppo.value_clip or None,
                vf_coef=config.ppo.vf_coef,
                is_clip=config.ppo.is_clip,
            )
            share = real / len(indices)
            self.accelerator.backward(loss * share * self.accelerator.num_processes)
            for key, value in metrics.items():
                step_sums[key] += value * share
        return step_sums

    def _optimizer_step(self) -> float:
        """Clip the gradients and take an Adam step; returns the gradient norm before clipping."""
        grad_norm = self.accelerator.clip_grad_norm_(
            [*self.lora_parameters, *self.value_head.parameters()], self.config.ppo.max_grad_norm
        )
        self.optimizer.step()
        return float(grad_norm)

    def _update_metrics(
        self,
        episodes: Sequence[EpisodeData],
        targets: Targets,
        optimizer_steps: int,
        stop_kl: float,
        started: float,
    ) -> dict[str, float]:
        """What the update says beside its losses: the batch, the schedule, the KL stop, speed."""
        config = self.config
        n = len(targets.advantages)
        metrics = batch_metrics(episodes, latest_version=self.version - 1)
        metrics["charts/learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        metrics["charts/optimizer_steps"] = float(optimizer_steps)
        metrics["charts/kl_stopped_early"] = float(not math.isnan(stop_kl))
        if not math.isnan(stop_kl):
            metrics["losses/stop_kl"] = stop_kl
        metrics["charts/advantage_std"] = float(targets.advantages.std()) if n > 1 else 0.0
        if targets.returns is not None and n > 1:
            # before normalization: near 0 when every step does as well as the value head expects,
            # and normalizing then turns noise into full-size advantages
            raw = targets.returns - targets.old.values.to(targets.returns.device)
            metrics["charts/advantage_std_raw"] = float(raw.std())
        if config.ppo.group_relative:
            groups = len({(e.env, e.seed) for e in episodes})
            metrics["charts/groups"] = float(groups)
            metrics["charts/group_size_mean"] = len(episodes) / groups
        seconds = time.monotonic() - started
        metrics["perf/update_seconds"] = seconds
        metrics["perf/samples_per_second"] = n * config.ppo.ppo_epochs / max(seconds, 1e-9)
        metrics.update({f"counters/{key}": float(value) for key, value in self.counters.items()})
        return metrics

    def _nothing_trained(self, started: float) -> dict[str, float]:
        self.updates += 1
        self.version += 1
        metrics = {f"counters/{key}": float(value) for key, value in self.counters.items()}
        metrics.update({"charts/steps": 0.0, "charts/optimizer_steps": 0.0})
        metrics["perf/update_seconds"] = time.monotonic() - started
        return metrics


def with_fact_reward(episodes: Sequence[EpisodeData], coef: float) -> list[EpisodeData]:
    """The episodes with each step's reward lowered by ``coef`` x the share of the facts its CoT
    stated wrongly (``StepData.fact_checks``; unchecked steps as they are): a reward for reading the
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


def with_kl_penalty(episodes: Sequence[EpisodeData], to_reference: Tensor, coef: float) -> list[EpisodeData]:
    """The episodes with each step's reward lowered by ``coef`` x its answer's log-prob distance
    from the reference policy (``to_reference``: log pi - log pi_ref per step, in batch order;
    a NaN, a step the reference could not score, counts as 0). Each step's term is a one-sample
    estimate of KL(pi || pi_ref) at its state, so the return pays for drifting away from the
    reference in proportion: the penalty of InstructGPT and TRL's PPO. Copies, as
    :func:`with_fact_reward`."""
    distances = torch.nan_to_num(to_reference.detach().float(), nan=0.0).tolist()
    if len(distances) != sum(len(e.steps) for e in episodes):
        raise ValueError(
            f"to_reference has {len(distances)} rows for {sum(len(e.steps) for e in episodes)} steps: "
            f"one per step of the episodes, in order"
        )
    shaped, row = [], 0
    for episode in episodes:
        steps = [replace(s, reward=s.reward - coef * distances[row + i]) for i, s in enumerate(episode.steps)]
        row += len(steps)
        shaped.append(replace(episode, steps=steps))
    return shaped


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


def _each_alone_if_need_be(
    rows: list[int],
    forward: Callable[[list[int]], tuple[Tensor, ...]],
    failed: dict[int, str],
    outputs: int,
) -> tuple[Tensor, ...]:
    """``forward(rows)`` (``outputs`` tensors of shape (len(rows),)) as fp32 on the CPU; if it
    raises, each row alone, and the rows that still fail are NaN and recorded in ``failed``
    (row -> the error)."""
    try:
        return tuple(t.float().cpu() for t in forward(rows))
    except Exception as exc:  # whatever the model raises on one bad sample: never end the update
        if len(rows) == 1:
            failed[rows[0]] = f"{type(exc).__name__}: {exc}"
            return tuple(torch.full((1,), math.nan) for _ in range(outputs))
    parts = [_each_alone_if_need_be([row], forward, failed, outputs) for row in rows]
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _adapter_path(path: Any) -> Any:
    """An adapter file, or a directory holding ``adapter.safetensors``."""
    from visact.model.adapters import ADAPTER_FILE

    return path / ADAPTER_FILE if path.is_dir() else path
