"""Demonstrations for the SFT warm start (the paper's step 1), written from an environment's expert.

    visact demos --env numberline --episodes 500 -o demos/numberline.jsonl
    visact demos --server host:port --episodes 500 -o demos.jsonl   # any server with "expert"
    visact demos --env alfworld --reset-option expert=search -o demos/alfworld.jsonl

The expert plays through the agent's own rollout loop (real gRPC: a built-in game is served
in process on a free port), so the demonstrations see exactly what agents see. ``--reset-option``
is passed to every reset, as agent-client's: ALFWorld's ``expert=search`` has its searching
demonstrator play instead of its oracle (docs/alfworld.md).

Format: one JSON object per line, images as PNG files beside the JSONL (never inline):

    {"image": "numberline_images/000017.png",   # path relative to the JSONL file
     "task": "...",                              # the environment's task text
     "legal_actions": ["-", "+"],
     "fact_keys": ["current number", "target number"],
     "facts": {"current number": "2", "target number": "4"},
     "thoughts": "The current number 2 is below the target 4, so increase it.",
     "action": "+",
     "prompt": "...",                            # the user turn's text (instruction + format)
     "target": "{\\"current number\\": \\"2\\", ...}",   # the exact answer to learn
     "env": "numberline", "seed": 1234, "step": 1}

To bring your own data (any environment, any language): write the same fields; "image",
"target" and either "prompt" or "task" + "legal_actions" are required, the rest optional.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from visact.agent.config import (
    RESET_OPTION_HELP,
    AgentConfig,
    AgentRunConfig,
    PolicyConfig,
    SamplingConfig,
    ServersConfig,
    parse_reset_options,
)
from visact.agent.evaluation import EVAL_SEED_BASE
from visact.agent.policy import OraclePolicy
from visact.agent.runs import play_seeds
from visact.env_server.client import EnvCallError, EnvClient
from visact.model.prompts import format_target, instruction_text
from visact.wire.records import Episode, StepRecord


@dataclass
class DemosConfig:
    """Configuration of `visact demos` (every field is a command-line option)."""

    env: str = field(
        default="numberline",
        metadata={"help": "game to serve in process: built-in, or module:Class for an Env of your own"},
    )
    server: str | None = field(default=None, metadata={"help": "use this env server instead of --env"})
    episodes: int = field(default=500, metadata={"help": "expert episodes to record"})
    out: Path = field(
        default=Path("demos/demos.jsonl"), metadata={"help": "the JSONL file to write", "short": "-o"}
    )
    cot: bool = field(
        default=True, metadata={"help": "targets with chain of thought (--no-cot: action only)"}
    )
    seed: int = field(
        default=0, metadata={"help": "first episode seed (training seeds stay below the eval range)"}
    )
    sessions: int = field(default=16, metadata={"help": "sessions played at once"})
    token: str | None = field(default=None, metadata={"help": "bearer token for --server"})
    reset_option: list[str] = field(default_factory=list, metadata={"help": RESET_OPTION_HELP})

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes}")
        parse_reset_options(self.reset_option)
        if self.seed + self.episodes > EVAL_SEED_BASE:
            raise ValueError(
                f"seeds {self.seed}.. would reach the held-out range starting at {EVAL_SEED_BASE}"
            )


def write_demos(config: DemosConfig) -> int:
    """Record ``config.episodes`` expert episodes; returns the number of lines written."""
    running = None
    address = config.server
    if address is None:
        from visact.env_server.server import ServerConfig, start_server

        running = start_server(ServerConfig(env=config.env, host="127.0.0.1", port=0))
        address = f"127.0.0.1:{running.port}"
    client = EnvClient(address, token=config.token)
    spec = client.describe()
    if "expert" not in spec.capabilities:
        raise ValueError(f"environment {spec.name!r} at {address} has no expert; demonstrations need one")
    out = config.out
    image_dir = out.parent / f"{out.stem}_images"
    image_dir.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    lines: list[str] = []

    def record(episode: Episode) -> None:
        with lock:
            for step in episode.steps:
                demo = _line(
                    spec.name, list(spec.fact_keys), episode, step, image_dir, out, len(lines), config.cot
                )
                lines.append(json.dumps(demo, ensure_ascii=False))

    expert = AgentConfig(
        servers=ServersConfig(server=[address], sessions=config.sessions, reset_option=config.reset_option),
        policy=PolicyConfig(oracle=True),
        sampling=SamplingConfig(cot=config.cot),
        run=AgentRunConfig(name="demos"),
    )
    try:
        play_seeds(
            expert,
            [client],
            OraclePolicy(cot=config.cot),
            range(config.seed, config.seed + config.episodes),
            record,
        )
    finally:
        client.close()
        if running is not None:
            running.drain(grace=0)
    out.write_text("\n".join(lines) + "\n")
    return len(lines)


def _line(
    env: str,
    fact_keys: list[str],
    episode: Episode,
    step: StepRecord,
    image_dir: Path,
    out: Path,
    index: int,
    cot: bool,
) -> dict[str, object]:
    """One demonstration: the step's image (saved as PNG), its prompt, and the expert's answer."""
    image_path = image_dir / f"{index:06d}.png"
    Image.fromarray(step.image).save(image_path, compress_level=1)
    answer = json.loads(step.text)  # the oracle's answer, written by format_target
    facts = {key: str(answer[key]) for key in fact_keys if key in answer}
    thoughts = str(answer.get("thoughts", ""))
    return {
        "image": str(image_path.relative_to(out.parent)),
        "task": step.task,
        "legal_actions": list(step.legal_actions),
        "fact_keys": fact_keys,
        "facts": facts,
        "thoughts": thoughts,
        "action": step.action,
        "prompt": instruction_text(step.task, step.legal_actions, fact_keys, cot),
        "target": format_target(facts, thoughts, step.action, cot=cot),
        "env": env,
        "seed": episode.seed,
        "step": step.episode_step,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from visact.configcli import parse_config

    config = parse_config(DemosConfig, argv, prog="visact demos", description=__doc__.splitlines()[0])
    try:
        count = write_demos(config)
    except EnvCallError as exc:  # e.g. a reset option the env refuses
        print(f"visact demos: env server call failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} demonstrations to {config.out}")
    return 0
