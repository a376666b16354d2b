"""The TrainerServicer over real gRPC on a free port, in process, with a real Hub and no model.

Each test speaks the contract of proto/visact/trainer/v1/trainer.proto as an agent would and
checks both the response and what the Hub made of it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from visact import rpc
from visact.trainer import service
from visact.trainer.admission import Admission
from visact.trainer.hub import Hub, PublishedVersion
from visact.trainer.service import ModelIdentity, TrainerServicer
from visact.trainer.v1 import trainer_pb2 as pb
from visact.trainer.v1 import trainer_pb2_grpc as pb_grpc
from visact.wire.episodes import encode_episode
from visact.wire.records import Episode, StepRecord

VOCAB = 50
TEMPERATURE = 0.2
BUFFER_STEPS = 6
MAX_POLICY_LAG = 1
CALL_TIMEOUT = 10.0
LORA = pb.LoraLayout(target_modules=["model.language_model.layers.0.self_attn.q_proj"], rank=4)


@dataclass
class Running:
    hub: Hub
    stub: pb_grpc.TrainerStub
    weights: Path


@pytest.fixture
def trainer(tmp_path: Path) -> Iterator[Running]:
    hub = Hub(buffer_steps=BUFFER_STEPS, max_policy_lag=MAX_POLICY_LAG, agent_timeout=60.0, keep_versions=2)
    servicer = TrainerServicer(
        hub,
        ModelIdentity(
            "tiny-test-vlm", "abc", Admission(vocab_size=VOCAB, max_tokens=64, temperature=TEMPERATURE)
        ),
        pb.SamplingConfig(
            temperature=TEMPERATURE, max_new_tokens=16, chain_of_thought=True, format_penalty=-0.1
        ),
        run_id="run-1",
        lora=LORA,
    )
    server = rpc.Server(rpc.Listen("127.0.0.1", 0, 64 << 20), [rpc.Service(service.SERVICE, servicer)])
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Running(hub, pb_grpc.TrainerStub(channel), tmp_path)
    finally:
        channel.close()
        hub.close()
        server.stop(grace=None)


def register(running: Running, name: str = "host-1") -> str:
    response = running.stub.Register(
        pb.RegisterRequest(
            agent_name=name,
            model_name="tiny-test-vlm",
            base_fingerprint="abc",
            environments=["counter"],
            sessions=2,
        ),
        timeout=CALL_TIMEOUT,
    )
    return str(response.agent_id)


def publish(running: Running, version: int, data: bytes | None = None) -> PublishedVersion:
    data = data if data is not None else f"weights {version}".encode() * 3
    path = running.weights / f"v{version:06d}" / "adapter.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    published = PublishedVersion(version, path, hashlib.sha256(data).hexdigest(), len(data), time.time())
    running.hub.publish(published)
    return published


def episode(steps: int = 3, *, temperature: float = TEMPERATURE, seed: int = 0) -> pb.Episode:
    rng = np.random.default_rng(seed)
    records = [
        StepRecord(
            image=rng.integers(0, 256, (4, 5, 3), dtype=np.uint8),
            prompt_ids=[1, 2, 3],
            generated_ids=[4, 5],
            log_probs=[-0.5, -0.25],
            action_start=1,
            text="+",
            action="+",
            parse_failure="",
            format_penalty=0.0,
            reward=1.0 if i == steps - 1 else 0.0,
            terminated=i == steps - 1,
            truncated=False,
            policy_version=0,
            temperature=temperature,
            session="env:1/s",
            seed=seed,
            episode_step=i + 1,
        )
        for i in range(steps)
    ]
    return encode_episode(Episode(env="counter", session="env:1/s", seed=seed, steps=records))


def submit(running: Running, agent_id: str, message: pb.Episode, episode_id: str) -> pb.SubmitEpisodeResponse:
    return running.stub.SubmitEpisode(
        pb.SubmitEpisodeRequest(agent_id=agent_id, episode=message, episode_id=episode_id),
        timeout=CALL_TIMEOUT,
    )


def rpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()  # type: ignore[operator]
    return raised.value


# ---------------------------------------------------------------------------------------------
# Register
# ---------------------------------------------------------------------------------------------


def test_register_with_another_base_model_fails_precondition_naming_both(trainer: Running) -> None:
    request = pb.RegisterRequest(
        agent_name="h", model_name="other-vlm-7b", base_fingerprint="0123456789abcdef99"
    )

    error = rpc_error(lambda: trainer.stub.Register(request, timeout=CALL_TIMEOUT))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error.details()
    assert "'other-vlm-7b'" in details and "0123456789ab" in details
    assert "'tiny-test-vlm'" in details and "fingerprint abc" in details
    assert "start the agent with --model tiny-test-vlm" in details
    assert trainer.hub.agents == {}


def test_register_returns_an_agent_id_and_the_sampling_config(trainer: Running) -> None:
    publish(trainer, 3)

    response = trainer.stub.Register(
        pb.RegisterRequest(
            agent_name="host-1", base_fingerprint="abc", environments=["counter", "maze"], sessions=4
        ),
        timeout=CALL_TIMEOUT,
    )

    assert response.agent_id.startswith("host-1-")
    agent = trainer.hub.agents[response.agent_id]
    assert (agent.environments, agent.sessions) == (["counter", "maze"], 4)
    assert response.sampling.temperature == pytest.approx(TEMPERATURE)
    assert response.sampling.max_new_tokens == 16 and response.sampling.chain_of_thought
    assert response.sampling.format_penalty == pytest.approx(-0.1)
    assert (response.latest_version, response.max_policy_lag, response.run_id) == (3, MAX_POLICY_LAG, "run-1")
    assert response.lora == LORA  # what the adapters adapt: an agent's engine may refuse it at once
    again = trainer.stub.Register(
        pb.RegisterRequest(agent_name="host-1", base_fingerprint="abc", previous_agent_id=response.agent_id),
        timeout=CALL_TIMEOUT,
    )
    assert again.agent_id == response.agent_id


# ---------------------------------------------------------------------------------------------
# SubmitEpisode
# ---------------------------------------------------------------------------------------------


def test_a_valid_episode_is_accepted_once(trainer: Running) -> None:
    agent_id = register(trainer)

    first = submit(trainer, agent_id, episode(3), "e-1")
    retry = submit(trainer, agent_id, episode(3), "e-1")

    assert first.status == pb.SubmitEpisodeResponse.ACCEPTED
    assert retry.status == pb.SubmitEpisodeResponse.ACCEPTED
    assert trainer.hub.buffered_steps == 3
    assert trainer.hub.counters["episodes_duplicate"] == 1
    batch = trainer.hub.take_batch(3, timeout=0)
    assert batch is not None and batch[0].agent_id == agent_id and len(batch[0].steps) == 3


def test_an_episode_from_an_unknown_agent_is_not_found(trainer: Running) -> None:
    error = rpc_error(lambda: submit(trainer, "nobody-123", episode(), "e-1"))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "'nobody-123'" in error.details() and "call Register again" in error.details()
    assert trainer.hub.buffered_steps == 0


def test_a_malformed_episode_is_invalid_and_nothing_enters_the_buffer(trainer: Running) -> None:
    agent_id = register(trainer)
    message = episode(3)
    message.steps[1].log_probs.pop()  # one token without its log-prob

    error = rpc_error(lambda: submit(trainer, agent_id, message, "e-1"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("episode refused: step 1: 2 generated tokens but 1 log-probs")
    assert trainer.hub.counters["episodes_refused"] == 1
    assert trainer.hub.counters["episodes_accepted"] == 0
    assert trainer.hub.buffered_steps == 0
    assert trainer.hub.take_batch(1, timeout=0) is None


def test_an_episode_sampled_at_another_temperature_is_invalid(trainer: Running) -> None:
    agent_id = register(trainer)

    error = rpc_error(lambda: submit(trainer, agent_id, episode(2, temperature=0.7), "e-1"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "step 0 was sampled at temperature 0.699" in error.details()
    assert "asks for 0.2" in error.details()
    assert trainer.hub.counters["episodes_refused"] == 1
    assert trainer.hub.buffered_steps == 0


def test_an_episode_without_an_id_is_invalid(trainer: Running) -> None:
    agent_id = register(trainer)
    error = rpc_error(lambda: submit(trainer, agent_id, episode(), ""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "episode_id is empty" in error.details()
    assert trainer.hub.buffered_steps == 0


def test_a_full_buffer_answers_wait_with_retry_after_and_keeps_nothing_extra(trainer: Running) -> None:
    agent_id = register(trainer)
    assert submit(trainer, agent_id, episode(3, seed=1), "e-1").status == pb.SubmitEpisodeResponse.ACCEPTED
    assert submit(trainer, agent_id, episode(3, seed=2), "e-2").status == pb.SubmitEpisodeResponse.ACCEPTED

    waiting = submit(trainer, agent_id, episode(3, seed=3), "e-3")

    assert waiting.status == pb.SubmitEpisodeResponse.WAIT
    assert waiting.retry_after_seconds > 0
    assert f"6 of {BUFFER_STEPS}" in waiting.reason
    assert trainer.hub.buffered_steps == 6
    assert trainer.hub.counters["episodes_waited"] == 1
    trainer.hub.take_batch(3, timeout=0)
    retried = submit(trainer, agent_id, episode(3, seed=3), "e-3")
    assert retried.status == pb.SubmitEpisodeResponse.ACCEPTED
    assert trainer.hub.buffered_steps == 6


# ---------------------------------------------------------------------------------------------
# Heartbeat
# ---------------------------------------------------------------------------------------------


def test_heartbeat_records_the_version_and_stops_agents_behind_min_version(trainer: Running) -> None:
    agent_id = register(trainer)
    for version in (1, 2, 3):
        publish(trainer, version)

    behind = trainer.stub.Heartbeat(
        pb.HeartbeatRequest(agent_id=agent_id, running_version=1, steps=17), timeout=CALL_TIMEOUT
    )

    assert trainer.hub.agents[agent_id].version == 1
    assert trainer.hub.agents[agent_id].steps == 17
    assert (behind.latest_version, behind.min_version) == (3, 3 - MAX_POLICY_LAG)
    assert not behind.may_roll_out

    at_min = trainer.stub.Heartbeat(
        pb.HeartbeatRequest(agent_id=agent_id, running_version=2), timeout=CALL_TIMEOUT
    )
    assert at_min.may_roll_out
    assert trainer.hub.agents[agent_id].version == 2


def test_heartbeat_from_an_unknown_agent_is_not_found(trainer: Running) -> None:
    error = rpc_error(
        lambda: trainer.stub.Heartbeat(pb.HeartbeatRequest(agent_id="ghost"), timeout=CALL_TIMEOUT)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "register first" in error.details()


# ---------------------------------------------------------------------------------------------
# WatchVersions and FetchWeights
# ---------------------------------------------------------------------------------------------


def test_watch_versions_streams_the_current_version_at_once_and_then_each_new_one(trainer: Running) -> None:
    agent_id = register(trainer)
    current = publish(trainer, 1)
    stream = trainer.stub.WatchVersions(pb.WatchVersionsRequest(agent_id=agent_id), timeout=CALL_TIMEOUT)
    try:
        first = next(stream)
        assert (first.version, first.sha256, first.size_bytes) == (1, current.sha256, current.size_bytes)

        publisher = threading.Timer(0.05, publish, args=(trainer, 2))
        publisher.start()
        started = time.monotonic()
        second = next(stream)
        publisher.join()
    finally:
        stream.cancel()

    assert second.version == 2
    assert second.sha256 == trainer.hub.versions[2].sha256
    assert time.monotonic() - started < service.WATCH_POLL_SECONDS * 3


def test_watch_versions_from_an_unknown_agent_is_not_found(trainer: Running) -> None:
    stream = trainer.stub.WatchVersions(pb.WatchVersionsRequest(agent_id="ghost"), timeout=CALL_TIMEOUT)
    error = rpc_error(lambda: next(stream))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_fetch_weights_streams_the_file_in_chunks_matching_the_announced_sha256(
    trainer: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "CHUNK_BYTES", 64)
    agent_id = register(trainer)
    data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    published = publish(trainer, 1, data)

    chunks = list(
        trainer.stub.FetchWeights(pb.FetchWeightsRequest(agent_id=agent_id, version=1), timeout=CALL_TIMEOUT)
    )

    assert len(chunks) == 16  # ceil(1000 / 64)
    assert [c.offset for c in chunks] == list(range(0, 1000, 64))
    joined = b"".join(c.data for c in chunks)
    assert joined == data
    assert hashlib.sha256(joined).hexdigest() == published.sha256
    assert {(c.version, c.sha256, c.size_bytes, c.file_name) for c in chunks} == {
        (1, published.sha256, 1000, "adapter.safetensors")
    }


def test_fetch_weights_of_an_unknown_or_dropped_version_is_not_found(trainer: Running) -> None:
    agent_id = register(trainer)
    for version in (1, 2, 3):  # keep_versions=2: version 1 is dropped
        publish(trainer, version)

    for missing in (1, 9):
        stream = trainer.stub.FetchWeights(
            pb.FetchWeightsRequest(agent_id=agent_id, version=missing), timeout=CALL_TIMEOUT
        )
        error = rpc_error(lambda stream=stream: list(stream))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert f"version {missing} is not kept; kept versions: [2, 3]" in error.details()
