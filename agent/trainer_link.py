"""The agent's side of the trainer protocol: register, follow weights versions, ship episodes.

- A watcher thread follows ``WatchVersions``; for each new version it fetches the adapter,
  checks its sha256 and keeps it *pending*. The rollout applies a pending adapter only when no
  generation runs (between rounds, ``between_rounds``, or while a finished episode waits for
  room in the outbox), all at once, so a batch is never sampled by two versions and a broken
  transfer never leaves a half-applied adapter (the agent keeps what it had and fetches again).
- ``between_rounds`` also enforces the staleness bound: while the agent's version is older
  than the newest minus ``max_policy_lag`` it waits for newer weights instead of rolling out.
- A sender thread ships finished episodes; WAIT (the trainer's buffer is full) is honoured by
  retrying later, never by dropping; a full queue blocks the rollout (backpressure).
- A trainer that restarts is re-registered with the agent's previous id; episodes not yet
  acknowledged are sent again under the same episode id (the trainer counts an id once).
"""

from __future__ import annotations

import itertools
import logging
import queue
import secrets
import threading
import time
from typing import Any

import grpc

from visact import rpc
from visact.agent.config import AgentConfig
from visact.agent.policy import VLMPolicy
from visact.model.adapters import AdapterError, read_adapter
from visact.rpc.auth import token_metadata
from visact.trainer.v1 import trainer_pb2 as pb
from visact.trainer.v1 import trainer_pb2_grpc as pb_grpc
from visact.wire.episodes import encode_episode
from visact.wire.records import Episode

log = logging.getLogger(__name__)


class TrainerLink:
    """One agent's connection to the trainer."""

    def __init__(
        self, config: AgentConfig, policy: VLMPolicy, environments: list[str], stop: threading.Event
    ) -> None:
        assert config.servers.trainer is not None
        self.config = config
        self.policy = policy
        self.environments = environments
        self.stop = stop
        how = rpc.Dial(
            tls_ca=config.servers.tls_ca, tls_cert=config.servers.tls_cert, tls_key=config.servers.tls_key
        )
        self._channel = rpc.dial(config.servers.trainer, how)
        self._stub = pb_grpc.TrainerStub(self._channel)
        self._metadata = token_metadata(config.servers.token)
        self.fingerprint = policy.engine.fingerprint
        self.agent_id = ""
        self.latest_version = 0
        self.max_policy_lag = 0
        self.format_penalty = 0.0  # the trainer's, from register()
        self.group_size = 1  # the trainer's, from register()
        self._pending: tuple[int, dict[str, Any], dict[str, Any]] | None = None
        self._pending_lock = threading.Lock()
        # Small on purpose: when the trainer is the bottleneck, queued episodes only grow stale.
        self._outbox: queue.Queue[tuple[str, pb.Episode]] = queue.Queue(maxsize=4)
        self._ids = (f"{secrets.token_hex(4)}-{n}" for n in itertools.count())
        self.steps_sent = 0
        self.episodes_sent = 0
        self.applied_any = False
        self._register_lock = threading.Lock()
        self._beat_now = threading.Event()  # set after applying weights: report the version at once
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.register()
        for target, name in (
            (self._watch, "weights-watch"),
            (self._send, "episode-send"),
            (self._beat, "heartbeat"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def register(self) -> None:
        """Register (again), retrying while the trainer is unreachable; applies its sampling config."""
        request = pb.RegisterRequest(
            agent_name=self.config.run.name,
            model_name=self.config.policy.model,
            base_fingerprint=self.fingerprint,
            environments=self.environments,
            sessions=self.config.servers.sessions,
            previous_agent_id=self.agent_id,
        )
        response = self._retry(lambda: self._stub.Register(request, timeout=30, metadata=self._metadata))
        self.agent_id = response.agent_id
        self.latest_version = response.latest_version
        self.max_policy_lag = response.max_policy_lag
        sampling = response.sampling
        self.policy.temperature = sampling.temperature
        self.policy.max_new_tokens = sampling.max_new_tokens
        self.policy.cot = sampling.chain_of_thought
        self.policy.prefill_answer = sampling.prefill_answer
        self.format_penalty = float(sampling.format_penalty)
        self.group_size = max(1, sampling.group_size)  # 0: a trainer from before groups
        engine = self.policy.engine
        engine.keep_versions(self.max_policy_lag + 1)  # an episode may finish under the version it began with
        if response.lora.target_modules:  # absent from a trainer from before LoraLayout: checked per adapter
            engine.check_lora(list(response.lora.target_modules), response.lora.rank)  # EngineError: refused
        log.info(
            "registered",
            extra={
                "agent": self.agent_id,
                "latest_version": self.latest_version,
                "cot": self.policy.cot,
                "prefill_answer": self.policy.prefill_answer,
            },
        )

    def close(self) -> None:
        self.stop.set()
        self._channel.close()

    # ------------------------------------------------------------------ weights
    def between_rounds(self) -> None:
        """Apply a pending adapter; wait while too stale to roll out."""
        self._apply_pending()
        while not self.stop.is_set() and self.policy.version < self.latest_version - self.max_policy_lag:
            if not self._apply_pending():
                time.sleep(0.05)

    def wait_for_first_weights(self, timeout: float = 300.0) -> None:
        """Block until the trainer's newest weights (at registration) are applied."""
        deadline = time.monotonic() + timeout
        while not self.stop.is_set() and not (
            self.applied_any and self.policy.version >= self.latest_version
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no weights from the trainer at {self.config.servers.trainer} within {timeout}s"
                )
            if not self._apply_pending():
                time.sleep(0.05)

    def _apply_pending(self) -> bool:
        with self._pending_lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return False
        version, tensors, lora = pending
        if self.applied_any and version <= self.policy.version:
            return False
        started = time.monotonic()
        try:
            self.policy.engine.load_version(version, tensors, lora)  # validates before it loads
        except (AdapterError, TypeError, ValueError) as exc:
            # hash-true but unfit (another LoRA layout): keep the weights we run and wait for the next
            log.error("weights refused", extra={"version": version, "error": str(exc)})
            return False
        self.applied_any = True
        self._beat_now.set()
        log.info(
            "weights applied",
            extra={
                "version": version,
                "engine": self.policy.engine.name,
                "seconds": time.monotonic() - started,
            },
        )
        return True

    def _watch(self) -> None:
        while not self.stop.is_set():
            used_id = self.agent_id
            try:
                stream = self._stub.WatchVersions(
                    pb.WatchVersionsRequest(agent_id=self.agent_id), metadata=self._metadata
                )
                for announcement in stream:
                    self.latest_version = max(self.latest_version, announcement.version)
                    self._fetch_until_applied(announcement)
                    if self.stop.is_set():
                        break
            except grpc.RpcError as exc:
                if self.stop.is_set():
                    return
                self._recover(exc, "watching versions", used_id)

    def _fetch_until_applied(self, announcement: pb.VersionAnnouncement) -> None:
        """Fetch and verify one version; on a bad transfer keep the old weights and fetch again."""
        delay = 0.2
        while not self.stop.is_set() and announcement.version >= self.latest_version:
            try:
                data = self._fetch(announcement.version)
                tensors, lora = read_adapter(data, expected_sha256=announcement.sha256)
            except AdapterError as exc:
                log.warning("weights refused", extra={"version": announcement.version, "error": str(exc)})
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return  # superseded: a newer announcement follows
                log.warning(
                    "weights fetch failed", extra={"version": announcement.version, "error": exc.code().name}
                )
            else:
                with self._pending_lock:
                    self._pending = (announcement.version, tensors, lora)
                return
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _fetch(self, version: int) -> bytes:
        chunks = self._stub.FetchWeights(
            pb.FetchWeightsRequest(agent_id=self.agent_id, version=version),
            timeout=120,
            metadata=self._metadata,
        )
        parts = []
        for chunk in chunks:
            parts.append(chunk.data)
        return b"".join(parts)

    # ------------------------------------------------------------------ episodes
    def submit(self, episode: Episode) -> None:
        """Queue a finished episode; blocks while the queue is full (backpressure).

        Called by the rollout when an episode ends, after the round's answers were sampled and
        their version recorded: no generation runs, so a pending adapter may be applied while
        it waits. Without that, an agent held up by a full trainer could never take the new
        weights the trainer waits for it to run (e.g. at --max-updates).
        """
        message = encode_episode(episode)
        episode_id = next(self._ids)
        while not self.stop.is_set():
            try:
                self._outbox.put((episode_id, message), timeout=0.5)
                return
            except queue.Full:
                self._apply_pending()

    def _send(self) -> None:
        while not self.stop.is_set():
            try:
                episode_id, message = self._outbox.get(timeout=0.5)
            except queue.Empty:
                continue
            self._send_one(episode_id, message)

    def _send_one(self, episode_id: str, message: pb.Episode) -> None:
        while not self.stop.is_set():
            used_id = self.agent_id
            request = pb.SubmitEpisodeRequest(agent_id=used_id, episode=message, episode_id=episode_id)
            try:
                response = self._stub.SubmitEpisode(request, timeout=60, metadata=self._metadata)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    log.error("episode refused by the trainer", extra={"error": exc.details()})
                    return
                self._recover(exc, "submitting an episode", used_id)
                continue
            self.latest_version = max(self.latest_version, response.latest_version)
            if response.status == pb.SubmitEpisodeResponse.ACCEPTED:
                self.episodes_sent += 1
                self.steps_sent += len(message.steps)
                return
            time.sleep(max(response.retry_after_seconds, 0.05))

    def _beat(self) -> None:
        while not self.stop.is_set():
            self._beat_now.wait(2.0)
            self._beat_now.clear()
            if self.stop.is_set():
                return
            used_id = self.agent_id
            try:
                response = self._stub.Heartbeat(
                    pb.HeartbeatRequest(
                        agent_id=self.agent_id, running_version=self.policy.version, steps=self.steps_sent
                    ),
                    timeout=10,
                    metadata=self._metadata,
                )
                self.latest_version = max(self.latest_version, response.latest_version)
            except grpc.RpcError as exc:
                self._recover(exc, "heartbeat", used_id)

    # ------------------------------------------------------------------ failures
    def _recover(self, exc: grpc.RpcError, doing: str, used_id: str) -> None:
        """Back off while the trainer is away; register again (once, whichever thread sees it
        first) when it no longer knows ``used_id``, the id the failed call carried."""
        code = exc.code()
        log.warning("trainer call failed", extra={"while": doing, "code": code.name})
        if code == grpc.StatusCode.NOT_FOUND:
            with self._register_lock:
                if self.agent_id == used_id:
                    self.register()
            return
        if code not in rpc.RETRYABLE:
            raise exc
        self.stop.wait(1.0)

    def _retry(self, call: Any) -> Any:
        delay = 0.5
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                if exc.code() not in rpc.RETRYABLE or self.stop.is_set():
                    raise
                log.warning("trainer unreachable, retrying", extra={"code": exc.code().name, "delay": delay})
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)
