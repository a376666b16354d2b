"""A slow agent next to a fast one, both real Rollouts with real TrainerLinks (tiny VLM) against an
in-process trainer whose "learner" publishes a new version for every few steps it receives.

The staleness bound: no rollout round starts with weights more than ``max_policy_lag`` versions
older than the newest the agent has heard of; the slow agent is held back until it has caught
up (it is, several times). The fast agent is not starved: it is never held back by the slow one,
its episodes are all accepted, and it plays many rounds while the slow one plays a few.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.envs import CounterEnv
from tests.reliability.fake_trainer import FakeTrainer
from visact.agent.config import AgentConfig, AgentRunConfig, PolicyConfig, ServersConfig
from visact.agent.parsing import BadAnswerPolicy
from visact.agent.policy import Answer, PolicyInput, VLMPolicy
from visact.agent.rollout import Rollout, SeedSchedule
from visact.agent.trainer_link import TrainerLink
from visact.env_server.client import EnvClient
from visact.env_server.server import ServerConfig, start_server
from visact.model.loading import load_vlm

MAX_POLICY_LAG = 1
STEPS_PER_UPDATE = 4


class SlowPolicy(VLMPolicy):
    """The tiny VLM, taking ``delay`` extra seconds per batched generation."""

    def __init__(self, delay: float) -> None:
        super().__init__(load_vlm("tiny", device="cpu"))
        self.delay = delay

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]:
        time.sleep(self.delay)
        return super().act(inputs)


@dataclass
class Round:
    before: int  # the version the agent ran when the round was due
    known: int  # the newest version it had heard of then
    after: int  # the version it started the round with


@dataclass
class AgentRun:
    name: str
    link: TrainerLink
    rounds: list[Round] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def held_back(self) -> int:
        return sum(r.before < r.known - MAX_POLICY_LAG for r in self.rounds)


def test_a_slow_agent_is_held_to_the_staleness_bound_and_the_fast_one_is_not_starved(
    tmp_path: Path,
) -> None:
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    trainer = FakeTrainer(tmp_path / "weights", max_policy_lag=MAX_POLICY_LAG)
    env = start_server(
        ServerConfig(port=0, host="127.0.0.1", max_sessions=8, idle_timeout=60), env_factory=CounterEnv
    )
    stop = threading.Event()
    published = [1]
    trainer.publish(1)

    def learn() -> None:  # a version per STEPS_PER_UPDATE steps, from whoever sent them
        while not stop.is_set():
            if trainer.hub.take_batch(STEPS_PER_UPDATE, timeout=0.2) is not None:
                published.append(published[-1] + 1)
                trainer.publish(published[-1])

    def play(run: AgentRun, policy: VLMPolicy) -> None:
        client = EnvClient(f"127.0.0.1:{env.port}")
        try:
            run.link.start()
            run.link.wait_for_first_weights(timeout=60)
            rollout = Rollout(
                [client], policy, sessions=2, label=run.name, bootstrap=True, seed=len(run.name)
            )
            rollout.bad_answer = BadAnswerPolicy(run.link.format_penalty)

            def between_rounds() -> None:
                known, before = run.link.latest_version, policy.version
                run.link.between_rounds()
                run.rounds.append(Round(before, known, policy.version))

            rollout.run(
                SeedSchedule(rng_seed=len(run.name)),
                run.link.submit,
                stop=stop,
                between_rounds=between_rounds,
            )
            rollout.close()
        except BaseException as exc:
            run.error = exc
        finally:
            client.close()

    runs, threads = [], [threading.Thread(target=learn, daemon=True)]
    for name, delay in (("fast", 0.0), ("slow", 1.0)):
        policy = SlowPolicy(delay)
        config = AgentConfig(
            ServersConfig(server=["unused:1"], trainer=trainer.address, sessions=2),
            PolicyConfig(model="tiny"),
            run=AgentRunConfig(name=name),
        )
        run = AgentRun(name, TrainerLink(config, policy, ["counter"], stop))
        runs.append(run)
        threads.append(threading.Thread(target=play, args=(run, policy), daemon=True))
    fast, slow = runs
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 90
        while not (slow.link.episodes_sent >= 1 and slow.held_back >= 2 and len(slow.rounds) >= 6):
            assert time.monotonic() < deadline, (
                f"slow agent: {slow.link.episodes_sent} episodes, held back {slow.held_back} times, "
                f"{len(slow.rounds)} rounds; versions {published[-1]}"
            )
            assert fast.error is None and slow.error is None, (fast.error, slow.error)
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for run in runs:
            run.link.close()
        env.drain(grace=0)
        trainer.close()
        torch.set_num_threads(torch_threads)

    assert fast.error is None and slow.error is None, (fast.error, slow.error)
    # the bound: every round of either agent started at most MAX_POLICY_LAG behind what it knew
    for run in runs:
        late = [r for r in run.rounds if r.after < r.known - MAX_POLICY_LAG]
        assert not late, f"{run.name} rolled out too stale: {late[:5]}"
    assert slow.held_back >= 2, "the slow agent never had to catch up: the test exercised nothing"
    # the fast agent is not starved: many more rounds, every episode accepted
    assert len(fast.rounds) >= 3 * len(slow.rounds), (len(fast.rounds), len(slow.rounds))
    assert fast.link.episodes_sent > slow.link.episodes_sent >= 1
    counters = trainer.hub.counters
    assert counters["episodes_refused"] == 0 and counters["episodes_waited"] == 0, counters
    assert published[-1] >= 5
    print(
        f"\nversions {published[-1]}; fast: {len(fast.rounds)} rounds, {fast.link.episodes_sent} episodes, "
        f"held back {fast.held_back}x; slow: {len(slow.rounds)} rounds, {slow.link.episodes_sent} episodes, "
        f"held back {slow.held_back}x"
    )


pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
