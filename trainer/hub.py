"""What the trainer knows about its agents, its data and its weights, shared by the gRPC service
and the learning loop. No gRPC and no model here: plain state behind one lock.

- agents: who registered, the version each runs, when each was last heard from;
- the buffer: finished episodes waiting for an update, bounded in steps and in the bytes they
  hold (``EpisodeData.held_bytes``: PNG files as sent, packed tokens); a full buffer answers
  "wait" (backpressure);
- versions: the newest weights version and its file, announced to watchers.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from visact.wire.episodes import EpisodeData

#: accepted (agent id, episode id) pairs remembered to count a retried episode once
SEEN_EPISODES = 100_000
#: of those, the most recently trained ones a checkpoint keeps, so a retry after a restart is
#: still counted once (an agent retries only its one unacknowledged episode)
PERSISTED_EPISODES = 10_000
#: longest episode id an agent may give (they are kept in memory and in checkpoints)
MAX_EPISODE_ID_CHARS = 256
#: agents registered at once by default
DEFAULT_MAX_AGENTS = 4096


class TooManyAgents(Exception):
    """The hub holds its maximum of agents; the message says what to do."""


@dataclass
class AgentInfo:
    """One registered agent."""

    agent_id: str
    name: str
    environments: list[str]
    sessions: int
    version: int = 0
    steps: int = 0
    last_seen: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class PublishedVersion:
    """One weights version on disk."""

    version: int
    path: Path
    sha256: str
    size_bytes: int
    published_at: float


class Hub:
    """Agents, the episode buffer and the published versions, thread-safe."""

    def __init__(
        self,
        *,
        buffer_steps: int,
        max_policy_lag: int,
        agent_timeout: float,
        keep_versions: int,
        group_size: int = 1,
        group_wait_seconds: float = 60.0,
        max_agents: int = DEFAULT_MAX_AGENTS,
        buffer_bytes: int = 512 << 20,
    ) -> None:
        self.buffer_steps = buffer_steps
        self.max_agents = max_agents
        #: the most the buffered episodes may hold (their ``held_bytes``)
        self.buffer_bytes = buffer_bytes
        #: episodes of one env from one seed are batched together, this many to a group; a group
        #: short of members goes as it is after a batch's worth of later steps or this long
        self.group_size = group_size
        self.group_wait_seconds = group_wait_seconds
        self._arrived_steps = 0  # steps ever accepted
        #: id(buffered episode) -> (_arrived_steps once it came, time.monotonic() then)
        self._arrival: dict[int, tuple[int, float]] = {}
        self.max_policy_lag = max_policy_lag
        self.agent_timeout = agent_timeout
        self.keep_versions = keep_versions
        self._lock = threading.Condition()
        self.agents: dict[str, AgentInfo] = {}
        self._buffer: list[EpisodeData] = []
        self._buffered_steps = 0
        self._buffered_bytes = 0
        self._seen_episodes: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._trained_episodes: OrderedDict[tuple[str, str], None] = OrderedDict()
        #: agent ids of an earlier run of this trainer (from its checkpoint): re-registering
        #: agents keep them, so that their retried episodes are recognized
        self._earlier_agent_ids: set[str] = set()
        self.versions: dict[int, PublishedVersion] = {}
        self.latest: PublishedVersion | None = None
        self.closed = False
        #: called (on the publishing thread) after each new version and at close
        self._publish_listeners: list[Callable[[], None]] = []
        #: seconds from a version's publication to each agent reporting it runs it (drained per update)
        self.sync_seconds: list[float] = []
        self.counters: dict[str, int] = {
            "episodes_accepted": 0,
            "episodes_refused": 0,
            "episodes_waited": 0,
            "episodes_duplicate": 0,
            "agents_expired": 0,
        }

    # ------------------------------------------------------------------ agents
    def register(self, name: str, environments: list[str], sessions: int, previous_id: str = "") -> AgentInfo:
        """A new agent, or a known one again; raises TooManyAgents when ``max_agents`` are registered."""
        with self._lock:
            known = previous_id in self.agents or previous_id in self._earlier_agent_ids
            if previous_id not in self.agents and len(self.agents) >= self.max_agents:
                raise TooManyAgents(
                    f"the trainer holds its maximum of {self.max_agents} agents; agents silent for "
                    f"agent_timeout are forgotten, or start the trainer with a larger --max-agents"
                )
            agent_id = previous_id if known else f"{name[:40]}-{secrets.token_hex(4)}"
            agent = AgentInfo(agent_id, name, environments, sessions)
            self.agents[agent_id] = agent
            return agent

    def touch(
        self, agent_id: str, *, version: int | None = None, steps: int | None = None
    ) -> AgentInfo | None:
        """Mark an agent alive (and record its version); None if unknown."""
        with self._lock:
            agent = self.agents.get(agent_id)
            if agent is None:
                return None
            agent.last_seen = time.monotonic()
            if version is not None:
                latest = self.latest
                if latest is not None and version == latest.version and agent.version != version:
                    self.sync_seconds.append(time.time() - latest.published_at)
                agent.version = version
            if steps is not None:
                agent.steps = steps
            return agent

    def expire_agents(self) -> list[str]:
        """Forget agents silent longer than agent_timeout (their slot is freed).

        Their episodes already in the buffer stay: each is a whole, checked episode, as good as
        any other (an agent's partial episodes never leave it, so there is nothing partial here).
        """
        deadline = time.monotonic() - self.agent_timeout
        with self._lock:
            gone = [a for a, info in self.agents.items() if info.last_seen < deadline]
            for agent_id in gone:
                del self.agents[agent_id]
            self.counters["agents_expired"] += len(gone)
            return gone

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one of the counters, under the lock."""
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + amount

    def min_version(self) -> int:
        """The oldest version rollouts may use now."""
        latest = self.latest.version if self.latest else 0
        return max(0, latest - self.max_policy_lag)

    # ------------------------------------------------------------------ the buffer
    def offer(self, episode_id: str, episode: EpisodeData) -> tuple[bool, str]:
        """(accepted, reason). A retried id is accepted once; a full buffer (in steps or bytes) says
        wait. An episode larger than the whole byte budget is never accepted: the caller refuses
        it first (``visact.trainer.admission``)."""
        key = (episode.agent_id, episode_id)
        episode.episode_id = episode_id
        with self._lock:
            if key in self._seen_episodes:
                self.counters["episodes_duplicate"] += 1
                return True, "already accepted"
            steps, held = len(episode.steps), episode.held_bytes
            full = None
            if self._buffered_steps and self._buffered_steps + steps > self.buffer_steps:
                full = f"the buffer holds {self._buffered_steps} of {self.buffer_steps} steps; retry soon"
            elif self._buffered_bytes + held > self.buffer_bytes:
                full = (
                    f"the buffer holds {self._buffered_bytes} of {self.buffer_bytes} bytes and this episode "
                    f"{held}; retry soon"
                )
            if full is not None:
                self.counters["episodes_waited"] += 1
                return False, full
            self._buffer.append(episode)
            self._arrived_steps += steps
            self._arrival[id(episode)] = (self._arrived_steps, time.monotonic())
            self._buffered_steps += steps
            self._buffered_bytes += held
            self._seen_episodes[key] = None
            while len(self._seen_episodes) > SEEN_EPISODES:
                self._seen_episodes.popitem(last=False)
            self.counters["episodes_accepted"] += 1
            self._lock.notify_all()
            return True, ""

    def take_batch(self, steps: int, timeout: float | None = None) -> list[EpisodeData] | None:
        """Whole episodes totalling at least ``steps`` steps, oldest first; None on timeout or close.

        With ``group_size`` > 1 whole groups (the buffered episodes of one env and seed) go into
        a batch together, once complete; a group still short of members (one lost or refused)
        goes as it is once ``steps`` more steps arrived after it, or ``group_wait_seconds``
        passed (a full buffer takes no more steps)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while (ready := self._ready_groups(steps))[1] < steps and not self.closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                # wake at least every second (or group wait): groups also become ready with time
                tick = min(1.0, self.group_wait_seconds)
                self._lock.wait(timeout=tick if remaining is None else min(remaining, tick))
            groups, ready_steps = ready
            if ready_steps < steps:
                return None
            batch: list[EpisodeData] = []
            total = 0
            for group in groups:
                if total >= steps:
                    break
                batch.extend(group)
                total += sum(len(e.steps) for e in group)
            taken = {id(e) for e in batch}
            self._buffer = [e for e in self._buffer if id(e) not in taken]
            for episode in batch:
                del self._arrival[id(episode)]
            self._buffered_steps -= total
            self._buffered_bytes -= sum(e.held_bytes for e in batch)
            for episode in batch:
                self._trained_episodes[(episode.agent_id, episode.episode_id)] = None
            while len(self._trained_episodes) > PERSISTED_EPISODES:
                self._trained_episodes.popitem(last=False)
            self._lock.notify_all()
            return batch

    def _ready_groups(self, steps: int) -> tuple[list[list[EpisodeData]], int]:
        """The buffered groups a batch may take, oldest first, and their steps (under the lock)."""
        if self.group_size <= 1:
            return [[e] for e in self._buffer], self._buffered_steps
        groups: dict[tuple[str, int], list[EpisodeData]] = {}
        for episode in self._buffer:
            groups.setdefault((episode.env, episode.seed), []).append(episode)
        now = time.monotonic()

        def ready_as_it_is(first: EpisodeData) -> bool:
            arrived_steps, arrived_at = self._arrival[id(first)]
            return self._arrived_steps - arrived_steps >= steps or now - arrived_at >= self.group_wait_seconds

        ready = [g for g in groups.values() if len(g) >= self.group_size or ready_as_it_is(g[0])]
        return ready, sum(len(e.steps) for group in ready for e in group)

    @property
    def buffered_steps(self) -> int:
        return self._buffered_steps

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    def buffered_episodes_of(self, agent_id: str) -> int:
        """How many buffered episodes came from ``agent_id``."""
        with self._lock:
            return sum(e.agent_id == agent_id for e in self._buffer)

    def trained_episodes(self) -> list[list[str]]:
        """The most recent (agent id, episode id) pairs taken into batches, oldest first: what a
        checkpoint keeps so that a resumed trainer counts a retried episode once."""
        with self._lock:
            return [[agent, episode] for agent, episode in self._trained_episodes]

    def restore_trained_episodes(self, pairs: list[list[str]]) -> None:
        """Remember episodes an earlier run trained on (from its checkpoint): a retry of one is
        answered "already accepted", and its agent keeps its id when it registers again."""
        with self._lock:
            for agent, episode in pairs:
                key = (str(agent), str(episode))
                self._seen_episodes[key] = None
                self._trained_episodes[key] = None
                self._earlier_agent_ids.add(key[0])
            while len(self._trained_episodes) > PERSISTED_EPISODES:
                self._trained_episodes.popitem(last=False)

    # ------------------------------------------------------------------ versions
    def publish(self, published: PublishedVersion) -> list[PublishedVersion]:
        """Make ``published`` the newest version; returns versions no longer kept."""
        with self._lock:
            if self.latest is not None and published.version <= self.latest.version:
                raise ValueError(f"version {published.version} does not follow {self.latest.version}")
            self.versions[published.version] = published
            self.latest = published
            old = (
                sorted(self.versions)[: -self.keep_versions]
                if len(self.versions) > self.keep_versions
                else []
            )
            dropped = [self.versions.pop(v) for v in old]
            self._lock.notify_all()
        self._tell_listeners()
        return dropped

    def add_publish_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every new version and at close (from the thread that did it)."""
        self._publish_listeners.append(listener)

    def _tell_listeners(self) -> None:
        for listener in self._publish_listeners:
            listener()

    def wait_for_version_after(self, version: int, timeout: float) -> PublishedVersion | None:
        """The newest version once it is newer than ``version`` (None on timeout or close)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self.closed and (self.latest is None or self.latest.version <= version):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(timeout=remaining)
            return None if self.closed else self.latest

    def take_sync_seconds(self) -> list[float]:
        """The publish-to-running latencies seen since the last call."""
        with self._lock:
            out, self.sync_seconds = self.sync_seconds, []
            return out

    def status(self) -> dict[str, object]:
        """A snapshot for people and tests: versions, agents, buffer, counters."""
        with self._lock:
            now = time.monotonic()
            return {
                "latest_version": self.latest.version if self.latest else None,
                "buffered_steps": self._buffered_steps,
                "buffered_bytes": self._buffered_bytes,
                "agents": {
                    a.agent_id: {
                        "name": a.name,
                        "version": a.version,
                        "steps": a.steps,
                        "seconds_since_seen": round(now - a.last_seen, 2),
                        "environments": a.environments,
                    }
                    for a in self.agents.values()
                },
                "counters": dict(self.counters),
            }

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._lock.notify_all()
        self._tell_listeners()
