"""Faults with real processes, killed for real (SIGKILL): an env server, an agent, the trainer.

Each test starts its own small cluster on loopback (numberline env servers, `trainer serve`
with the tiny VLM and tiny updates, `agent-client`s) and watches what the processes report:
their logs, the trainer's status.json (agents, versions, counters), metrics and checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Process, start_env
from tests.reliability.cluster import (
    agent_ids,
    agent_info,
    agent_steps,
    applied_versions,
    counter,
    latest_checkpoint_state,
    metrics,
    start_agent,
    start_trainer,
    status,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Every process a test starts; all stopped at the end, whatever happened: agents first, then
    trainers, then env servers (so that stopping does not itself look like a fault)."""
    started: list[Process] = []
    yield started
    for kind in ("a", "trainer", ""):
        for process in started:
            if process.name.startswith(kind):
                process.stop(timeout=20)


def test_env_server_killed_mid_episode_agent_carries_on_and_picks_the_restarted_server_up(
    tmp_path: Path, processes: list[Process]
) -> None:
    run = tmp_path / "run"
    env_a = start_env(tmp_path, "env-a")
    env_b = start_env(tmp_path, "env-b")
    trainer = start_trainer(tmp_path, run)
    processes += [env_a, env_b, trainer]
    agent = start_agent(tmp_path, "a1", trainer, [env_a, env_b], sessions=4)  # 2 sessions on each
    processes.append(agent)
    watched = (agent, trainer, env_b)
    wait_until(lambda: len(metrics(run)) >= 2, 180, "two updates", *watched)

    # SIGKILL env A while the agent plays on it: its sessions' episodes are in flight, or (the kill
    # falling between a step that ended them and the next reset) the resets fail
    port_a = env_a.port
    env_a.kill()
    wait_until(
        lambda: "env call failed, retrying" in agent.text(), 60, "the agent to notice env A is gone", *watched
    )
    lost_at = agent_steps(run, "a1")
    updates_at = len(metrics(run))
    # the agent goes on with env B alone: its episodes still reach the trainer, updates go on
    wait_until(
        lambda: agent_steps(run, "a1") >= lost_at + 24 and len(metrics(run)) >= updates_at + 2,
        120,
        "the agent to go on with env B",
        *watched,
    )

    # restart env A on the same port: the agent opens sessions on it again
    env_a2 = start_env(tmp_path, "env-a2", port_a, "--log-level", "DEBUG")
    processes.append(env_a2)
    wait_until(
        lambda: "session created" in env_a2.text() and "label=a1" in env_a2.text(),
        90,
        "the agent to open sessions on the restarted env A",
        agent,
        trainer,
        env_a2,
    )
    back_at = agent_steps(run, "a1")
    wait_until(lambda: agent_steps(run, "a1") >= back_at + 12, 90, "episodes after the restart", *watched)

    # nothing half-played reached the trainer: every submitted episode was whole and accepted
    assert counter(run, "episodes_refused") == 0, status(run)
    assert "episode refused" not in agent.text()
    assert counter(run, "episodes_accepted") > 0
    assert agent.alive() and trainer.alive()
    failed = [
        line for line in agent.text().splitlines() if "episode lost" in line or "env call failed" in line
    ]
    assert failed and all(f"127.0.0.1:{port_a}/" in line for line in failed), failed  # only env A's
    # (whether episodes were lost, and how far they had got, depends on when the kill fell; the
    # exact in-process test, test_rollout_faults.py, kills mid-episode on purpose)


def test_agent_killed_mid_rollout_trainer_frees_its_slot_and_trains_on_with_the_other(
    tmp_path: Path, processes: list[Process]
) -> None:
    run = tmp_path / "run"
    env = start_env(tmp_path, "env")
    trainer = start_trainer(tmp_path, run, "trainer", 0, "--agent-timeout", "6")
    processes += [env, trainer]
    survivor = start_agent(tmp_path, "a1", trainer, [env], sessions=2)
    victim = start_agent(tmp_path, "a2", trainer, [env], sessions=2)
    processes += [survivor, victim]
    watched = (survivor, victim, trainer)
    wait_until(
        lambda: agent_steps(run, "a1") > 0 and agent_steps(run, "a2") > 0 and len(metrics(run)) >= 2,
        180,
        "both agents training",
        *watched,
    )
    [victim_id] = agent_ids(run, "a2")

    victim.kill()  # SIGKILL mid-rollout: whatever it had in flight dies with it
    wait_until(
        lambda: agent_ids(run, "a2") == [], 60, "the trainer to forget the dead agent", survivor, trainer
    )
    assert f"agent expired agent={victim_id}" in trainer.text()
    assert counter(run, "agents_expired") == 1
    assert list(status(run)["agents"]) == agent_ids(run, "a1"), "the slot was not freed"

    # training goes on with the survivor alone
    updates, steps = len(metrics(run)), agent_steps(run, "a1")
    wait_until(
        lambda: len(metrics(run)) >= updates + 3 and agent_steps(run, "a1") > steps,
        120,
        "updates after the agent died",
        survivor,
        trainer,
    )
    assert counter(run, "episodes_refused") == 0
    assert survivor.alive() and trainer.alive()


def test_trainer_killed_and_resumed_versions_never_go_back_and_nothing_is_counted_twice(
    tmp_path: Path, processes: list[Process]
) -> None:
    from tests.reliability.protocol_agent import ProtocolAgent

    run = tmp_path / "run"
    env = start_env(tmp_path, "env")
    trainer = start_trainer(tmp_path, run)
    processes += [env, trainer]
    agent = start_agent(tmp_path, "a1", trainer, [env], sessions=3)
    processes.append(agent)
    watched = (agent, trainer)
    wait_until(lambda: len(metrics(run)) >= 2, 180, "two updates", *watched)
    [agent_id] = agent_ids(run, "a1")

    # a second agent speaking the protocol from this test: its episodes have ids we know
    probe = ProtocolAgent(trainer.address, name="probe")
    probe.register()
    probe_ids = [f"probe-{n}" for n in range(3)]
    for episode_id in probe_ids:
        assert probe.submit_until_accepted(episode_id) == ""  # accepted fresh
    # ... until a checkpoint says the learner trained on them
    wait_until(
        lambda: (
            {(probe.agent_id, e) for e in probe_ids}
            <= {tuple(p) for p in latest_checkpoint_state(run).get("trained_episodes", [])}
        ),
        120,
        "a checkpoint holding the probe's episodes",
        *watched,
    )
    assert any(pair[0] == agent_id for pair in latest_checkpoint_state(run)["trained_episodes"])
    newest_before = max(int(p.name[1:]) for p in (run / "weights").glob("v*"))

    # SIGKILL the trainer; the agent keeps retrying; resume on the same port
    port = trainer.port
    trainer.kill()
    probe.close()
    time.sleep(2)  # the agent notices and waits
    assert agent.alive()
    resumed = start_trainer(tmp_path, run, "trainer-resumed", port, "--resume", str(run))
    processes.append(resumed)

    # the probe retries its episodes as an agent whose answers were lost would: counted once
    probe = ProtocolAgent(resumed.address, name="probe", previous_agent_id=probe.agent_id)
    first_announced = probe.register()
    assert first_announced > newest_before, "the resumed trainer's first version is not newer"
    assert probe.agent_id == probe.previous_agent_id, "the resumed trainer did not know the agent"
    for episode_id in probe_ids:
        assert probe.submit_until_accepted(episode_id) == "already accepted"
    assert probe.submit_until_accepted("probe-fresh") == ""
    wait_until(lambda: counter(run, "episodes_duplicate") >= 3, 30, "the status to count them", resumed)
    probe.close()

    # the real agent reconnects under its old id and runs the resumed trainer's newest weights
    wait_until(
        lambda: (
            agent_info(run, "a1").get("version", -1) >= first_announced and agent_ids(run, "a1") == [agent_id]
        ),
        120,
        "the agent to follow the resumed trainer",
        agent,
        resumed,
    )
    wait_until(
        lambda: metrics(run)[-1]["charts/version"] > first_announced,
        120,
        "an update after the resume",
        agent,
        resumed,
    )
    versions = applied_versions(agent)
    assert versions == sorted(versions), f"the agent applied versions out of order: {versions}"
    assert versions[-1] > newest_before
    published = [int(row["charts/version"]) for row in metrics(run)]
    assert published == sorted(published), f"versions went backwards: {published}"
    assert counter(run, "episodes_refused") == 0
