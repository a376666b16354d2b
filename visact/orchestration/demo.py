"""`visact demo`: the paper's pipeline on one machine, as real processes on loopback.

    visact demo [--env numberline] [--workdir runs/demo]

1. demonstrations from the game's expert (`visact demos`);
2. SFT of the tiny VLM on them (`trainer sft`);
3. env servers for the game (`env-server`), and a held-out evaluation of the SFT model;
4. PPO: `trainer serve` and two `agent-client`s until --ppo-updates;
5. the held-out evaluation again, with the PPO adapter.
Each held-out evaluation runs twice on the same seeds: ~greedy (--eval-temperature), and
sampled at the PPO temperature, as the agents play in training (RL4VLM reports the running
success of training episodes, at that temperature; the summary has it too);
6. ``learning_curve.png`` and ``summary.json`` in the work directory.
Every stage is a separate process, as on a cluster; the demo only wires and watches them, and
they die with it (SIGTERM from the kernel, even when the demo is SIGKILLed). With ``--keep``
the demonstrations and the SFT model of an earlier run are reused only when they match the
manifest written after their stage finished (``visact.cache``).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from visact.agent.config import (
    AgentConfig,
    AgentRunConfig,
    EvalConfig,
    PolicyConfig,
    SamplingConfig,
    ServersConfig,
    parse_reset_options,
)
from visact.cache import entry_problem, write_manifest
from visact.configcli import to_argv
from visact.env_server.server import ServerConfig
from visact.model.options import ActionChoice, EngineName
from visact.orchestration.demos import DemosConfig
from visact.orchestration.processes import command, run, start, stop_all
from visact.trainer.config import (
    Advantage,
    LoraConfig,
    NetworkConfig,
    PPOConfig,
    RolloutConfig,
    RunConfig,
    TrainerConfig,
    VLMConfig,
)
from visact.trainer.sft_config import SFTConfig

#: A game's setting: a number, a text, or reset options (NAME=VALUE each)
Setting = float | str | tuple[str, ...]
#: Settings every game starts from, and each game's own, found with bench/learning.py
#: (docs/results.md, docs/learning-notes.md). NumberLine: 120 SFT steps left some seeds' CoT
#: misreading the digits (46% held-out on seed 2, 70% after PPO); 300 steps read them, and PPO at
#: 3e-4 from there spiked the KL and broke the answers' format, at 1e-4 it kept them; a run
#: that wins every episode has advantages of spread ~0.1, which normalization scaled up to
#: noise of unit size that broke two runs in ten: its floor of 1 (a wasted move) leaves them small.
#: EZPoints answers are longer (~70 tokens: more SFT); 400 demonstration episodes (1,600 steps)
#: were learned by heart (SFT loss 0.006) and seed 1 read its held-out hands at 54%, 1,600 episodes
#: at the same 400 steps reached 83% (93.5% after PPO) for the same time. A win pays +10: a
#: format penalty of 1 let PPO learn broken answers, which play a random move that keeps the
#: episode alive. Blackjack and Points24 answers run to ~110 tokens.
#: ALFWorld (docs/alfworld.md) plays on its own tiny VLM (128 px frames, merges over its phrases);
#: its answers run to ~150 tokens with CoT and a policy that fails plays 50 steps an episode, so
#: its demo is a smaller budget that fits ~30 minutes on 2 CPU cores (docs/results.md#alfworld).
#: Its demonstrations are its searching demonstrator's (reset option expert=search): the oracle
#: goes straight to where the target is, which no observation shows.
#: EZPoints' plans ("2*6 = 12") are formulas: SFT weights their operators like their numbers
#: (trainer sft --symbol-words). Without it the common "+" drowned "*" (in 23% of the answers): the
#: policy played "*" on 0.1% of its steps and lost every product hand (seed 0: 81.5% -> 94.5%).
FORMULA_SYMBOLS = "+-*/()"
BASE_SETTINGS: dict[str, Setting] = {
    "model": "tiny",
    "demo_episodes": 400,
    "sft_steps": 120,
    "sft_symbol_words": "",
    "ppo_updates": 30,
    "steps_per_update": 128,
    "ppo_lr": 3e-4,
    "format_penalty": 1.0,
    "fact_reward": 0.0,
    "advantage_std_floor": 0.0,
    "max_new_tokens": 96,
    "eval_episodes": 200,
    "sampled_eval": True,
    "reset_option": (),
}
GAME_SETTINGS: dict[str, dict[str, Setting]] = {
    "numberline": {"sft_steps": 300, "ppo_lr": 1e-4, "advantage_std_floor": 1.0},
    "ezpoints": {
        "demo_episodes": 1600,
        "sft_steps": 400,
        "sft_symbol_words": FORMULA_SYMBOLS,
        "ppo_lr": 1e-4,
        "format_penalty": 10.0,
    },
    "points24": {"sft_steps": 400, "ppo_lr": 1e-4, "format_penalty": 10.0, "max_new_tokens": 128},
    "blackjack": {"max_new_tokens": 128},
    "alfworld": {
        "model": "tiny-alfworld",
        "demo_episodes": 200,
        "sft_steps": 400,
        "ppo_updates": 4,
        "steps_per_update": 64,
        "max_new_tokens": 128,
        "eval_episodes": 32,
        "sampled_eval": False,
        "reset_option": ("expert=search",),
    },
}
#: the settings that are whole numbers
INTEGER_SETTINGS = frozenset(
    {"demo_episodes", "sft_steps", "ppo_updates", "steps_per_update", "max_new_tokens", "eval_episodes"}
)
#: the settings that are text, and those that are yes or no
TEXT_SETTINGS = frozenset({"model", "sft_symbol_words"})
BOOL_SETTINGS = frozenset({"sampled_eval"})


def with_game_settings(config: DemoConfig) -> DemoConfig:
    """``config`` with every setting left unset (None) taken from the game's, else the base;
    ``prefill_answer`` unset is on for action-only answers (``--no-cot``)."""
    chosen = {**BASE_SETTINGS, **GAME_SETTINGS.get(config.env, {})}
    unset: dict[str, Any] = {
        name: _typed(name, value) for name, value in chosen.items() if getattr(config, name) is None
    }
    if config.prefill_answer is None:
        unset["prefill_answer"] = not config.cot
    return replace(config, **unset)


def _typed(name: str, value: Setting) -> float | int | str | bool | list[str]:
    if isinstance(value, tuple):  # reset options, each NAME=VALUE
        return list(value)
    if name in TEXT_SETTINGS:
        return str(value)
    if name in BOOL_SETTINGS:
        return bool(value)
    return int(value) if name in INTEGER_SETTINGS else float(value)


@dataclass
class DemoConfig:
    """Configuration of `visact demo` (every field is a command-line option)."""

    env: str = field(
        default="numberline", metadata={"help": "built-in game, or module:Class for an Env of your own"}
    )
    workdir: Path = field(default=Path("runs/demo"), metadata={"help": "where everything is written"})
    model: str | None = field(
        default=None,
        metadata={
            "help": "base VLM (Hugging Face name or path, 'tiny' or 'tiny-alfworld'; none: the game's)"
        },
    )
    demo_episodes: int | None = field(
        default=None, metadata={"help": "expert episodes for SFT (none: the game's)"}
    )
    sft_steps: int | None = field(
        default=None,
        metadata={
            "help": "SFT optimizer steps, short on purpose: a weak start for PPO (none: the game's, GAME_SETTINGS)"
        },
    )
    sft_lr: float = field(default=2e-3, metadata={"help": "SFT learning rate"})
    sft_symbol_words: str | None = field(
        default=None,
        metadata={"help": "trainer sft --symbol-words, e.g. '+-*/()' (none: the game's)"},
    )
    sft_vision_warmup_steps: int = field(default=200, metadata={"help": "SFT vision warm-up steps"})
    ppo_updates: int | None = field(default=None, metadata={"help": "PPO updates (none: the game's)"})
    steps_per_update: int | None = field(
        default=None, metadata={"help": "env steps per PPO update (none: the game's)"}
    )
    ppo_epochs: int = field(default=2, metadata={"help": "PPO epochs per update"})
    ppo_lr: float | None = field(default=None, metadata={"help": "PPO learning rate (none: the game's)"})
    lora_r: int = field(default=16, metadata={"help": "PPO LoRA rank"})
    lambda_cot: float = field(default=0.5, metadata={"help": "weight of the CoT tokens' log-prob"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature during PPO"})
    format_penalty: float | None = field(
        default=None,
        metadata={
            "help": "reward subtracted for an answer that names no legal action; about the game's "
            "largest reward, or PPO learns to write broken answers (none: the game's)"
        },
    )
    fact_reward: float | None = field(
        default=None,
        metadata={
            "help": "reward lost per CoT with every fact wrong (its share of wrong facts x this), checked "
            "against the env's expert; trainer serve --fact-reward (none: the game's)"
        },
    )
    value_lr_scale: float = field(default=1.0, metadata={"help": "value head learning rate / --ppo-lr"})
    target_kl: float = field(
        default=0.0, metadata={"help": "end a PPO update early past this approx KL (0: never; trainer serve)"}
    )
    kl_coef: float = field(
        default=0.0,
        metadata={
            "help": "KL penalty to the SFT model in each step's reward (0: off; trainer serve --kl-coef)"
        },
    )
    normalize_advantages: bool = field(
        default=True,
        metadata={
            "help": "normalize advantages per batch (--no-normalize-advantages: as computed; trainer serve)"
        },
    )
    advantage_std_floor: float | None = field(
        default=None,
        metadata={
            "help": "normalize advantages by max(spread, this), so a batch of won episodes keeps small "
            "advantages (0: plain; trainer serve --advantage-std-floor; none: the game's)"
        },
    )
    advantage: Advantage = field(
        default="gae",
        metadata={
            "help": "gae (the paper's, value head), grpo (each episode against its group's) or gigpo "
            "(grpo plus each step against the group's steps from the same state); trainer serve --advantage",
        },
    )
    group_size: int = field(
        default=1,
        metadata={"help": "sessions playing each seed together (grpo: 2 or more; a divisor of --sessions)"},
    )
    ppo_minutes: float = field(
        default=0.0, metadata={"help": "stop PPO after this many minutes (0: after --ppo-updates)"}
    )
    max_new_tokens: int | None = field(default=None, metadata={"help": "longest answer (none: the game's)"})
    cot: bool = field(default=True, metadata={"help": "chain-of-thought prompt (--no-cot: action only)"})
    action_choice: ActionChoice = field(
        default="text",
        metadata={
            "help": "how answers become actions in PPO and the evaluations (agent-client --action-choice): "
            "text, the action named; likeliest, the model's likeliest legal action after its CoT"
        },
    )
    prefill_answer: bool | None = field(
        default=None,
        metadata={
            "help": 'begin every answer with its fixed opening ({"action":) in the prompt, in SFT, PPO '
            "and the evaluations: the model writes only what varies, so PPO cannot unlearn the opening "
            "(none: on with --no-cot, whose answers PPO otherwise breaks; off with CoT, the paper's prompt)"
        },
    )
    engine: EngineName = field(
        default="transformers",
        metadata={
            "help": "what the agents sample with (agent-client --engine); vllm: PPO's LoRA then leaves "
            "the vision tower and the projector out, which vLLM does not adapt",
        },
    )
    agents: int = field(default=2, metadata={"help": "agent-client processes"})
    sessions: int = field(default=8, metadata={"help": "env sessions per agent"})
    env_servers: int = field(default=2, metadata={"help": "env-server processes"})
    eval_episodes: int | None = field(
        default=None, metadata={"help": "held-out episodes per evaluation (none: the game's)"}
    )
    sampled_eval: bool | None = field(
        default=None,
        metadata={
            "help": "also run each held-out evaluation sampling at --temperature, as in training "
            "(none: the game's; ALFWorld leaves it out to fit its budget)"
        },
    )
    eval_temperature: float = field(
        default=0.01,
        metadata={
            "help": "sampling temperature of the held-out evaluations (~greedy; each also runs at --temperature)"
        },
    )
    reset_option: list[str] | None = field(
        default=None,
        metadata={
            "help": "NAME=VALUE: a reset option of every episode, for the demonstrations, evaluations "
            "and PPO alike; repeat for several (none: the game's; ALFWorld: expert=search, its "
            "searching demonstrator)"
        },
    )
    threads: int = field(default=1, metadata={"help": "torch threads per process"})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})
    keep: bool = field(
        default=False, metadata={"help": "keep an existing work directory's results (resume stages)"}
    )

    def __post_init__(self) -> None:
        if self.agents < 1 or self.env_servers < 1:
            raise ValueError("need at least one agent and one env server")
        parse_reset_options(self.reset_option or [])
        if self.group_size < 1 or self.sessions % self.group_size:
            raise ValueError(f"--group-size {self.group_size} must divide --sessions {self.sessions}")
        if self.advantage != "gae" and self.group_size < 2:
            raise ValueError(
                f"--advantage {self.advantage} needs --group-size 2 or more (e.g. 4, with --sessions 8)"
            )
        if self.action_choice == "likeliest" and self.engine != "transformers":
            raise ValueError(
                "--action-choice likeliest needs --engine transformers (it scores every legal action)"
            )


class Stage:
    """Prints what the demo is doing, with the time each stage took."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Stage:
        self.started = time.monotonic()
        print(f"\n== {self.name}", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        print(f"   {self.name}: {time.monotonic() - self.started:.0f} s", flush=True)


def run_checked(argv: Sequence[str], log: Path | None = None) -> None:
    """Run a stage to completion; its output goes to the console (progress bars) or to ``log``."""
    returncode = run(argv, log)
    if returncode != 0:
        detail = f"; see {log}" if log else ""
        raise RuntimeError(f"`{' '.join(argv[:3])} ...` failed with exit code {returncode}{detail}")


def evaluate(agent: AgentConfig) -> dict[str, Any]:
    """Run `agent-client eval` with ``agent`` (an :func:`evaluation_config`); its summary."""
    assert agent.eval.json is not None, "evaluation_config names the summary file"
    run_checked([*command("agent-client"), "eval", *to_argv(agent)])
    return dict(json.loads(agent.eval.json.read_text()))


def evaluation_config(
    config: DemoConfig,
    servers: list[str],
    model: str,
    adapter: Path | None,
    out: Path,
    temperature: float | None = None,
    **policy: Any,
) -> AgentConfig:
    """`agent-client eval` on the held-out seeds into ``out``, at ``--eval-temperature`` unless
    ``temperature`` is given; ``policy`` are more PolicyConfig fields, e.g. ``random_policy=True``."""
    assert config.max_new_tokens is not None and config.eval_episodes is not None, (
        "with_game_settings fills them in"
    )
    return AgentConfig(
        servers=agent_servers(config, servers, sessions=32),
        policy=PolicyConfig(
            model=model, adapter=None if adapter is None else str(adapter), engine=config.engine, **policy
        ),
        sampling=SamplingConfig(
            temperature=config.eval_temperature if temperature is None else temperature,
            max_new_tokens=config.max_new_tokens,
            cot=config.cot,
            action_choice=config.action_choice,
            prefill_answer=bool(config.prefill_answer),
        ),
        # success by task type and by room split, for games that report them (ALFWorld)
        eval=EvalConfig(episodes=config.eval_episodes, json=out, by=["task_type", "split"]),
        run=AgentRunConfig(threads=max(2, config.threads), seed=config.seed),
    )


def evaluate_both(
    config: DemoConfig, servers: list[str], model: str, adapter: Path | None, out: Path
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The held-out evaluation ~greedy (into ``out``) and, unless ``--no-sampled-eval``, sampled
    at the PPO temperature (into ``sampled_path(out)``), on the same seeds."""
    greedy = evaluate(evaluation_config(config, servers, model, adapter, out))
    if not config.sampled_eval:
        return greedy, None
    sampled = evaluation_config(config, servers, model, adapter, sampled_path(out), config.temperature)
    return greedy, evaluate(sampled)


def sampled_path(out: Path) -> Path:
    """Where ``evaluate_both`` writes the sampled evaluation beside ``out``."""
    return out.with_name(f"{out.stem}_sampled{out.suffix}")


def held_out(config: DemoConfig, greedy: dict[str, Any], sampled: dict[str, Any] | None) -> str:
    """Both held-out results in one line: ~greedy answers, and sampled as in training (when it
    ran); and the greedy CoTs' fact accuracy and agreement with the expert's moves."""
    facts = greedy.get("fact_accuracy")
    agreement = greedy.get("expert_agreement")
    return (
        f"{greedy['success_rate']:.1%} (temperature {config.eval_temperature:g})"
        + (
            ""
            if sampled is None
            else f", {sampled['success_rate']:.1%} sampling at {config.temperature:g} as in training"
        )
        + ("" if facts is None else f"; facts stated correctly {facts:.1%}")
        + ("" if agreement is None else f", the expert's move {agreement:.1%}")
    )


def rate(result: dict[str, Any] | None, key: str = "success_rate") -> Any:
    """``result[key]``, or None for an evaluation that did not run."""
    return None if result is None else result[key]


def start_env_servers(
    env: str, count: int, work: Path, processes: list[subprocess.Popen[bytes]]
) -> list[str]:
    """Start ``count`` env servers for ``env`` on free loopback ports; returns their addresses.

    The processes are appended to ``processes`` (stop them with ``stop_all``); each logs to
    ``work/logs/env-N.log``.
    """
    servers = []
    for index in range(count):
        ready = work / f"env-{index}.port"
        ready.unlink(missing_ok=True)
        log = work / "logs" / f"env-{index}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        server_config = ServerConfig(env=env, host="127.0.0.1", port=0, ready_file=ready, log_format="text")
        server = start(f"env-{index}", [*command("env-server"), *to_argv(server_config)], log)
        processes.append(server.popen)
        servers.append(f"127.0.0.1:{server.wait_ready(ready, timeout=300)}")
    return servers


def agent_servers(
    config: DemoConfig, servers: list[str], sessions: int, trainer: str | None = None
) -> ServersConfig:
    """What an agent-client of the demo plays on (evaluations, PPO): ``servers``, every episode
    reset with the demo's reset options, as its demonstrations were."""
    return ServersConfig(
        server=servers, sessions=sessions, trainer=trainer, reset_option=list(config.reset_option or [])
    )


def demonstrations(config: DemoConfig, out: Path) -> DemosConfig:
    """`visact demos` of the demo's first stage: the game's expert, with the demo's reset options
    (ALFWorld's: its searching demonstrator), into ``out``."""
    assert config.demo_episodes is not None, "with_game_settings fills it in"
    return DemosConfig(
        env=config.env,
        episodes=config.demo_episodes,
        out=out,
        cot=config.cot,
        seed=config.seed,
        reset_option=list(config.reset_option or []),
    )


def warm_start(config: DemoConfig, demos: Path, out: Path) -> SFTConfig:
    """`trainer sft` of the demo's second stage: on ``demos``, into ``out``."""
    assert config.sft_steps is not None, "with_game_settings fills it in"
    return SFTConfig(
        data=demos,
        model=str(config.model),
        out=out,
        steps=config.sft_steps,
        lr=config.sft_lr,
        vision_warmup_steps=config.sft_vision_warmup_steps,
        symbol_words=str(config.sft_symbol_words or ""),
        prefill_answer=bool(config.prefill_answer),
        seed=config.seed,
    )


def made_by(stage: DemosConfig | SFTConfig) -> dict[str, list[str]]:
    """What a kept stage's manifest records of how it was made: its command's arguments; ``--keep``
    reuses the stage only when they are the same."""
    name = "visact demos" if isinstance(stage, DemosConfig) else "trainer sft"
    return {name: to_argv(stage)}


def reusable(directory: Path, required: str, about: dict[str, Any] | None = None) -> bool:
    """Whether a stage's output of an earlier run (kept with ``--keep``) is complete and intact
    (and, with ``about``, made the same way); says why not when there is one that is not."""
    problem = entry_problem(directory, required=[required], about=about)
    if problem is not None and directory.exists():
        print(f"   not reusing {directory}: {problem}", flush=True)
    return problem is None


def run_demo(config: DemoConfig) -> dict[str, Any]:
    config = with_game_settings(config)
    work = config.workdir.resolve()
    if work.exists() and not config.keep:
        shutil.rmtree(work)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timings: dict[str, float] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with Stage("1. demonstrations from the expert") as stage:
            demos = work / "demos" / f"{config.env}.jsonl"
            demos_config = demonstrations(config, demos)
            demos_kept = reusable(demos.parent, demos.name, made_by(demos_config))
            if not demos_kept:
                shutil.rmtree(demos.parent, ignore_errors=True)
                run_checked([*command("visact"), "demos", *to_argv(demos_config)])
                write_manifest(demos.parent, made_by(demos_config))
        timings["demos"] = time.monotonic() - stage.started

        with Stage("2. supervised warm start (SFT)") as stage:
            sft_dir = work / "sft"
            model = sft_dir / "model"
            sft = warm_start(config, demos, sft_dir)
            model_kept = demos_kept and reusable(model, "config.json", made_by(sft))  # on these demos
            if not model_kept:
                shutil.rmtree(model, ignore_errors=True)
                run_checked([*command("trainer"), "sft", *to_argv(sft)])
                write_manifest(model, made_by(sft))
        timings["sft"] = time.monotonic() - stage.started

        with Stage(f"3. env servers ({config.env}) and the held-out evaluation after SFT") as stage:
            servers = start_env_servers(config.env, config.env_servers, work, processes)
            before_file = work / "eval_after_sft.json"
            sampled_file = sampled_path(before_file)
            if model_kept and before_file.exists() and (sampled_file.exists() or not config.sampled_eval):
                before = dict(json.loads(before_file.read_text()))  # of this SFT model
                before_sampled = dict(json.loads(sampled_file.read_text())) if config.sampled_eval else None
            else:
                before, before_sampled = evaluate_both(config, servers, str(model), None, before_file)
            print(f"   held-out success after SFT: {held_out(config, before, before_sampled)}", flush=True)
        timings["eval_sft"] = time.monotonic() - stage.started

        with Stage("4. PPO: trainer serve and agent clients") as stage:
            run_dir = work / "ppo"
            adapter = ppo(config, servers, model, run_dir, logs, processes)
        timings["ppo"] = time.monotonic() - stage.started

        with Stage("5. the held-out evaluation after PPO") as stage:
            after, after_sampled = evaluate_both(
                config, servers, str(model), adapter, work / "eval_after_ppo.json"
            )
            print(f"   held-out success after PPO: {held_out(config, after, after_sampled)}", flush=True)
        timings["eval_ppo"] = time.monotonic() - stage.started
    finally:
        stop_all(processes)

    from visact.orchestration.plots import learning_curve
    from visact.trainer.metrics import read_metrics, trailing_success

    rows = read_metrics(run_dir)
    plot = learning_curve(
        rows, work / "learning_curve.png", title=f"visact demo: {config.env}", before=before, after=after
    )
    summary = {
        "env": config.env,
        "success_after_sft": before["success_rate"],
        "success_after_sft_ci95": before["success_ci95"],
        "success_after_ppo": after["success_rate"],
        "success_after_ppo_ci95": after["success_ci95"],
        "valid_action_rate_after_ppo": after["valid_action_rate"],
        # the facts the greedy CoTs state, against the env's truth (None: action only)
        "fact_accuracy_after_sft": before.get("fact_accuracy"),
        "fact_accuracy_after_ppo": after.get("fact_accuracy"),
        # the same held-out seeds, sampled at the PPO temperature (what the agents trained with)
        "sampling_temperature": config.temperature,
        # (None with --no-sampled-eval)
        "success_after_sft_sampled": rate(before_sampled),
        "success_after_ppo_sampled": rate(after_sampled),
        "success_after_ppo_sampled_ci95": rate(after_sampled, "success_ci95"),
        "ppo_updates": len(rows),
        "training_success_last_update": rows[-1]["charts/success_rate"] if rows else None,
        "training_success_last_200_episodes": trailing_success(rows, 200),
        # held-out success by the value of each info key the env reports (ALFWorld: task_type)
        "breakdown_after_sft": before.get("breakdown", {}),
        "breakdown_after_ppo": after.get("breakdown", {}),
        "eval_episodes": config.eval_episodes,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "learning_curve": str(plot),
        "config": {k: str(v) for k, v in asdict(config).items()},
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def trainer_config(config: DemoConfig, model: Path, run_dir: Path, ready: Path) -> TrainerConfig:
    """`trainer serve` of the demo's PPO stage: ``model`` on a free loopback port written to
    ``ready``, checkpoints in ``run_dir``, the learning rate decaying to a tenth over the run."""
    assert config.ppo_lr is not None and config.format_penalty is not None, "with_game_settings fills them in"
    assert config.max_new_tokens is not None and config.fact_reward is not None, "with_game_settings too"
    assert config.advantage_std_floor is not None, "with_game_settings as well"
    assert config.ppo_updates is not None and config.steps_per_update is not None, "and these"
    minibatch = max(8, config.steps_per_update // 4)
    return TrainerConfig(
        network=NetworkConfig(host="127.0.0.1", port=0, ready_file=ready),
        vlm=VLMConfig(model=str(model)),
        lora=LoraConfig(
            r=config.lora_r,
            alpha=2 * config.lora_r,
            vision=config.engine != "vllm",  # vLLM adapts the language model only
            projector=config.engine != "vllm",
        ),
        ppo=PPOConfig(
            ppo_epochs=config.ppo_epochs,
            minibatch_size=minibatch,
            micro_batch_size=min(16, minibatch),
            lr=config.ppo_lr,
            lr_updates=config.ppo_updates,
            lr_min=config.ppo_lr / 10,
            max_grad_norm=1.0,
            lambda_cot=config.lambda_cot,
            value_lr_scale=config.value_lr_scale,
            target_kl=config.target_kl,
            kl_coef=config.kl_coef,
            normalize_advantages=config.normalize_advantages,
            advantage_std_floor=config.advantage_std_floor,
            advantage=config.advantage,
        ),
        rollout=RolloutConfig(
            steps_per_update=config.steps_per_update,
            group_size=config.group_size,
            format_penalty=config.format_penalty,
            fact_reward=config.fact_reward,
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens,
            cot=config.cot,
            prefill_answer=bool(config.prefill_answer),
        ),
        run=RunConfig(
            checkpoint_dir=run_dir,
            max_updates=config.ppo_updates,
            checkpoint_every=5,
            seed=config.seed,
            threads=config.threads,
        ),
    )


def ppo(
    config: DemoConfig,
    servers: list[str],
    model: Path,
    run_dir: Path,
    logs: Path,
    processes: list[subprocess.Popen[bytes]],
) -> Path:
    """Run trainer serve + agents to --ppo-updates with a progress bar; returns the final adapter."""
    from visact.progress import progress_bar

    assert config.ppo_updates is not None, "with_game_settings fills it in"
    from visact.trainer.metrics import read_metrics

    shutil.rmtree(run_dir, ignore_errors=True)
    ready = run_dir.parent / "trainer.port"
    ready.unlink(missing_ok=True)
    trainer_log = logs / "trainer.log"
    trainer_process = start(
        "trainer",
        [*command("trainer"), "serve", *to_argv(trainer_config(config, model, run_dir, ready))],
        trainer_log,
    )
    trainer = trainer_process.popen
    processes.append(trainer)
    trainer_address = f"127.0.0.1:{trainer_process.wait_ready(ready, timeout=300)}"
    for index in range(config.agents):
        agent = AgentConfig(
            servers=agent_servers(config, servers, sessions=config.sessions, trainer=trainer_address),
            policy=PolicyConfig(model=str(model), engine=config.engine),
            sampling=SamplingConfig(action_choice=config.action_choice),
            run=AgentRunConfig(name=f"agent-{index}", threads=config.threads, seed=config.seed + index),
        )
        processes.append(
            start(
                f"agent-{index}", [*command("agent-client"), *to_argv(agent)], logs / f"agent-{index}.log"
            ).popen
        )
    deadline = time.monotonic() + config.ppo_minutes * 60 if config.ppo_minutes else None
    with progress_bar(config.ppo_updates, "PPO updates", "update") as bar:
        while trainer.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                print(f"\n   --ppo-minutes {config.ppo_minutes} reached: stopping the trainer", flush=True)
                trainer.send_signal(signal.SIGTERM)  # it checkpoints and exits cleanly
                deadline = None
            rows = read_metrics(run_dir)
            if len(rows) > bar.n:
                bar.update(len(rows) - bar.n)
                bar.set_postfix(
                    success=f"{rows[-1]['charts/success_rate']:.0%}",
                    valid=f"{rows[-1]['charts/valid_action_rate']:.0%}",
                )
            for process in processes[-config.agents :]:
                if process.poll() is not None:
                    raise RuntimeError(f"an agent exited early; see {logs}")
            time.sleep(1.0)
    if trainer.returncode != 0:
        raise RuntimeError(f"trainer serve failed (exit {trainer.returncode}); see {trainer_log}")
    for process in processes[-config.agents :]:
        process.send_signal(signal.SIGTERM)
    status = json.loads((run_dir / "status.json").read_text())
    return run_dir / "weights" / f"v{status['latest_version']:06d}" / "adapter.safetensors"


def breakdown_table(key: str, after_sft: dict[str, Any], after_ppo: dict[str, Any]) -> str:
    """Held-out success by the value of ``key`` after SFT and after PPO, with 95% intervals."""

    def cell(group: dict[str, Any] | None) -> str:
        if group is None:
            return "-"
        low, high = group["success_ci95"]
        return f"{group['successes']}/{group['episodes']} {group['success_rate']:.0%} ({low:.0%}-{high:.0%})"

    width = max([len(key), *map(len, after_ppo), *map(len, after_sft)])
    lines = [f"{key:<{width}}  {'after SFT':<22}  after PPO"]
    for value in sorted({*after_sft, *after_ppo}):
        lines.append(f"{value:<{width}}  {cell(after_sft.get(value)):<22}  {cell(after_ppo.get(value))}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from visact.configcli import parse_config

    config = parse_config(DemoConfig, argv, prog="visact demo", description=__doc__.splitlines()[0])
    # SIGTERM unwinds like Ctrl-C, so the stages' processes are stopped too
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    summary = run_demo(config)
    print("\n== result")
    print(
        f"held-out success after SFT: {summary['success_after_sft']:.1%}   "
        f"after PPO: {summary['success_after_ppo']:.1%}   ({summary['minutes']} min)"
    )
    if summary["success_after_ppo_sampled"] is not None:
        print(
            f"sampling at {summary['sampling_temperature']:g} as in training: "
            f"{summary['success_after_sft_sampled']:.1%} -> {summary['success_after_ppo_sampled']:.1%}"
        )
    for key, groups in summary["breakdown_after_ppo"].items():
        print(breakdown_table(key, summary["breakdown_after_sft"].get(key, {}), groups))
    print(f"learning curve: {summary['learning_curve']}")
    print(f"summary: {config.workdir / 'summary.json'}")
    return 0
