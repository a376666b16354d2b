"""The agent-client's one config; the command line is derived from it.

Its fields are grouped (``config.servers.server``, ``config.sampling.temperature``, ...); the
command line is flat and spells each field as it always has (``--server``, ``--temperature``):
see visact.configcli.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visact.logs import LogFormat
from visact.model.options import ActionChoice, EngineName, attn_implementation_field

RESET_OPTION_HELP = (
    "NAME=VALUE: a reset option of every episode, the value read as JSON when it parses (3, true, "
    '"3") and as text otherwise, e.g. expert=search (ALFWorld); repeat for several'
)


def parse_reset_options(items: Sequence[str]) -> dict[str, Any]:
    """``["expert=search", "task_type=3"]`` as ``{"expert": "search", "task_type": 3}``: each
    value read as JSON when it parses, as text otherwise; ValueError for an item without a name."""
    options: dict[str, Any] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"a reset option is NAME=VALUE (e.g. expert=search), got {item!r}")
        try:
            options[name.strip()] = json.loads(value)
        except ValueError:
            options[name.strip()] = value
    return options


@dataclass
class ServersConfig:
    """The env servers played on, the trainer learned with, and how to reach them."""

    server: list[str] = field(
        default_factory=list, metadata={"help": "env server host:port; repeat for several servers"}
    )
    sessions: int = field(default=16, metadata={"help": "env sessions driven at once, spread over servers"})
    trainer: str | None = field(default=None, metadata={"help": "trainer host:port to train with"})
    token: str | None = field(
        default=None,
        metadata={"help": "bearer token for the servers (also $VISACT_TOKEN)", "env": "VISACT_TOKEN"},
    )
    tls_ca: Path | None = field(default=None, metadata={"help": "PEM CA bundle: connect with TLS"})
    tls_cert: Path | None = field(default=None, metadata={"help": "PEM client certificate (mutual TLS)"})
    tls_key: Path | None = field(default=None, metadata={"help": "PEM client key (mutual TLS)"})
    timeout: float = field(default=60.0, metadata={"help": "deadline of each env call, seconds"})
    reset_option: list[str] = field(default_factory=list, metadata={"help": RESET_OPTION_HELP})

    def __post_init__(self) -> None:
        if self.token is None:
            self.token = os.environ.get("VISACT_TOKEN") or None
        if not self.server:
            raise ValueError("give at least one env server: --server host:port")
        if self.sessions < 1:
            raise ValueError(f"--sessions must be >= 1, got {self.sessions}")
        parse_reset_options(self.reset_option)  # refused here, not at the first reset

    @property
    def reset_options(self) -> dict[str, Any]:
        """The options of every reset, by name (``--reset-option``)."""
        return parse_reset_options(self.reset_option)


@dataclass
class PolicyConfig:
    """What plays: a VLM (and its adapter, engine, dtype, device), or the env's expert, or chance."""

    model: str = field(default="tiny", metadata={"help": "Hugging Face VLM name or path, or 'tiny'"})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter directory to apply"})
    engine: EngineName = field(
        default="transformers",
        metadata={
            "help": "what samples: transformers (any VLM, any LoRA) or vllm (vLLM's engine; LoRA on the "
            "language model only: the trainer needs --no-lora-vision --no-lora-projector; docs/models.md)",
        },
    )
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 on capable GPUs, else fp32), float32, bfloat16"}
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, ..."})
    attn_implementation: str | None = attn_implementation_field()
    oracle: bool = field(default=False, metadata={"help": "play the environment's expert instead of a model"})
    random_policy: bool = field(default=False, metadata={"help": "play uniformly random legal actions"})

    def __post_init__(self) -> None:
        if self.oracle and self.random_policy:
            raise ValueError("--oracle and --random-policy exclude each other")


@dataclass
class SamplingConfig:
    """How the model answers, and what an answer is paid or checked for."""

    cot: bool = field(default=True, metadata={"help": "chain-of-thought prompt (--no-cot: action only)"})
    temperature: float = field(default=0.2, metadata={"help": "sampling temperature (paper: 0.2)"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest answer in tokens (paper: 256)"})
    action_choice: ActionChoice = field(
        default="text",
        metadata={
            "help": "text: play the action the answer names (the paper's); likeliest: keep the CoT and "
            "draw among the legal actions by the model's probability of writing each (transformers engine)",
        },
    )
    prefill_answer: bool = field(
        default=False,
        metadata={
            "help": 'begin every answer with its fixed opening ({"action":) in the prompt, as the '
            "model was SFT'd (trainer sft --prefill-answer); a trainer's setting overrides it"
        },
    )
    format_penalty: float = field(
        default=0.0, metadata={"help": "reward subtracted when an answer does not parse (paper: 0)"}
    )
    check_facts: bool = field(
        default=True,
        metadata={
            "help": "check the facts each chain of thought states against the environment's expert "
            "(servers that have one) and report fact accuracy"
        },
    )

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0 (sampling), got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.format_penalty < 0:
            raise ValueError(
                f"--format-penalty is subtracted, give it as a number >= 0; got {self.format_penalty}"
            )


@dataclass
class EvalConfig:
    """`agent-client eval`: how many held-out episodes, and what it reports."""

    episodes: int = field(default=200, metadata={"help": "eval: episodes on held-out seeds"})
    json: Path | None = field(default=None, metadata={"help": "eval: write the summary here as JSON"})
    by: list[str] = field(
        default_factory=lambda: ["task_type"],
        metadata={"help": "eval: also report success by the value of these step-info keys, when reported"},
    )

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes}")


@dataclass
class AgentRunConfig:
    """The process: its name, seed, threads, progress bar and logs."""

    name: str = field(default_factory=lambda: os.uname().nodename, metadata={"help": "agent name for logs"})
    seed: int = field(default=0, metadata={"help": "seed of sampling and of training episode seeds"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    log_format: LogFormat = field(default="text", metadata={"help": "json or text"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING, ERROR"})


@dataclass
class AgentConfig:
    """Configuration of one agent-client process (every field of every group is a command-line option)."""

    servers: ServersConfig = field(default_factory=ServersConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: AgentRunConfig = field(default_factory=AgentRunConfig)

    def __post_init__(self) -> None:
        if self.sampling.action_choice == "likeliest" and self.policy.engine != "transformers":
            raise ValueError(
                f"--action-choice likeliest scores every legal action with the model, which the "
                f"{self.policy.engine} engine cannot do; use --engine transformers (or --action-choice text)"
            )
