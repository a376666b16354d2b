"""The trainer's one config (``trainer serve``); saved into every checkpoint. Defaults are the paper's.

Its fields are grouped (``config.ppo.lr``, ``config.network.port``, ...); the command line is
flat and spells each field as it always has (``--lr``, ``--port``, ``--lora-r``): see
visact.configcli. A group checks its own fields; ``TrainerConfig`` checks what spans groups.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from visact.logs import LogFormat
from visact.model.options import attn_implementation_field, gradient_checkpointing_field
from visact.rpc import DEFAULT_MAX_WATCHERS
from visact.trainer.hub import DEFAULT_MAX_AGENTS

#: the advantage estimators (visact.trainer.advantages.ADVANTAGES)
Advantage = Literal["gae", "grpo", "gigpo"]


def _at_least_one(config: object, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")


@dataclass
class NetworkConfig:
    """Where the trainer listens, who may call it, and how much it takes at once."""

    host: str = field(default="[::]", metadata={"help": "address to bind"})
    port: int = field(default=50061, metadata={"help": "port to bind; 0 picks a free one"})
    ready_file: Path | None = field(default=None, metadata={"help": "write the bound port here once serving"})
    token: str | None = field(
        default=None,
        metadata={"help": "require this bearer token (also $VISACT_TOKEN)", "env": "VISACT_TOKEN"},
    )
    tls_cert: Path | None = field(default=None, metadata={"help": "PEM certificate chain: serve TLS"})
    tls_key: Path | None = field(default=None, metadata={"help": "PEM private key for --tls-cert"})
    tls_client_ca: Path | None = field(default=None, metadata={"help": "PEM CA: require client certs (mTLS)"})
    max_message_mb: float = field(
        default=256.0,
        metadata={"help": "largest message in or out, MiB (larger requests: RESOURCE_EXHAUSTED)"},
    )
    max_agents: int = field(
        default=DEFAULT_MAX_AGENTS,
        metadata={
            "help": "agents registered at once; each may hold two WatchVersions and FetchWeights streams"
        },
    )
    max_health_watchers: int = field(
        default=DEFAULT_MAX_WATCHERS, metadata={"help": "grpc.health.v1 Watch streams held open at once"}
    )
    workers: int = field(
        default=4,
        metadata={"help": "threads checking episodes and reading weights for agents (not a bound on agents)"},
    )
    agent_timeout: float = field(default=60.0, metadata={"help": "forget agents silent this many seconds"})

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)

    def __post_init__(self) -> None:
        if self.token is None:
            self.token = os.environ.get("VISACT_TOKEN") or None
        _at_least_one(self, "max_agents", "workers")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.max_message_mb <= 0:
            raise ValueError(f"--max-message-mb must be positive, got {self.max_message_mb}")


@dataclass
class VLMConfig:
    """The model trained: which VLM, how it runs, and the adapter it starts from."""

    model: str = field(default="tiny", metadata={"help": "Hugging Face VLM name or path, or 'tiny'"})
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 on capable GPUs, else fp32), float32, bfloat16"}
    )
    attn_implementation: str | None = attn_implementation_field()
    gradient_checkpointing: bool = gradient_checkpointing_field()
    init_adapter: Path | None = field(
        default=None, metadata={"help": "start from this adapter (e.g. `trainer sft` output) as version 0"}
    )


@dataclass
class LoraConfig:
    """The LoRA adapter trained (options --lora-*)."""

    r: int = field(default=128, metadata={"help": "LoRA rank (paper: 128)"})
    alpha: int = field(default=256, metadata={"help": "LoRA alpha (paper: 256)"})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (paper: 0.05)"})
    vision: bool = field(default=True, metadata={"help": "adapt the vision tower too (paper: yes)"})
    projector: bool = field(
        default=True,
        metadata={
            "help": "adapt the vision-to-text projector too (agents on --engine vllm adapt only the language "
            "model: give them --no-lora-vision --no-lora-projector)"
        },
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"--lora-r must be >= 1, got {self.r}")


@dataclass
class PPOConfig:
    """PPO's update: RL4VLM's method and defaults (Zhai et al., NeurIPS 2024)."""

    ppo_epochs: int = field(default=4, metadata={"help": "passes over each batch"})
    minibatch_size: int = field(default=128, metadata={"help": "samples per optimizer step"})
    micro_batch_size: int = field(
        default=8, metadata={"help": "samples per forward pass (gradient accumulation)"}
    )
    lr: float = field(default=1e-5, metadata={"help": "Adam learning rate (cosine to --lr-min)"})
    lr_min: float = field(default=1e-9, metadata={"help": "learning rate at the end of the cosine"})
    lr_updates: int = field(default=25, metadata={"help": "updates over which the cosine decays"})
    warmup_updates: int = field(default=0, metadata={"help": "updates of linear warm-up"})
    value_lr_scale: float = field(default=1.0, metadata={"help": "value head learning rate / --lr"})
    gamma: float = field(default=0.9, metadata={"help": "discount"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    clip: float = field(default=0.1, metadata={"help": "PPO ratio clip"})
    value_clip: float = field(default=0.1, metadata={"help": "value clip (0: none)"})
    vf_coef: float = field(default=0.5, metadata={"help": "value loss coefficient"})
    max_grad_norm: float = field(default=0.01, metadata={"help": "gradient clipping norm"})
    lambda_cot: float = field(default=0.5, metadata={"help": "weight of the CoT tokens' log-prob"})
    is_clip: float = field(
        default=2.0, metadata={"help": "truncation of the importance weight for stale data"}
    )
    normalize_advantages: bool = field(default=True, metadata={"help": "normalize advantages per batch"})
    advantage_std_floor: float = field(
        default=0.0,
        metadata={
            "help": "normalize by max(spread, this) (reward units): a batch that all went about as "
            "expected, e.g. every episode won, keeps small advantages instead of noise scaled to 1 (0: off)"
        },
    )
    advantage: Advantage = field(
        default="gae",
        metadata={
            "help": "gae: the paper's, from the value head; grpo: each episode's return against the "
            "other episodes of its group (same seed; needs --group-size >= 2), no value loss; gigpo: "
            "grpo plus each step's return against the group's steps from the same state",
        },
    )
    target_kl: float = field(
        default=0.0,
        metadata={
            "help": "end an update early, before the optimizer step of the first minibatch whose approx KL "
            "to the update's starting policy exceeds this (0: never; 0.01-0.05 are usual)"
        },
    )
    kl_coef: float = field(
        default=0.0,
        metadata={
            "help": "KL penalty to the reference policy (the weights under the adapters, e.g. the SFT model): "
            "each step's reward loses this x (log pi - log pi_ref) of its answer, as InstructGPT and TRL "
            "do (0: off, as in the paper)"
        },
    )

    @property
    def group_relative(self) -> bool:
        """Advantages from groups of episodes (grpo, gigpo), no value function."""
        return self.advantage in ("grpo", "gigpo")

    def __post_init__(self) -> None:
        _at_least_one(self, "ppo_epochs", "minibatch_size", "micro_batch_size")
        if self.minibatch_size % self.micro_batch_size:
            raise ValueError(
                f"--minibatch-size ({self.minibatch_size}) must be a multiple of --micro-batch-size "
                f"({self.micro_batch_size}): micro batches accumulate into a minibatch"
            )
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(
                f"need 0 < gamma <= 1 and 0 <= gae-lambda <= 1; got {self.gamma}, {self.gae_lambda}"
            )
        if self.target_kl < 0:
            raise ValueError(f"--target-kl must be >= 0 (0: no early stop), got {self.target_kl}")
        if not (math.isfinite(self.kl_coef) and self.kl_coef >= 0):
            raise ValueError(f"--kl-coef must be a finite number >= 0 (0: no KL penalty), got {self.kl_coef}")
        if not (math.isfinite(self.advantage_std_floor) and self.advantage_std_floor >= 0):
            raise ValueError(
                f"--advantage-std-floor must be a finite number >= 0 (0: plain normalization), "
                f"got {self.advantage_std_floor}"
            )


@dataclass
class RolloutConfig:
    """The episodes: how agents sample them, what they are paid, and which the trainer takes."""

    steps_per_update: int = field(default=512, metadata={"help": "env steps gathered per PPO update"})
    group_size: int = field(
        default=1,
        metadata={"help": "agents' sessions play each episode from one seed in groups of this many"},
    )
    temperature: float = field(default=0.2, metadata={"help": "agents' sampling temperature"})
    max_new_tokens: int = field(default=256, metadata={"help": "agents' longest answer"})
    cot: bool = field(default=True, metadata={"help": "chain-of-thought prompt (--no-cot: action only)"})
    prefill_answer: bool = field(
        default=False,
        metadata={
            "help": 'agents begin every answer with its fixed opening ({"action":) in the prompt and '
            "sample the rest (start from a model SFT'd the same way: trainer sft --prefill-answer)"
        },
    )
    format_penalty: float = field(
        default=0.0, metadata={"help": "reward subtracted for an unparsable answer"}
    )
    fact_reward: float = field(
        default=0.0,
        metadata={
            "help": "reward shaping for truthful CoT: a step's reward loses this x the share of the facts its "
            "CoT states wrongly (checked by the agents against the env's expert; 0: off)"
        },
    )
    max_policy_lag: int = field(
        default=1, metadata={"help": "rollouts may use weights this many versions old"}
    )
    buffer_steps: int = field(
        default=0, metadata={"help": "steps the buffer holds (0: 2 x --steps-per-update)"}
    )
    buffer_mb: float = field(
        default=512.0,
        metadata={
            "help": "MiB the buffer holds: images as the PNG files sent, 4 bytes a token, ~1 KiB a step "
            "(full: agents are told to wait; a larger episode is refused)"
        },
    )
    max_image_pixels: int = field(
        default=0,
        metadata={
            "help": "largest image an episode may carry, in pixels (0: 256 x what the model's processor "
            "feeds the model, i.e. 16x its width and height, at most the protocol's 4096x4096)"
        },
    )

    @property
    def buffer_bytes(self) -> int:
        return int(self.buffer_mb * 1024 * 1024)

    def __post_init__(self) -> None:
        _at_least_one(self, "steps_per_update", "max_new_tokens", "group_size")
        if self.max_policy_lag < 0:
            raise ValueError(f"--max-policy-lag must be >= 0, got {self.max_policy_lag}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if self.fact_reward < 0:
            raise ValueError(
                f"--fact-reward is subtracted per wrong fact; give it >= 0, got {self.fact_reward}"
            )
        if self.format_penalty < 0:
            raise ValueError(f"--format-penalty is subtracted; give it >= 0, got {self.format_penalty}")
        if self.buffer_mb <= 0:
            raise ValueError(f"--buffer-mb must be positive, got {self.buffer_mb}")
        if not 0 <= self.max_image_pixels <= 4096 * 4096:
            raise ValueError(
                f"--max-image-pixels must be within 0..{4096 * 4096} (0: from the model; the protocol allows "
                f"at most 4096x4096), got {self.max_image_pixels}"
            )
        if not self.buffer_steps:
            self.buffer_steps = 2 * self.steps_per_update
        if self.buffer_steps < self.steps_per_update:
            raise ValueError(f"--buffer-steps ({self.buffer_steps}) must hold one batch (--steps-per-update)")


@dataclass
class RunConfig:
    """The run: checkpoints, how long, seeds, threads, logs and experiment tracking (metrics.jsonl
    and TensorBoard are always written)."""

    checkpoint_dir: Path = field(
        default=Path("runs/trainer"), metadata={"help": "checkpoints, weights, logs"}
    )
    checkpoint_every: int = field(default=5, metadata={"help": "checkpoint every N updates (and on SIGTERM)"})
    keep_versions: int = field(default=3, metadata={"help": "weights versions kept for agents to fetch"})
    resume: Path | None = field(default=None, metadata={"help": "continue from this checkpoint directory"})
    max_updates: int = field(default=0, metadata={"help": "stop after this many updates (0: never)"})
    seed: int = field(default=0, metadata={"help": "seed of initialization and minibatch order"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    log_format: LogFormat = field(default="text", metadata={"help": "json or text"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING, ERROR"})
    wandb_project: str | None = field(
        default=None,
        metadata={
            "help": "also log every update and this config to Weights & Biases in this project "
            "(pip install 'visact[wandb]'; WANDB_MODE=offline keeps it on disk)"
        },
    )
    wandb_entity: str | None = field(default=None, metadata={"help": "W&B team or user (default: yours)"})

    def __post_init__(self) -> None:
        if self.wandb_entity and not self.wandb_project:
            raise ValueError("--wandb-entity needs --wandb-project")
        if self.wandb_project and importlib.util.find_spec("wandb") is None:
            raise ValueError(
                "--wandb-project needs the wandb package: pip install 'visact[wandb]' (or leave "
                "--wandb-project out: metrics.jsonl and TensorBoard are written either way)"
            )
        if self.keep_versions < 1:
            raise ValueError(
                f"--keep-versions must be >= 1 (agents fetch the newest), got {self.keep_versions}"
            )


@dataclass
class TrainerConfig:
    """Configuration of `trainer serve` (every field of every group is a command-line option)."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"prefix": "lora_"})
    ppo: PPOConfig = field(default_factory=PPOConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.ppo.group_relative and self.rollout.group_size < 2:
            raise ValueError(
                f"--advantage {self.ppo.advantage} compares each episode with the others of its group: give "
                "--group-size 2 or more (4-8 are usual), and agents --sessions a multiple of it"
            )
