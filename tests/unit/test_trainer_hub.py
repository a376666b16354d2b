"""Unit tests for trainer/hub.py: the buffer's backpressure, batching, versions and agents.

The hub is plain state behind a lock, so these tests drive it directly with hand-made
EpisodeData; threads appear only where the hub promises to wake a waiter.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from visact.trainer import hub as hub_module
from visact.trainer.hub import Hub, PublishedVersion, TooManyAgents
from visact.wire.episodes import EpisodeData, PngImage, StepData


def sample(version: int = 0) -> StepData:
    return StepData(
        image=PngImage(b"PNG bytes", 2, 2),  # the hub never decodes
        prompt_ids=[1, 2],
        generated_ids=[3],
        behavior_log_probs=[-0.5],
        action_start=0,
        reward=0.0,
        terminated=False,
        truncated=False,
        version=version,
        temperature=0.2,
        valid=True,
        success=False,
    )


def episode(steps: int, agent_id: str = "agent-a", env: str = "counter", seed: int = 0) -> EpisodeData:
    return EpisodeData(agent_id=agent_id, env=env, steps=[sample() for _ in range(steps)], seed=seed)


def hub(
    *,
    buffer_steps: int = 10,
    max_policy_lag: int = 1,
    agent_timeout: float = 60.0,
    keep_versions: int = 3,
    group_size: int = 1,
    group_wait_seconds: float = 60.0,
) -> Hub:
    return Hub(
        buffer_steps=buffer_steps,
        max_policy_lag=max_policy_lag,
        agent_timeout=agent_timeout,
        keep_versions=keep_versions,
        group_size=group_size,
        group_wait_seconds=group_wait_seconds,
    )


def version(number: int) -> PublishedVersion:
    return PublishedVersion(
        version=number,
        path=Path(f"/nonexistent/v{number:06d}/adapter.safetensors"),
        sha256=f"{number:064x}",
        size_bytes=100 + number,
        published_at=float(number),
    )


# ---------------------------------------------------------------------------------------------
# the buffer
# ---------------------------------------------------------------------------------------------


def test_full_buffer_says_wait_and_accepts_after_take_batch_frees_room() -> None:
    h = hub(buffer_steps=10)
    first, second, third = episode(4), episode(4), episode(4)
    assert h.offer("1", first) == (True, "")
    assert h.offer("2", second) == (True, "")

    accepted, reason = h.offer("3", third)

    assert not accepted
    assert "8 of 10" in reason and "retry" in reason
    assert h.buffered_steps == 8
    assert h.counters["episodes_waited"] == 1
    assert h.counters["episodes_accepted"] == 2

    assert h.take_batch(4, timeout=0) == [first]
    assert h.buffered_steps == 4
    assert h.offer("3", third) == (True, "")  # the retry of the refused episode now fits
    assert h.buffered_steps == 8
    # never dropped: everything offered comes out, in order
    taken = h.take_batch(8, timeout=0)
    assert taken is not None
    assert [id(e) for e in taken] == [id(second), id(third)]
    assert h.buffered_steps == 0


def test_an_empty_buffer_takes_an_episode_larger_than_its_budget() -> None:
    # otherwise an episode longer than the budget could never be delivered
    h = hub(buffer_steps=5)
    assert h.offer("long", episode(7)) == (True, "")
    assert h.buffered_steps == 7
    accepted, _ = h.offer("next", episode(1))
    assert not accepted


def test_a_buffer_full_in_bytes_says_wait_and_frees_them_when_a_batch_is_taken() -> None:
    h = Hub(buffer_steps=100, max_policy_lag=1, agent_timeout=60.0, keep_versions=3, buffer_bytes=0)
    first, second, third = episode(2), episode(2), episode(2)
    h.buffer_bytes = first.held_bytes + len("1") + second.held_bytes + len("2")  # room for two
    assert h.offer("1", first) == (True, "") and h.offer("2", second) == (True, "")
    assert h.buffered_bytes == h.buffer_bytes  # the episode ids counted too

    accepted, reason = h.offer("3", third)

    assert not accepted and f"holds {h.buffer_bytes} of {h.buffer_bytes} bytes" in reason
    assert h.counters["episodes_waited"] == 1 and h.buffered_steps == 4  # far from full in steps
    assert h.take_batch(2, timeout=0) == [first]
    assert h.buffered_bytes == second.held_bytes
    assert h.offer("3", third) == (True, "")
    assert h.status()["buffered_bytes"] == h.buffered_bytes


def test_held_bytes_count_the_png_files_and_4_bytes_a_token() -> None:
    one = episode(1)
    assert one.held_bytes == episode(1).held_bytes  # the same for the same content
    bigger = episode(1)
    bigger.steps[0].image = PngImage(b"x" * 1000 + bigger.steps[0].image.data, 2, 2)
    bigger.steps[0].prompt_ids = [*bigger.steps[0].prompt_ids, 5, 6, 7]
    assert bigger.held_bytes - one.held_bytes == 1000 + 3 * 4


def test_a_retried_episode_id_is_accepted_once() -> None:
    h = hub(buffer_steps=100)
    ep = episode(3)
    assert h.offer("e-1", ep) == (True, "")

    accepted, reason = h.offer("e-1", episode(3))

    assert accepted
    assert reason == "already accepted"
    assert h.buffered_steps == 3
    assert h.counters["episodes_accepted"] == 1
    assert h.counters["episodes_duplicate"] == 1
    # the same id from another agent is a different episode
    assert h.offer("e-1", episode(2, agent_id="agent-b")) == (True, "")
    assert h.buffered_steps == 5
    assert h.counters["episodes_duplicate"] == 1


def test_an_id_that_had_to_wait_is_not_remembered_as_accepted() -> None:
    h = hub(buffer_steps=4)
    h.offer("a", episode(4))
    assert h.offer("b", episode(2))[0] is False
    h.take_batch(4, timeout=0)
    assert h.offer("b", episode(2)) == (True, "")
    assert h.counters["episodes_duplicate"] == 0
    assert h.buffered_steps == 2


def test_take_batch_returns_whole_episodes_oldest_first_totalling_at_least_steps() -> None:
    h = hub(buffer_steps=100)
    episodes = [episode(2), episode(3), episode(4)]
    for number, ep in enumerate(episodes):
        h.offer(str(number), ep)

    batch = h.take_batch(4, timeout=0)

    assert batch is not None
    assert [id(e) for e in batch] == [id(episodes[0]), id(episodes[1])]  # 2 + 3 >= 4, no split
    assert sum(len(e.steps) for e in batch) == 5
    assert h.buffered_steps == 4
    rest = h.take_batch(4, timeout=0)
    assert rest is not None and [id(e) for e in rest] == [id(episodes[2])]


def test_take_batch_returns_none_on_timeout_and_keeps_the_buffer() -> None:
    h = hub(buffer_steps=100)
    h.offer("1", episode(3))
    started = time.monotonic()

    assert h.take_batch(5, timeout=0.05) is None

    assert time.monotonic() - started >= 0.05
    assert h.buffered_steps == 3


def test_take_batch_wakes_when_an_episode_arrives() -> None:
    h = hub(buffer_steps=100)
    ep = episode(3)
    offerer = threading.Timer(0.05, h.offer, args=("late", ep))
    offerer.start()
    try:
        batch = h.take_batch(3, timeout=5.0)
    finally:
        offerer.join()
    assert batch is not None and [id(e) for e in batch] == [id(ep)]


def test_take_batch_returns_none_once_closed() -> None:
    h = hub(buffer_steps=100)
    h.offer("1", episode(1))
    closer = threading.Timer(0.05, h.close)
    closer.start()
    try:
        started = time.monotonic()
        assert h.take_batch(5, timeout=5.0) is None
        assert time.monotonic() - started < 4.0
    finally:
        closer.join()


# ---------------------------------------------------------------------------------------------
# versions
# ---------------------------------------------------------------------------------------------


def test_publish_refuses_versions_that_do_not_increase() -> None:
    h = hub()
    h.publish(version(1))
    h.publish(version(2))
    for stale in (2, 1):
        with pytest.raises(ValueError, match=f"version {stale} does not follow 2"):
            h.publish(version(stale))
    assert h.latest == version(2)
    assert sorted(h.versions) == [1, 2]


def test_publish_drops_versions_beyond_keep_versions() -> None:
    h = hub(keep_versions=2)
    assert h.publish(version(1)) == []
    assert h.publish(version(2)) == []

    dropped = h.publish(version(5))

    assert dropped == [version(1)]
    assert sorted(h.versions) == [2, 5]
    assert h.latest == version(5)
    assert h.publish(version(6)) == [version(2)]
    assert sorted(h.versions) == [5, 6]


def test_min_version_follows_the_newest_minus_the_lag() -> None:
    h = hub(max_policy_lag=2)
    assert h.min_version() == 0  # nothing published: the base model
    h.publish(version(1))
    assert h.min_version() == 0  # never negative
    h.publish(version(5))
    assert h.min_version() == 3
    strict = hub(max_policy_lag=0)
    strict.publish(version(4))
    assert strict.min_version() == 4


def test_publish_listeners_hear_every_version_and_the_close() -> None:
    h = hub()
    heard: list[int | None] = []
    h.add_publish_listener(lambda: heard.append(h.latest.version if h.latest else None))
    h.publish(version(1))
    h.publish(version(2))
    assert heard == [1, 2]
    h.close()
    assert heard == [1, 2, 2] and h.closed


def test_the_hub_holds_at_most_max_agents_and_a_known_agent_may_always_come_back() -> None:
    h = Hub(buffer_steps=8, max_policy_lag=1, agent_timeout=60.0, keep_versions=2, max_agents=2)
    first = h.register("a", ["counter"], 1)
    h.register("b", ["counter"], 1)
    with pytest.raises(TooManyAgents, match=r"maximum of 2 agents.*--max-agents"):
        h.register("c", ["counter"], 1)
    assert h.register("a", ["counter"], 1, previous_id=first.agent_id).agent_id == first.agent_id
    assert len(h.agents) == 2


# ---------------------------------------------------------------------------------------------
# agents
# ---------------------------------------------------------------------------------------------


def test_register_reuses_a_known_previous_id_only() -> None:
    h = hub()
    first = h.register("host-1", ["counter"], 2)
    assert first.agent_id.startswith("host-1-")
    again = h.register("host-1", ["counter"], 2, previous_id=first.agent_id)
    assert again.agent_id == first.agent_id
    fresh = h.register("host-1", ["counter"], 2, previous_id="forgotten-id")
    assert fresh.agent_id not in (first.agent_id, "forgotten-id")
    assert set(h.agents) == {first.agent_id, fresh.agent_id}


def test_touch_records_version_and_steps_and_knows_no_strangers() -> None:
    h = hub()
    agent = h.register("a", ["counter"], 1)
    assert h.touch("nobody", version=3) is None
    touched = h.touch(agent.agent_id, version=3, steps=40)
    assert touched is not None
    assert (h.agents[agent.agent_id].version, h.agents[agent.agent_id].steps) == (3, 40)
    h.touch(agent.agent_id)  # a bare touch keeps what it knew
    assert (h.agents[agent.agent_id].version, h.agents[agent.agent_id].steps) == (3, 40)


def test_expire_agents_forgets_silent_agents_and_keeps_their_finished_episodes() -> None:
    h = hub(buffer_steps=100, agent_timeout=10.0)
    silent = h.register("silent", ["counter"], 1)
    alive = h.register("alive", ["counter"], 1)
    h.agents[silent.agent_id].last_seen = time.monotonic() - 11.0
    h.offer("s1", episode(2, agent_id=silent.agent_id))
    kept = episode(3, agent_id=alive.agent_id)
    h.offer("a1", kept)
    h.offer("s2", episode(4, agent_id=silent.agent_id))

    gone = h.expire_agents()

    assert gone == [silent.agent_id]
    assert list(h.agents) == [alive.agent_id]
    assert h.counters["agents_expired"] == 1
    assert h.expire_agents() == []  # the living one stays

    # whole, checked episodes are as good as any: the buffer keeps them and trains on them
    assert h.buffered_episodes_of(silent.agent_id) == 2
    assert h.buffered_steps == 9
    batch = h.take_batch(9, timeout=0)
    assert batch is not None
    assert [e.agent_id for e in batch] == [silent.agent_id, alive.agent_id, silent.agent_id]
    assert id(batch[1]) == id(kept)
    assert h.buffered_episodes_of("nobody") == 0


def test_trained_episode_ids_survive_a_restart_through_the_checkpoint_state() -> None:
    before = hub(buffer_steps=100)
    agent = before.register("a", ["counter"], 1)
    for n in range(3):
        before.offer(f"e-{n}", episode(2, agent_id=agent.agent_id))
    assert before.take_batch(4, timeout=0) is not None  # e-0 and e-1 trained; e-2 still buffered
    saved = json.loads(json.dumps(before.trained_episodes()))  # as state.json holds it
    assert saved == [[agent.agent_id, "e-0"], [agent.agent_id, "e-1"]]

    after = hub(buffer_steps=100)
    after.restore_trained_episodes(saved)
    again = after.register("a", ["counter"], 1, previous_id=agent.agent_id)

    assert again.agent_id == agent.agent_id  # the agent keeps its id across the restart
    assert after.offer("e-1", episode(2, agent_id=agent.agent_id)) == (True, "already accepted")
    assert after.buffered_steps == 0 and after.counters["episodes_duplicate"] == 1
    assert after.offer("e-2", episode(2, agent_id=agent.agent_id)) == (True, "")  # lost with the buffer
    assert after.buffered_steps == 2
    assert after.register("b", ["counter"], 1, previous_id="never-seen").agent_id != "never-seen"


def test_trained_episode_ids_kept_for_checkpoints_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "PERSISTED_EPISODES", 3)
    h = hub(buffer_steps=100)
    for n in range(5):
        h.offer(f"e-{n}", episode(1))
    h.take_batch(5, timeout=0)
    assert [e for _, e in h.trained_episodes()] == ["e-2", "e-3", "e-4"]


# ---------------------------------------------------------------------------------------------
# groups (--group-size): episodes of one env and seed batched together
# ---------------------------------------------------------------------------------------------


def test_a_batch_takes_whole_groups_and_waits_for_a_group_to_be_complete() -> None:
    h = hub(buffer_steps=100, group_size=2)
    a1, b1, a2 = episode(3, seed=1), episode(2, seed=2), episode(1, seed=1)
    for index, item in enumerate((a1, b1, a2)):
        h.offer(str(index), item)
    # 6 steps buffered, but seed 2's group has one of its two: only seed 1's (4 steps) is ready
    assert h.take_batch(5, timeout=0.05) is None
    assert h.take_batch(4, timeout=0.05) == [a1, a2]
    b2 = episode(4, seed=2)
    h.offer("3", b2)
    assert h.take_batch(1, timeout=0.05) == [b1, b2]  # never half a group, even when 1 step would do
    assert h.buffered_steps == 0


def test_a_group_short_of_members_goes_as_it_is_once_a_batch_more_steps_arrived() -> None:
    h = hub(buffer_steps=100, group_size=2)
    lonely = episode(2, seed=7)  # its partner was lost
    h.offer("0", lonely)
    assert h.take_batch(2, timeout=0.05) is None
    later = [episode(1, seed=8), episode(1, seed=8)]
    h.offer("1", later[0])
    h.offer("2", later[1])
    assert h.take_batch(2, timeout=0.05) == [lonely]  # 2 steps arrived after it: it waited long enough
    assert h.take_batch(2, timeout=0.05) == later


def test_the_same_seed_in_another_env_is_another_group() -> None:
    h = hub(buffer_steps=100, group_size=2)
    h.offer("0", episode(1, env="numberline", seed=1))
    h.offer("1", episode(1, env="blackjack", seed=1))
    assert h.take_batch(2, timeout=0.05) is None


def test_a_full_buffer_of_incomplete_groups_still_gives_a_batch_after_the_group_wait() -> None:
    # nothing more can arrive (the buffer is full), so no later steps will ever age these groups
    h = hub(buffer_steps=4, group_size=2, group_wait_seconds=0.2)
    h.offer("0", episode(2, seed=1))
    h.offer("1", episode(2, seed=2))
    assert h.offer("2", episode(1, seed=1))[0] is False  # full: the partner must wait
    started = time.monotonic()
    batch = h.take_batch(4, timeout=5.0)
    assert batch is not None and [e.seed for e in batch] == [1, 2]
    assert time.monotonic() - started >= 0.15
