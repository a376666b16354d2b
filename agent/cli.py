"""agent-client: turn a VLM into an agent of any visact environment server.

    agent-client eval --server host:port --episodes 200 [--oracle] [--json out.json]
    agent-client [run] --server host:port [--server ...] --sessions 16 [--trainer host:port]

``eval`` plays held-out seeds and reports success (95% interval), return,
valid-action rate, CoT length and speed. ``run`` plays training episodes: with
``--trainer`` it ships them to the trainer and follows its weights, without it
it only logs what it does.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from agent.config import AgentConfig
from agent.engines.base import EngineError
from agent.evaluation import EVAL_SEED_BASE, EvalSummary, summarize
from agent.parsing import BadAnswerPolicy
from agent.policy import OraclePolicy, Policy, RandomPolicy, VLMPolicy
from agent.records import Episode
from agent.rollout import Rollout, SeedSchedule
from env_server.client import EnvCallError, EnvClient
from visact.configcli import parse_config
from visact.logs import setup_logging

log = logging.getLogger("agent")

COMMANDS = ("run", "eval")


def connect(config: AgentConfig) -> list[EnvClient]:
    """One client per --server, each checked to answer."""
    clients = []
    for address in config.server:
        client = EnvClient(
            address,
            token=config.token,
            timeout=config.timeout,
            tls_ca=config.tls_ca,
            tls_cert=config.tls_cert,
            tls_key=config.tls_key,
        )
        client.wait_ready(timeout=config.timeout)
        clients.append(client)
    return clients


def make_policy(config: AgentConfig) -> Policy:
    """The oracle, a random player, or the VLM the config names."""
    if config.oracle:
        return OraclePolicy(cot=config.cot)
    if config.random_policy:
        return RandomPolicy(seed=config.seed)
    import torch

    from agent.engines import make_engine

    if config.threads:
        torch.set_num_threads(config.threads)
    return VLMPolicy(
        make_engine(config),
        cot=config.cot,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
    )


def evaluate(config: AgentConfig, policy: Policy | None = None) -> EvalSummary:
    """Play ``config.episodes`` held-out seeds and summarize them."""
    clients = connect(config)
    policy = policy or make_policy(config)
    rollout = Rollout(
        clients,
        policy,
        sessions=min(config.sessions, config.episodes),
        bad_answer=BadAnswerPolicy(config.format_penalty),
        want_expert=config.oracle,
        label=f"{config.name}:eval",
        seed=config.seed,
    )
    episodes: list[Episode] = []
    bar = _progress(config.episodes, "eval episodes", config.progress)
    seeds = SeedSchedule.fixed(range(EVAL_SEED_BASE, EVAL_SEED_BASE + config.episodes))
    started = time.monotonic()

    def on_episode(episode: Episode) -> None:
        episodes.append(episode)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(success=f"{sum(e.success for e in episodes) / len(episodes):.0%}")

    try:
        rollout.run(seeds, on_episode)
    finally:
        if bar is not None:
            bar.close()
        rollout.close()
        for client in clients:
            client.close()
    envs = sorted({e.env for e in episodes}) or [c.address for c in clients]
    return summarize(
        episodes,
        env=",".join(envs),
        policy=policy.name,
        seconds=time.monotonic() - started,
        policy_version=policy.version,
        by=config.by,
    )


def run_eval(config: AgentConfig) -> int:
    summary = evaluate(config)
    print("\n".join(summary.lines()))
    if config.json:
        config.json.parent.mkdir(parents=True, exist_ok=True)
        config.json.write_text(json.dumps(summary.to_dict(), indent=2))
        print(f"wrote {config.json}")
    return 0


def run_agent(config: AgentConfig) -> int:
    """Play training episodes until SIGTERM/SIGINT; with --trainer, learn with it."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if config.trainer:
        from agent.trainer_link import run_with_trainer

        return run_with_trainer(config, stop)
    clients = connect(config)
    policy = make_policy(config)
    rollout = Rollout(
        clients,
        policy,
        sessions=config.sessions,
        bad_answer=BadAnswerPolicy(config.format_penalty),
        want_expert=config.oracle,
        label=config.name,
        seed=config.seed,
    )
    wins: list[bool] = []

    def on_episode(episode: Episode) -> None:
        wins.append(episode.success)
        if len(wins) % 20 == 0:
            stats = rollout.stats
            log.info(
                "episodes",
                extra={
                    "episodes": stats.episodes,
                    "success_last_20": sum(wins[-20:]) / 20,
                    "valid_rate": round(stats.parse.valid_rate, 3),
                    "steps_per_s": round(stats.steps / max(stats.seconds, 1e-9), 2),
                },
            )

    try:
        rollout.run(SeedSchedule(rng_seed=config.seed), on_episode, stop=stop)
    finally:
        rollout.close()
    return 0


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from visact.progress import progress_bar

    return progress_bar(total, desc, "ep")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "run"
    config = parse_config(
        AgentConfig, args, prog=f"agent-client {command}", description=__doc__.splitlines()[0]
    )
    setup_logging(config.log_format, config.log_level)
    try:
        return run_eval(config) if command == "eval" else run_agent(config)
    except EnvCallError as exc:
        log.error("env server call failed: %s", exc)
        return 1
    except EngineError as exc:
        log.error("the %s engine cannot run this: %s", config.engine, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
