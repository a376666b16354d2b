"""Grouped rollouts (the trainer's --group-size, for GRPO), in process against real env servers:
the sessions of a group start each episode together from one seed, their episodes come out
together once all of them ended, and a group that lost an episode to a dying server comes out
not at all (its seed is played again by a whole group).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import pytest

from tests.envs import CounterEnv
from visact.agent.policy import Answer, PolicyInput, RandomPolicy
from visact.agent.rollout import Rollout, SeedSchedule
from visact.env_server.client import EnvClient
from visact.env_server.server import RunningServer, ServerConfig, start_server
from visact.wire.records import Episode

SEEDS = 12


def serve(port: int = 0) -> RunningServer:
    config = ServerConfig(port=port, host="127.0.0.1", max_sessions=16, idle_timeout=60, grace=0)
    return start_server(config, env_factory=CounterEnv)


class CountingPolicy(RandomPolicy):
    """A random player that counts its rounds (to tell when each episode came out)."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.rounds = 0

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]:
        self.rounds += 1
        return super().act(inputs)


def play(servers: list[RunningServer], policy: CountingPolicy, sessions: int, group_size: int) -> tuple:
    clients = [EnvClient(f"127.0.0.1:{s.port}", timeout=5) for s in servers]
    rollout = Rollout(clients, policy, sessions=sessions, group_size=group_size, label="grouped")
    delivered: list[tuple[int, Episode]] = []
    try:
        rollout.run(SeedSchedule.fixed(range(SEEDS)), lambda e: delivered.append((policy.rounds, e)))
    finally:
        rollout.close()
        for client in clients:
            client.close()
    return delivered, rollout.stats


def test_a_group_plays_one_seed_and_its_episodes_come_out_together() -> None:
    servers = [serve(), serve()]
    try:
        delivered, stats = play(servers, CountingPolicy(), sessions=6, group_size=3)
    finally:
        for running in servers:
            running.drain(grace=0)
    seeds = [episode.seed for _, episode in delivered]
    assert Counter(seeds) == {seed: 3 for seed in range(SEEDS)}  # every seed, by a whole group
    for start in range(0, len(delivered), 3):  # groups come out whole, in one round, one after another
        group = delivered[start : start + 3]
        assert len({e.seed for _, e in group}) == 1 and len({r for r, _ in group}) == 1
        assert len({e.session for _, e in group}) == 3  # three sessions, spread over both servers
    lengths = [len(e.steps) for _, e in delivered]
    assert len(set(lengths)) > 1, "every episode as long: waiting for a group's slowest was not exercised"
    assert stats.groups_dropped == 0 and stats.episodes == 3 * SEEDS


def test_sessions_that_do_not_fill_whole_groups_are_refused() -> None:
    running = serve()
    client = EnvClient(f"127.0.0.1:{running.port}", timeout=5)
    try:
        with pytest.raises(ValueError, match="--sessions 5 is not a multiple of the group size 2"):
            Rollout([client], CountingPolicy(), sessions=5, group_size=2)
    finally:
        client.close()
        running.drain(grace=0)


class KillOnce(CountingPolicy):
    """After round 2's answers, server "a" stops at once (its episodes in flight fail to step);
    a new one comes up on its port after round 5."""

    def __init__(self, servers: dict[str, RunningServer]) -> None:
        super().__init__()
        self.servers = servers

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]:
        time.sleep(0.02)  # a generation takes time: the lost sessions' backoff ends mid-run
        answers = super().act(inputs)
        if self.rounds == 2:
            self.servers["a"].server.stop(grace=None)
        if self.rounds == 5:
            self.servers["a"] = serve(self.servers["a"].port)
        return answers


def test_a_group_that_lost_an_episode_is_dropped_whole_and_its_seed_replayed() -> None:
    servers = {"a": serve(), "b": serve()}
    try:
        # two slots per group, one on each server: every group loses a member when "a" dies
        delivered, stats = play(list(servers.values()), KillOnce(servers), sessions=4, group_size=2)
    finally:
        for running in servers.values():
            running.drain(grace=0)
    assert stats.episodes_lost >= 1 and stats.groups_dropped >= 1
    assert Counter(e.seed for _, e in delivered) == {seed: 2 for seed in range(SEEDS)}
