"""The agent's rollout when an env server dies mid-episode and comes back, in process and exact:
two servers, a rollout over both with a fixed list of seeds (an evaluation), one server stopped
while episodes are in flight on it and started again later on the same port.

Every seed is played to the end exactly once (the lost ones are handed out again), every episode
that comes out is whole (steps 1..n, ended exactly at the last), the other server carries on
meanwhile, and the restarted server is used again. (`test_process_faults.py` does the same with
real processes and SIGKILL, against a trainer.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.envs import CounterEnv
from visact.agent.policy import Answer, Policy, PolicyInput, RandomPolicy
from visact.agent.rollout import Rollout, RolloutStats, SeedSchedule
from visact.env_server.client import EnvCallError, EnvClient, ResetCall, ResetResult, StepCall, StepResult
from visact.env_server.server import RunningServer, ServerConfig, start_server
from visact.wire.records import Episode

SEEDS = 40
KILL_AT, RESTART_AT = 3, 9  # generation rounds


def serve(port: int = 0) -> RunningServer:
    config = ServerConfig(port=port, host="127.0.0.1", max_sessions=16, idle_timeout=60, grace=0)
    return start_server(config, env_factory=CounterEnv)


def play(
    clients: list[EnvClient],
    policy: Policy,
    servers: dict[str, RunningServer],
    seeds: range,
    on_episode: Callable[[Episode], None],
    max_episodes: int | None = None,
) -> RolloutStats:
    """Play ``seeds`` over ``clients``, 2 sessions per server, then close the clients and stop
    ``servers`` (as they are at the end: a restarted one included)."""
    rollout = Rollout(clients, policy, sessions=2 * len(clients), label="eval")
    try:
        return rollout.run(SeedSchedule.fixed(seeds), on_episode, max_episodes=max_episodes)
    finally:
        rollout.close()
        for client in clients:
            client.close()
        for running in servers.values():
            running.drain(grace=0)


class FaultyWorld(RandomPolicy):
    """A random player whose rounds also drive the faults: server A dies after round KILL_AT's
    answers (its episodes in flight then fail to step) and is back after round RESTART_AT."""

    def __init__(self, servers: dict[str, RunningServer]) -> None:
        super().__init__(seed=0)
        self.servers = servers
        self.rounds = 0
        self.events: list[tuple[int, str]] = []

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]:
        time.sleep(0.02)  # a generation takes time: the sessions' backoff (0.5 s) ends mid-run
        answers = super().act(inputs)
        self.rounds += 1
        if self.rounds == KILL_AT:
            self.servers["a"].server.stop(grace=None)  # gone at once, sessions and all
            self.events.append((self.rounds, "a killed"))
        if self.rounds == RESTART_AT:
            self.servers["a"] = serve(self.servers["a"].port)  # a new server on the same port
            self.events.append((self.rounds, "a restarted"))
        return answers


def test_a_server_dying_mid_episode_costs_no_seed_and_no_half_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.rollout")
    servers = {"a": serve(), "b": serve()}
    address_a = f"127.0.0.1:{servers['a'].port}"
    clients = [EnvClient(f"127.0.0.1:{s.port}", timeout=5) for s in servers.values()]
    world = FaultyWorld(servers)
    finished: list[tuple[int, Episode]] = []  # (round it finished in, episode)
    stats = play(clients, world, servers, range(SEEDS), lambda e: finished.append((world.rounds, e)))

    assert world.events == [(KILL_AT, "a killed"), (RESTART_AT, "a restarted")]
    # every seed played to its end exactly once: the lost episodes' seeds were played again
    assert sorted(e.seed for _, e in finished) == list(range(SEEDS))
    # every episode whole: steps 1..n, ended at the last step and only there
    for _, episode in finished:
        steps = episode.steps
        assert [s.episode_step for s in steps] == list(range(1, len(steps) + 1)), episode.session
        assert all(not (s.terminated or s.truncated) for s in steps[:-1])
        assert steps[-1].terminated or steps[-1].truncated
    # the episodes in flight on A were lost, mid-episode, and only those
    lost: list[Any] = [r for r in caplog.records if r.getMessage() == "episode lost"]
    assert lost and stats.episodes_lost == len(lost)
    assert all(r.session.startswith(address_a) for r in lost)
    assert any(r.steps > 0 for r in lost)
    retried: list[Any] = [r for r in caplog.records if r.getMessage() == "env call failed, retrying"]
    assert retried and all(r.session.startswith(address_a) for r in retried)
    # B carried on while A was down; A was used again once back
    down = [e for n, e in finished if KILL_AT < n <= RESTART_AT]
    assert down and all(not e.session.startswith(address_a) for e in down)
    assert any(e.session.startswith(address_a) for n, e in finished if n > RESTART_AT)


class DiesBeforeItsSecondReset(EnvClient):
    """A client whose server stops just before the client's second batch of resets: the kill falls
    between episodes, so no episode is in flight to lose."""

    def __init__(self, running: RunningServer) -> None:
        super().__init__(f"127.0.0.1:{running.port}", timeout=5)
        self.running, self.resets = running, 0

    def batch(self, calls: Sequence[ResetCall | StepCall]) -> list[ResetResult | StepResult | EnvCallError]:
        if calls and isinstance(calls[0], ResetCall):
            self.resets += 1
            if self.resets == 2:
                self.running.server.stop(grace=None)
        return super().batch(calls)


def test_a_server_dying_between_episodes_is_reported_and_its_seeds_played_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.rollout")
    servers = {"a": serve(), "b": serve()}
    dying = DiesBeforeItsSecondReset(servers["a"])
    clients = [dying, EnvClient(f"127.0.0.1:{servers['b'].port}", timeout=5)]
    finished: list[Episode] = []
    play(clients, RandomPolicy(seed=0), servers, range(12), finished.append, max_episodes=12)

    assert dying.resets >= 2  # A died between episodes, after its first ones ended
    assert sorted(e.seed for e in finished) == list(range(12))  # its refused resets' seeds played on B
    assert [r for r in caplog.records if r.getMessage() == "episode lost"] == []
    retried: list[Any] = [r for r in caplog.records if r.getMessage() == "env call failed, retrying"]
    assert retried and all(r.session.startswith(dying.address) for r in retried)
    assert {r.error for r in retried} == {"UNAVAILABLE"}
