"""What an agent-client runs: held-out evaluation, play, and training with a trainer.

``connect`` and ``make_policy`` turn an ``AgentConfig`` into env clients and a policy;
``rollout_for`` is the one place a Rollout is built from it; ``play_seeds`` plays a fixed list
of seeds once (held-out evaluation, recording demonstrations).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from visact.agent.config import AgentConfig
from visact.agent.evaluation import EVAL_SEED_BASE, EvalSummary, summarize
from visact.agent.parsing import BadAnswerPolicy
from visact.agent.policy import OraclePolicy, Policy, RandomPolicy, VLMPolicy
from visact.agent.rollout import Rollout, SeedSchedule
from visact.env_server.client import EnvClient
from visact.wire.records import Episode

log = logging.getLogger("agent")


def connect(config: AgentConfig) -> list[EnvClient]:
    """One client per --server, each checked to answer."""
    clients = []
    for address in config.servers.server:
        client = EnvClient(
            address,
            token=config.servers.token,
            timeout=config.servers.timeout,
            tls_ca=config.servers.tls_ca,
            tls_cert=config.servers.tls_cert,
            tls_key=config.servers.tls_key,
        )
        client.wait_ready(timeout=config.servers.timeout)
        clients.append(client)
    return clients


def make_policy(config: AgentConfig) -> Policy:
    """The oracle, a random player, or the VLM the config names."""
    if config.policy.oracle:
        return OraclePolicy(cot=config.sampling.cot)
    if config.policy.random_policy:
        return RandomPolicy(seed=config.run.seed)
    import torch

    from visact.model.engines import make_engine

    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    engine = make_engine(
        config.policy.engine,
        config.policy.model,
        dtype=config.policy.dtype,
        device=config.policy.device,
        adapter=config.policy.adapter,
        attn_implementation=config.policy.attn_implementation,
        seed=config.run.seed,
        threads=config.run.threads,
    )
    return VLMPolicy(
        engine,
        cot=config.sampling.cot,
        temperature=config.sampling.temperature,
        max_new_tokens=config.sampling.max_new_tokens,
        seed=config.run.seed,
        action_choice=config.sampling.action_choice,
        prefill_answer=config.sampling.prefill_answer,
    )


def rollout_for(config: AgentConfig, clients: list[EnvClient], policy: Policy, **overrides: Any) -> Rollout:
    """The rollout ``config`` describes over ``clients`` (``overrides``: Rollout's own arguments)."""
    settings: dict[str, Any] = {
        "sessions": config.servers.sessions,
        "bad_answer": BadAnswerPolicy(config.sampling.format_penalty),
        "want_expert": config.policy.oracle,
        "label": config.run.name,
        "seed": config.run.seed,
        "check_facts": config.sampling.cot and config.sampling.check_facts,
        "reset_options": config.servers.reset_options,
    }
    settings.update(overrides)
    return Rollout(clients, policy, **settings)


def play_seeds(
    config: AgentConfig,
    clients: list[EnvClient],
    policy: Policy,
    seeds: Sequence[int],
    on_episode: Callable[[Episode], None],
    **overrides: Any,
) -> None:
    """Play one episode from each of ``seeds`` (at most one session per seed) and close the rollout."""
    rollout = rollout_for(
        config, clients, policy, **{"sessions": min(config.servers.sessions, len(seeds)), **overrides}
    )
    try:
        rollout.run(SeedSchedule.fixed(seeds), on_episode)
    finally:
        rollout.close()


def evaluate(config: AgentConfig, policy: Policy | None = None) -> EvalSummary:
    """Play ``config.episodes`` held-out seeds and summarize them."""
    clients = connect(config)
    policy = policy or make_policy(config)
    episodes: list[Episode] = []
    bar = _progress(config.eval.episodes, "eval episodes", config.run.progress)
    seeds = range(EVAL_SEED_BASE, EVAL_SEED_BASE + config.eval.episodes)
    started = time.monotonic()

    def on_episode(episode: Episode) -> None:
        episodes.append(episode)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(success=f"{sum(e.success for e in episodes) / len(episodes):.0%}")

    try:
        play_seeds(config, clients, policy, seeds, on_episode, label=f"{config.run.name}:eval")
    finally:
        if bar is not None:
            bar.close()
        for client in clients:
            client.close()
    envs = sorted({e.env for e in episodes}) or [c.address for c in clients]
    summary = summarize(
        episodes,
        env=",".join(envs),
        policy=policy.name,
        seconds=time.monotonic() - started,
        policy_version=policy.version,
        by=config.eval.by,
    )
    if isinstance(policy, VLMPolicy) and policy.action_choice == "likeliest":
        summary.actions_changed_rate = policy.choice_stats.changed_rate
    return summary


def play(config: AgentConfig, stop: threading.Event) -> int:
    """Play training episodes until ``stop``, logging how they go (no trainer)."""
    clients = connect(config)
    policy = make_policy(config)
    rollout = rollout_for(config, clients, policy)
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
                    "fact_accuracy": round(stats.facts.accuracy, 3),
                    "steps_per_s": round(stats.steps / max(stats.seconds, 1e-9), 2),
                },
            )

    try:
        rollout.run(SeedSchedule(rng_seed=config.run.seed), on_episode, stop=stop)
    finally:
        rollout.close()
    return 0


def train(config: AgentConfig, stop: threading.Event) -> int:
    """Roll out with the trainer's newest weights and ship every finished episode to it, until ``stop``."""
    if config.policy.oracle or config.policy.random_policy:
        raise ValueError("training needs a model policy; drop --oracle/--random-policy")
    from visact.agent.trainer_link import TrainerLink  # torch: not for evaluation or demonstrations

    clients = connect(config)
    policy = make_policy(config)
    assert isinstance(policy, VLMPolicy)
    environments = sorted({c.describe().name for c in clients})
    link = TrainerLink(config, policy, environments, stop)
    link.start()
    link.wait_for_first_weights()  # start from the trainer's newest weights
    rollout = rollout_for(
        config,
        clients,
        policy,
        bad_answer=BadAnswerPolicy(link.format_penalty),  # the trainer's
        bootstrap=True,  # the learner bootstraps values of truncated episodes
        group_size=link.group_size,
        check_facts=policy.cot and config.sampling.check_facts,  # fact accuracy per update, beside success
    )
    try:
        rollout.run(
            SeedSchedule(rng_seed=config.run.seed), link.submit, stop=stop, between_rounds=link.between_rounds
        )
    finally:
        rollout.close()
        link.close()
    return 0


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from visact.progress import progress_bar

    return progress_bar(total, desc, "ep")
