"""Agents that speak the real trainer protocol (visact.trainer.v1) without generating anything.

An episode is built once from the tiny VLM's real prompt for a fixed image, with a fixed answer
and log-probs: valid for the trainer, costing nothing to produce. Used in process (the resume
test) and as a separate process for load (``python -m tests.reliability.protocol_agent``):

    python -m tests.reliability.protocol_agent --trainer 127.0.0.1:PORT --agents 8 \
        --seconds 40 --out latencies.json

Each of ``--agents`` threads registers, follows WatchVersions and fetches every new version
(as a real agent does), heartbeats every 2 s and submits episodes back to back, honouring WAIT.
Every call's latency is recorded per method; the summary JSON has counts, errors and the
latencies in milliseconds.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from visact import images
from visact.rpc.auth import token_metadata
from visact.trainer.v1 import trainer_pb2 as pb
from visact.trainer.v1 import trainer_pb2_grpc as pb_grpc

CALL_TIMEOUT = 30.0


@dataclass(frozen=True)
class Template:
    """What an episode of the tiny VLM looks like: its fingerprint, a prompt and an answer."""

    fingerprint: str
    prompt_ids: tuple[int, ...]
    generated_ids: tuple[int, ...]
    image: Any  # env.v1 Image (PNG)


@functools.cache
def tiny_template() -> Template:
    from visact.agent.policy import PolicyInput, VLMPolicy
    from visact.model.loading import load_vlm, weights_fingerprint

    loaded = load_vlm("tiny", device="cpu")
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    item = PolicyInput(pixels, "Move to the target.", ("+", "-"), ("current number",))
    prompt = VLMPolicy(loaded).prompt_ids([item])[0]
    answer = loaded.tokenizer.encode('{"action": "+"}', add_special_tokens=False)
    return Template(
        weights_fingerprint(loaded.model),
        tuple(prompt),
        tuple(answer),
        images.encode(pixels, images.PNG),
    )


@dataclass
class Calls:
    """Latencies (seconds) and failures per method."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, method: str, call: Any) -> Any:
        started = time.perf_counter()
        try:
            return call()
        except grpc.RpcError:
            with self.lock:
                self.errors[method] = self.errors.get(method, 0) + 1
            raise
        finally:
            with self.lock:
                self.latencies.setdefault(method, []).append(time.perf_counter() - started)


class ProtocolAgent:
    """One agent of the trainer protocol over a real channel."""

    def __init__(
        self,
        address: str,
        *,
        name: str = "protocol-agent",
        previous_agent_id: str = "",
        token: str | None = None,
        calls: Calls | None = None,
        steps_per_episode: int = 2,
    ) -> None:
        self.template = tiny_template()
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.TrainerStub(self.channel)
        self.metadata = token_metadata(token)
        self.name = name
        self.previous_agent_id = previous_agent_id
        self.agent_id = ""
        self.latest_version = 0
        self.temperature = 1.0
        self.steps_per_episode = steps_per_episode
        self.calls = calls or Calls()
        self.episodes_accepted = 0

    def close(self) -> None:
        self.channel.close()

    def register(self) -> int:
        """Register (again, with the previous id if any); returns the newest version."""
        request = pb.RegisterRequest(
            agent_name=self.name,
            model_name="tiny",
            base_fingerprint=self.template.fingerprint,
            environments=["numberline"],
            sessions=1,
            previous_agent_id=self.agent_id or self.previous_agent_id,
        )
        response = self.calls.timed(
            "Register", lambda: self.stub.Register(request, timeout=CALL_TIMEOUT, metadata=self.metadata)
        )
        self.agent_id = response.agent_id
        self.latest_version = response.latest_version
        self.temperature = response.sampling.temperature
        return int(response.latest_version)

    def episode(self) -> pb.Episode:
        template, n = self.template, self.steps_per_episode
        message = pb.Episode(env="numberline", session="protocol-agent/0", seed=0)
        for index in range(n):
            message.steps.append(
                pb.TrajectoryStep(
                    image=template.image,
                    prompt_ids=template.prompt_ids,
                    generated_ids=template.generated_ids,
                    log_probs=[-1.0] * len(template.generated_ids),
                    action_start=0,
                    text='{"action": "+"}',
                    action="+",
                    reward=1.0 if index == n - 1 else 0.0,
                    terminated=index == n - 1,
                    policy_version=self.latest_version,
                    temperature=self.temperature,
                    episode_step=index + 1,
                    success=index == n - 1,
                )
            )
        return message

    def submit(self, episode_id: str) -> pb.SubmitEpisodeResponse:
        request = pb.SubmitEpisodeRequest(
            agent_id=self.agent_id, episode=self.episode(), episode_id=episode_id
        )
        response = self.calls.timed(
            "SubmitEpisode",
            lambda: self.stub.SubmitEpisode(request, timeout=CALL_TIMEOUT, metadata=self.metadata),
        )
        self.latest_version = max(self.latest_version, response.latest_version)
        return response

    def submit_until_accepted(self, episode_id: str, timeout: float = 120.0) -> str:
        """Submit until ACCEPTED (honouring WAIT); returns the trainer's reason ("" or "already accepted")."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.submit(episode_id)
            if response.status == pb.SubmitEpisodeResponse.ACCEPTED:
                self.episodes_accepted += 1
                return str(response.reason)
            if time.monotonic() > deadline:
                raise TimeoutError(f"episode {episode_id} not accepted within {timeout}s: {response.reason}")
            time.sleep(max(0.05, response.retry_after_seconds))

    def heartbeat(self) -> pb.HeartbeatResponse:
        request = pb.HeartbeatRequest(agent_id=self.agent_id, running_version=self.latest_version)
        response = self.calls.timed(
            "Heartbeat", lambda: self.stub.Heartbeat(request, timeout=CALL_TIMEOUT, metadata=self.metadata)
        )
        self.latest_version = max(self.latest_version, response.latest_version)
        return response

    def fetch(self, version: int) -> bytes:
        request = pb.FetchWeightsRequest(agent_id=self.agent_id, version=version)
        chunks = self.calls.timed(
            "FetchWeights",
            lambda: list(self.stub.FetchWeights(request, timeout=CALL_TIMEOUT, metadata=self.metadata)),
        )
        return b"".join(c.data for c in chunks)

    def follow_versions(self, stop: threading.Event) -> None:
        """WatchVersions; fetch and check each announced version (as a real agent does)."""
        stream = self.stub.WatchVersions(
            pb.WatchVersionsRequest(agent_id=self.agent_id), metadata=self.metadata
        )
        stopper = threading.Thread(target=lambda: (stop.wait(), stream.cancel()), daemon=True)
        stopper.start()
        try:
            for announcement in stream:
                data = self.fetch(announcement.version)
                if hashlib.sha256(data).hexdigest() != announcement.sha256:
                    raise AssertionError(f"version {announcement.version}: the sha256 does not match")
                self.latest_version = max(self.latest_version, announcement.version)
        except grpc.RpcError as exc:
            if not stop.is_set():
                with self.calls.lock:
                    self.calls.errors["WatchVersions"] = self.calls.errors.get("WatchVersions", 0) + 1
                raise AssertionError(f"WatchVersions failed: {exc.code().name}") from exc


def run_agent(address: str, index: int, seconds: float, calls: Calls, stop: threading.Event) -> int:
    """One load agent: follow versions, heartbeat, submit episodes; returns episodes accepted."""
    agent = ProtocolAgent(address, name=f"load-{index}", calls=calls)
    agent.register()
    watcher = threading.Thread(target=agent.follow_versions, args=(stop,), daemon=True)
    watcher.start()
    deadline = time.monotonic() + seconds
    last_beat, n = 0.0, 0
    try:
        while time.monotonic() < deadline and not stop.is_set():
            if time.monotonic() - last_beat > 2.0:
                agent.heartbeat()
                last_beat = time.monotonic()
            agent.submit_until_accepted(f"{index}-{n}")
            n += 1
    finally:
        stop.set()
        watcher.join(timeout=10)
        agent.close()
    return agent.episodes_accepted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tiny_template()  # load once, before the clock starts
    calls, stop = Calls(), threading.Event()
    accepted = [0] * args.agents
    failures: list[str] = []

    def one(index: int) -> None:
        try:
            accepted[index] = run_agent(args.trainer, index, args.seconds, calls, threading.Event())
        except Exception as exc:
            failures.append(f"agent {index}: {exc!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.agents)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    summary = {
        "agents": args.agents,
        "seconds": round(time.monotonic() - started, 2),
        "episodes_accepted": accepted,
        "errors": calls.errors,
        "failures": failures,
        "latencies_ms": {m: [round(x * 1000, 3) for x in v] for m, v in calls.latencies.items()},
    }
    args.out.write_text(json.dumps(summary))
    return 0 if not failures and not calls.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
