"""Rollouts: one agent drives many sessions on one or more env servers, batching generation
across all of them and stepping each server with one BatchStep per round.

The loop, once per round:
  observations of every live session -> policy.act (one batched generation)
  -> parse and resolve each answer to a legal action
  -> one BatchStep per server (servers in parallel)
  -> a StepRecord per session; a finished episode goes to ``on_episode``
  -> one batched Reset per server for the sessions whose episode ended.
A server that fails (unreachable, restarted) costs only its own sessions'
episodes in flight: they are dropped whole, never sent half (nor marked truncated),
their seeds are handed out again, and the sessions are re-created with backoff
while the other servers go on.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from visact import rpc
from visact.agent.parsing import BadAnswerPolicy, ParseStats, check_facts, resolve
from visact.agent.policy import Policy, PolicyInput
from visact.env_server.client import (
    EnvCallError,
    EnvClient,
    Observation,
    ResetCall,
    ResetResult,
    StepCall,
    StepResult,
)
from visact.wire.facts import FactStats
from visact.wire.records import Episode, StepRecord

log = logging.getLogger(__name__)


class SeedSchedule:
    """Hands out episode seeds: a fixed list (evaluation) or an endless random stream (training).

    A seed whose episode was lost to a server failure is handed out again first.
    """

    def __init__(self, seeds: Iterable[int] | None = None, *, rng_seed: int = 0, below: int = 1_000_000_000):
        self._fixed: Iterator[int] | None = iter(seeds) if seeds is not None else None
        self._rng = random.Random(rng_seed)
        self._below = below
        self._again: deque[int] = deque()
        self._lock = threading.Lock()

    @classmethod
    def fixed(cls, seeds: Iterable[int]) -> SeedSchedule:
        return cls(list(seeds))

    def next(self) -> int | None:
        """The next seed, or None when a fixed list is used up."""
        with self._lock:
            if self._again:
                return self._again.popleft()
            if self._fixed is not None:
                return next(self._fixed, None)
            return self._rng.randrange(self._below)

    def give_back(self, seed: int) -> None:
        """Hand ``seed`` out again (its episode was lost)."""
        with self._lock:
            self._again.append(seed)


@dataclass
class Slot:
    """One environment session driven by this agent."""

    client: EnvClient
    env: str
    fact_keys: tuple[str, ...]
    session_id: str = ""
    seed: int = 0
    observation: Observation | None = None
    steps: list[StepRecord] = field(default_factory=list)
    retry_at: float = 0.0  # when a failed session may be re-created
    backoff: float = 0.5
    finished: bool = False  # no more seeds for it
    group: int = 0  # slots of a group play each episode from the same seed (``group_size``)
    version: int | None = None  # weights version of the episode in flight (None: not begun yet)
    want_expert: bool = False  # its sessions get the expert's move (oracle, fact checks)

    @property
    def name(self) -> str:
        return f"{self.client.address}/{self.session_id}"


@dataclass
class RolloutStats:
    """What a rollout has done so far."""

    steps: int = 0
    episodes: int = 0
    rounds: int = 0
    episodes_lost: int = 0  # dropped because a server failed mid-episode
    groups_dropped: int = 0  # groups not delivered because one of their episodes was lost
    parse: ParseStats = field(default_factory=ParseStats)
    facts: FactStats = field(default_factory=FactStats)
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class Rollout:
    """Drives ``sessions`` sessions spread over ``clients`` with one policy."""

    def __init__(
        self,
        clients: list[EnvClient],
        policy: Policy,
        *,
        sessions: int,
        bad_answer: BadAnswerPolicy | None = None,
        want_expert: bool = False,
        label: str = "agent",
        seed: int = 0,
        bootstrap: bool = False,
        group_size: int = 1,
        check_facts: bool = False,
        reset_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``check_facts``: score every answer's facts against the expert's (sessions ask for the
        expert where the server offers one); ``want_expert``: sessions must get it (the oracle);
        ``reset_options``: the options of every episode's reset (``--reset-option``)."""
        if not clients:
            raise ValueError("a rollout needs at least one env server")
        if sessions < 1:
            raise ValueError(f"sessions must be >= 1, got {sessions}")
        if group_size < 1 or sessions % group_size:
            raise ValueError(
                f"--sessions {sessions} is not a multiple of the group size {group_size} (the trainer's "
                "--group-size): give the agent a multiple of it"
            )
        self.clients = clients
        self.policy = policy
        self.bad_answer = bad_answer or BadAnswerPolicy()
        self.want_expert = want_expert
        self.check_facts = check_facts
        self.reset_options = dict(reset_options or {})
        self.label = label
        self.bootstrap = bootstrap  # record the observation after a truncation (the learner needs it)
        self._rng = random.Random(seed)
        self._pool = ThreadPoolExecutor(max_workers=len(clients), thread_name_prefix="env-step")
        self.stats = RolloutStats()
        specs = [c.describe() for c in clients]
        self.slots = [
            Slot(
                clients[i % len(clients)],
                specs[i % len(clients)].name,
                tuple(specs[i % len(clients)].fact_keys),
                want_expert=want_expert or (check_facts and "expert" in specs[i % len(clients)].capabilities),
            )
            for i in range(sessions)
        ]
        #: with ``group_size`` > 1 consecutive slots form groups that start each episode together
        #: from one seed and whose episodes are delivered together once all of them ended
        self.group_size = group_size
        for index, slot in enumerate(self.slots):
            slot.group = index // group_size
        self._pending: dict[int, list[Episode]] = {}  # group -> its episodes that ended
        self._tainted: set[int] = set()  # groups that lost an episode: not delivered

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        seeds: SeedSchedule,
        on_episode: Callable[[Episode], None],
        *,
        max_episodes: int | None = None,
        stop: threading.Event | None = None,
        between_rounds: Callable[[], None] | None = None,
    ) -> RolloutStats:
        """Play until the seeds run out, ``max_episodes`` finish, or ``stop`` is set."""
        stop = stop or threading.Event()
        target = max_episodes
        for slot in self.slots:
            slot.finished = False
        self._start_episodes(self.slots, seeds)
        while not stop.is_set():
            if target is not None and self.stats.episodes >= target:
                break
            live = [s for s in self.slots if s.observation is not None]
            waiting = [s for s in self.slots if s.observation is None and not s.finished]
            if not live and not waiting:
                break
            if between_rounds is not None:
                between_rounds()
            if not live:
                self._start_episodes(waiting, seeds)
                time.sleep(min(0.5, max(0.0, min(s.retry_at for s in waiting) - time.monotonic())))
                continue
            ended = self._round(live, on_episode, target, seeds)
            self._start_episodes(ended + waiting, seeds)
        return self.stats

    def _round(
        self, live: list[Slot], on_episode: Callable[[Episode], None], target: int | None, seeds: SeedSchedule
    ) -> list[Slot]:
        """One batched generation and one BatchStep per server; returns slots whose episode ended."""
        inputs = [
            PolicyInput(
                s.observation.image,
                s.observation.task,
                s.observation.legal_actions,
                s.fact_keys,
                s.observation.expert,
                s.version,  # an episode finishes under the version it began with, while the engine has it
            )
            for s in live
            if s.observation is not None
        ]
        answers = self.policy.act(inputs)
        chosen: list[tuple[str, float]] = []
        for item, answer in zip(inputs, answers, strict=True):
            self.stats.parse.add(answer.parsed)
            chosen.append(resolve(answer.parsed, list(item.legal_actions), self.bad_answer, self._rng))
        results = self._step_all(live, [action for action, _ in chosen])
        self.stats.rounds += 1
        ended: list[Slot] = []
        for slot, item, answer, (action, penalty), result in zip(
            live, inputs, answers, chosen, results, strict=True
        ):
            facts = check_facts(answer.text, item.expert.facts) if self.check_facts and item.expert else ()
            self.stats.facts.add(facts)
            if isinstance(result, EnvCallError):
                self._lose_episode(slot, result, seeds)
                self._deliver_group(slot.group, on_episode, target)
                ended.append(slot)
                continue
            assert isinstance(result, StepResult)
            slot.version = answer.version
            slot.steps.append(
                StepRecord(
                    image=item.image,
                    prompt_ids=answer.prompt_ids,
                    generated_ids=answer.generated_ids,
                    log_probs=answer.log_probs,
                    action_start=answer.action_start,
                    text=answer.text,
                    action=action,
                    parse_failure=answer.parsed.failure.value if answer.parsed.failure else "",
                    format_penalty=-penalty,
                    reward=result.reward,
                    terminated=result.terminated,
                    truncated=result.truncated,
                    policy_version=answer.version,
                    temperature=self.policy.temperature,
                    session=slot.name,
                    seed=slot.seed,
                    episode_step=result.episode_step,
                    info=result.info,
                    task=item.task,
                    legal_actions=item.legal_actions,
                    fact_checks=facts,
                    expert_action=item.expert.action if item.expert else "",
                )
            )
            self.stats.steps += 1
            slot.observation = result.observation
            if result.done:
                episode = Episode(slot.env, slot.name, slot.seed, slot.steps)
                if self.bootstrap and result.truncated and not result.terminated:
                    episode.bootstrap_image = result.observation.image
                    episode.bootstrap_prompt_ids = self._bootstrap_prompt(slot, result.observation, item)
                slot.steps, slot.observation, slot.version = [], None, None
                self._pending.setdefault(slot.group, []).append(episode)
                self._deliver_group(slot.group, on_episode, target)
                ended.append(slot)
        return ended

    def _deliver_group(self, group: int, on_episode: Callable[[Episode], None], target: int | None) -> None:
        """Hand on the group's ended episodes once none of its slots still plays (at once when
        groups are of one); a group that lost an episode is dropped whole."""
        if any(s.observation is not None for s in self.slots if s.group == group):
            return
        episodes = self._pending.pop(group, [])
        if group in self._tainted:
            self._tainted.discard(group)
            self.stats.groups_dropped += 1
            return
        for episode in episodes:
            if target is None or self.stats.episodes < target:
                self.stats.episodes += 1
                on_episode(episode)

    # ------------------------------------------------------------------ env calls
    def _step_all(
        self, live: list[Slot], actions: list[str]
    ) -> list[StepResult | ResetResult | EnvCallError]:
        """One BatchStep per server, servers in parallel; results in the order of ``live``."""
        by_client: dict[int, list[int]] = {}
        for index, slot in enumerate(live):
            by_client.setdefault(id(slot.client), []).append(index)
        results: list[StepResult | ResetResult | EnvCallError | None] = [None] * len(live)

        def run(indices: list[int]) -> None:
            client = live[indices[0]].client
            calls = [StepCall(live[i].session_id, actions[i]) for i in indices]
            for i, result in zip(indices, _batch_or_fail(client, calls), strict=True):
                results[i] = result

        list(self._pool.map(run, by_client.values()))
        return [r for r in results if r is not None]

    def _start_episodes(self, slots: list[Slot], seeds: SeedSchedule) -> None:
        """Reset each slot with the next seed (one batched call per server); open sessions as
        needed. Groups (``group_size`` > 1) start only whole, all slots idle, on one seed."""
        now = time.monotonic()
        ready = [s for s in slots if not s.finished and s.retry_at <= now]
        for slot in ready:
            if not slot.session_id:
                try:
                    slot.session_id = slot.client.create_session(
                        want_expert=slot.want_expert, label=self.label
                    )
                except EnvCallError as exc:
                    self._back_off(slot, exc)
        by_group: dict[int, list[Slot]] = {}
        for slot in ready:
            if slot.session_id:
                by_group.setdefault(slot.group, []).append(slot)
        to_reset: list[Slot] = []
        for group, members in by_group.items():
            if len(members) < self.group_size or any(s.observation is not None for s in members):
                continue  # the rest of its group still plays, or waits to retry
            self._tainted.discard(group)  # a fresh start (a group whose every reset failed)
            seed = seeds.next()
            for slot in members:
                slot.finished = seed is None
                slot.seed = slot.seed if seed is None else seed
            to_reset += [] if seed is None else members
        by_client: dict[int, list[Slot]] = {}
        for slot in to_reset:
            by_client.setdefault(id(slot.client), []).append(slot)

        def run(group: list[Slot]) -> None:
            calls = [ResetCall(s.session_id, seed=s.seed, options=self.reset_options) for s in group]
            for slot, result in zip(group, _batch_or_fail(group[0].client, calls), strict=True):
                if isinstance(result, ResetResult):
                    slot.observation, slot.steps, slot.backoff = result.observation, [], 0.5
                else:
                    assert isinstance(result, EnvCallError)
                    if result.code == grpc.StatusCode.INVALID_ARGUMENT:
                        raise result  # e.g. a reset option refused: asking again will not help
                    self._give_back_once(slot, seeds)
                    self._back_off(slot, result)

        list(self._pool.map(run, by_client.values()))

    def _lose_episode(self, slot: Slot, error: EnvCallError, seeds: SeedSchedule) -> None:
        """Drop the slot's episode in flight (never send half of it, nor mark it truncated: the
        environment did not cut it off), hand its seed out again, and schedule a new session."""
        log.warning(
            "episode lost", extra={"session": slot.name, "steps": len(slot.steps), "error": error.code.name}
        )
        self.stats.episodes_lost += 1
        self._give_back_once(slot, seeds)
        slot.steps, slot.observation, slot.version = [], None, None
        self._back_off(slot, error)

    def _give_back_once(self, slot: Slot, seeds: SeedSchedule) -> None:
        """Hand the slot's seed out again; in a group, once, and the group's episodes are dropped
        (the group is no longer whole: its other episodes have nothing to be compared with)."""
        if self.group_size == 1:
            seeds.give_back(slot.seed)
        elif slot.group not in self._tainted:
            self._tainted.add(slot.group)
            seeds.give_back(slot.seed)

    def _back_off(self, slot: Slot, error: EnvCallError) -> None:
        """Try the slot again later (a create, reset or step failed: logged, whether or not an
        episode was in flight); the wait doubles up to 30 s and is reset by a good reset."""
        log.warning(
            "env call failed, retrying",
            extra={"session": slot.name, "error": error.code.name, "retry_in": slot.backoff},
        )
        # the server (or the way to it) is gone, not the request bad; or the session was reaped
        if error.code in rpc.RETRYABLE or error.code == grpc.StatusCode.NOT_FOUND:
            slot.session_id = ""  # the session is gone with the server (or was reaped): open a new one
        slot.retry_at = time.monotonic() + slot.backoff
        slot.backoff = min(slot.backoff * 2, 30.0)

    def _bootstrap_prompt(self, slot: Slot, observation: Observation, last: PolicyInput) -> list[int]:
        """The prompt for the observation after truncation (its legal actions may be empty: the
        episode is over; the prompt then lists the last step's)."""
        legal = observation.legal_actions or last.legal_actions
        item = PolicyInput(observation.image, observation.task, legal, slot.fact_keys)
        return self.policy.prompt_ids([item])[0]

    def close(self) -> None:
        """Close every session (best effort) and the step threads."""
        for slot in self.slots:
            if slot.session_id:
                with contextlib.suppress(EnvCallError):
                    slot.client.close_session(slot.session_id)
                slot.session_id = ""
        self._pool.shutdown(wait=False)


def _batch_or_fail(
    client: EnvClient, calls: list[ResetCall] | list[StepCall]
) -> list[StepResult | ResetResult | EnvCallError]:
    """``client.batch(calls)``; a failure of the whole call becomes that error for every item."""
    try:
        return client.batch(calls)
    except EnvCallError as exc:
        return [exc for _ in calls]
