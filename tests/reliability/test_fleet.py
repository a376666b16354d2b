"""Servers that hold a fleet: open streams cost no worker, health watchers cannot deny service, a
trainer follows more agents than it has threads, and a refused BatchStep changes nothing.

Real ``env-server`` and ``trainer serve`` processes on loopback with default flags unless named;
the clients are protocol-level (``visact.orchestration.fleet``: grpc.aio, stubs from the .proto) as a stranger's
would be. Each test reproduces what froze or misled the thread-per-call servers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.processes import TRAINER_ARGS, Process, command, start, start_env, wait_for
from visact.env.v1 import env_pb2 as pb
from visact.env.v1 import env_pb2_grpc as pb_grpc
from visact.env_server.core import StepOutcome
from visact.env_server.games.numberline import NumberLine
from visact.env_server.server import ServerConfig, start_server
from visact.orchestration.fleet import (
    Channels,
    cancel_all,
    close_calls,
    hold_batch_streams,
    hold_health_watches,
    register_watching_agents,
)
from visact.rpc import run_async
from visact.rpc.auth import token_metadata
from visact.trainer.v1 import trainer_pb2 as tpb
from visact.trainer.v1 import trainer_pb2_grpc as tpb_grpc

#: what a served call may take while the streams are held (the old servers: DEADLINE_EXCEEDED)
DEADLINE = 5.0
TOKEN = "fleet-token"


async def _env_still_serves(address: str, token: str | None = None) -> None:
    """Describe, CreateSession, Reset, Step and CloseSession from a client of its own, each in DEADLINE."""
    channels = Channels(address)
    stub = pb_grpc.EnvironmentStub(channels.fresh())
    metadata = token_metadata(token)
    try:
        await stub.Describe(pb.DescribeRequest(), timeout=DEADLINE, metadata=metadata)
        session = (
            await stub.CreateSession(pb.CreateSessionRequest(), timeout=DEADLINE, metadata=metadata)
        ).session_id
        reset = await stub.Reset(
            pb.ResetRequest(session_id=session, seed=3), timeout=DEADLINE, metadata=metadata
        )
        action = reset.observation.legal_actions[0]
        step = await stub.Step(
            pb.StepRequest(session_id=session, action=action), timeout=DEADLINE, metadata=metadata
        )
        assert step.episode_step == 1
        await stub.CloseSession(
            pb.CloseSessionRequest(session_id=session), timeout=DEADLINE, metadata=metadata
        )
    finally:
        await channels.close()


def test_open_batch_streams_hold_no_worker(tmp_path: Path) -> None:
    """64 agents each keep their BatchStepStream open (one round trip done): every other call is
    still served at once (the old server froze at 16, its worker count)."""
    env = start_env(tmp_path, "env")

    async def scenario() -> None:
        channels = Channels(env.address)
        held = await hold_batch_streams(channels, 64, timeout=10.0)
        try:
            await _env_still_serves(env.address)
            # and every held stream still answers its next request
            await asyncio.gather(*(call.write(pb.BatchStepRequest()) for call in held))
            answers = await asyncio.gather(*(asyncio.wait_for(call.read(), DEADLINE) for call in held))
            assert all(a is not grpc.aio.EOF and len(a.results) == 0 for a in answers)
        finally:
            cancel_all(held)
            await channels.close()

    try:
        run_async(scenario())
    finally:
        env.stop()


def test_unauthenticated_health_watchers_cannot_deny_service(tmp_path: Path) -> None:
    """64 Health/Watch streams without a token (health is exempt from it) on an env server run
    with --token: authenticated calls are still served (the old server froze at 16)."""
    env = start_env(tmp_path, "env", 0, "--token", TOKEN)

    async def scenario() -> None:
        channels = Channels(env.address)
        watches = await hold_health_watches(channels, 64, timeout=10.0)
        try:
            await _env_still_serves(env.address, TOKEN)
        finally:
            cancel_all(watches)
            await channels.close()

    try:
        run_async(scenario())
    finally:
        env.stop()


def test_a_refused_batch_step_leaves_its_sessions_unchanged(tmp_path: Path) -> None:
    """--max-message-mb 1 with --max-batch-items 16: 16 raw 300x300 results cannot fit 1 MiB. The
    server advertises what fits, and refuses a bigger batch before applying any item (the old
    server answered RESOURCE_EXHAUSTED after applying all 16 resets)."""
    env = start_env(tmp_path, "env", 0, "--max-message-mb", "1", "--max-batch-items", "16")
    channel = grpc.insecure_channel(env.address)
    stub = pb_grpc.EnvironmentStub(channel)
    try:
        spec = stub.Describe(pb.DescribeRequest(), timeout=DEADLINE).spec
        raw_result = spec.image_height * spec.image_width * spec.image_channels
        assert spec.max_batch_items * raw_result < spec.max_message_bytes, spec
        session = stub.CreateSession(pb.CreateSessionRequest(), timeout=DEADLINE).session_id
        first = stub.Reset(pb.ResetRequest(session_id=session, seed=1), timeout=DEADLINE)
        assert first.episode == 1
        resets = [pb.BatchItem(reset=pb.ResetRequest(session_id=session, seed=2)) for _ in range(16)]
        with pytest.raises(grpc.RpcError) as refused:
            stub.BatchStep(pb.BatchStepRequest(items=resets), timeout=DEADLINE)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert f"at most {spec.max_batch_items} items" in (refused.value.details() or "")
        # nothing was applied: the next reset starts the session's second episode
        assert stub.Reset(pb.ResetRequest(session_id=session, seed=1), timeout=DEADLINE).episode == 2
        # and a full batch of what the server advertises fits its message limit
        full = [pb.BatchItem(reset=pb.ResetRequest(session_id=session, seed=2))] * spec.max_batch_items
        answered = stub.BatchStep(pb.BatchStepRequest(items=full), timeout=DEADLINE)
        assert [r.WhichOneof("result") for r in answered.results] == ["reset"] * spec.max_batch_items
    finally:
        channel.close()
        env.stop()


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """`trainer serve` on the tiny VLM with no learning to do (no agent submits episodes)."""
    workdir = tmp_path_factory.mktemp("fleet-trainer")
    ready = workdir / "trainer.port"
    argv = [
        *command("trainer"), "serve", *TRAINER_ARGS, "--port", "0", "--ready-file", str(ready),
        "--checkpoint-dir", str(workdir / "run"),
    ]  # fmt: skip
    process = start("trainer", argv, workdir, ready_file=ready, timeout=300)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def fingerprint() -> str:
    from tests.reliability.protocol_agent import tiny_template

    return tiny_template().fingerprint


async def _trainer_still_serves(address: str, fingerprint: str) -> None:
    channels = Channels(address)
    stub = tpb_grpc.TrainerStub(channels.fresh())
    try:
        registered = await stub.Register(
            tpb.RegisterRequest(agent_name="late", model_name="tiny", base_fingerprint=fingerprint),
            timeout=DEADLINE,
        )
        beat = await stub.Heartbeat(
            tpb.HeartbeatRequest(agent_id=registered.agent_id, running_version=registered.latest_version),
            timeout=DEADLINE,
        )
        assert beat.latest_version == registered.latest_version
    finally:
        await channels.close()


def test_the_trainer_follows_more_agents_than_it_has_threads(trainer: Process, fingerprint: str) -> None:
    """200 agents, each registered and holding WatchVersions: every one gets the first announcement,
    and Register/Heartbeat are still served (the old trainer announced to 64, then froze)."""

    async def scenario() -> None:
        channels = Channels(trainer.address)
        agents = await register_watching_agents(channels, 200, fingerprint=fingerprint, timeout=20.0)
        try:
            latest = agents[0].versions[0]
            assert all(agent.versions == [latest] for agent in agents)
            await _trainer_still_serves(trainer.address, fingerprint)
        finally:
            cancel_all([agent.call for agent in agents])
            await channels.close()

    run_async(scenario())


def test_unauthenticated_health_watchers_cannot_freeze_the_trainer(
    trainer: Process, fingerprint: str
) -> None:
    """128 Health/Watch streams: the trainer still registers and answers agents (the old one froze at 64)."""

    async def scenario() -> None:
        channels = Channels(trainer.address)
        watches = await hold_health_watches(channels, 128, timeout=20.0)
        try:
            await _trainer_still_serves(trainer.address, fingerprint)
        finally:
            cancel_all(watches)
            await channels.close()

    run_async(scenario())


# ---------------------------------------------------------------------------------------------
# scale: what one server holds while still answering
# ---------------------------------------------------------------------------------------------

SCALE_STREAMS = 2000
SCALE_WATCHERS = 1000
SCALE_AGENTS = 1000


@pytest.mark.slow
def test_one_env_server_holds_thousands_of_streams_and_keeps_serving(tmp_path: Path) -> None:
    """2,000 open BatchStepStreams and 1,000 unauthenticated Health.Watch streams on one env server
    (default flags): another client's Describe/CreateSession/Reset/Step/CloseSession all succeed,
    and every held stream still answers."""
    env = start_env(tmp_path, "env")

    async def scenario() -> None:
        channels = Channels(env.address)
        streams = await hold_batch_streams(channels, SCALE_STREAMS, timeout=60.0)
        watches = await hold_health_watches(channels, SCALE_WATCHERS, timeout=60.0)
        try:
            for _ in range(3):
                await _env_still_serves(env.address)
            await asyncio.gather(*(call.write(pb.BatchStepRequest()) for call in streams))
            answers = await asyncio.gather(*(asyncio.wait_for(call.read(), 60.0) for call in streams))
            assert sum(a is not grpc.aio.EOF for a in answers) == SCALE_STREAMS
        finally:
            cancel_all(streams + watches)
            await channels.close()

    try:
        run_async(scenario())
    finally:
        env.stop()


@pytest.mark.slow
def test_one_trainer_holds_a_thousand_agents_and_announces_every_version_to_each(
    trainer: Process, fingerprint: str
) -> None:
    """1,000 registered agents, each holding WatchVersions: while a protocol agent submits episodes
    and the trainer publishes two more versions, every agent receives every version, in order,
    and Register/Heartbeat/SubmitEpisode keep succeeding."""
    from tests.reliability.protocol_agent import ProtocolAgent

    channels = Channels(trainer.address)
    agents = run_async(
        register_watching_agents(channels, SCALE_AGENTS, fingerprint=fingerprint, timeout=60.0)
    )
    submitter = ProtocolAgent(trainer.address, name="submitter")
    try:
        first = agents[0].versions[0]
        assert all(agent.versions == [first] for agent in agents)
        submitter.register()
        n = 0
        while submitter.heartbeat().latest_version < first + 2:
            assert submitter.submit_until_accepted(f"scale-{n}", timeout=120) in ("", "already accepted")
            n += 1
        expected = list(range(first, first + 3))
        wait_for(
            lambda: all(agent.versions[:3] == expected for agent in agents),
            120,
            lambda: f"not every agent got {expected}: {sorted({tuple(a.versions) for a in agents})[:5]}",
            trainer,
        )
        run_async(_trainer_still_serves(trainer.address, fingerprint))
        assert not submitter.calls.errors
    finally:
        submitter.close()
        run_async(close_calls([agent.call for agent in agents]))
        run_async(channels.close())


class SlowNumberLine(NumberLine):
    """NumberLine whose steps take half a second (a heavy game, or one that calls out)."""

    def step(self, action: str) -> StepOutcome:
        time.sleep(0.5)
        return super().step(action)


def test_slow_environment_work_runs_off_the_event_loop() -> None:
    """Four sessions each in a half-second step: Describe, CreateSession and CloseSession are all
    answered before any of the steps ends (the steps run on the server's worker threads, not on
    its event loop)."""
    running = start_server(ServerConfig(host="127.0.0.1", port=0, workers=8), env_factory=SlowNumberLine)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.EnvironmentStub(channel)
    try:
        sessions = [
            stub.CreateSession(pb.CreateSessionRequest(), timeout=DEADLINE).session_id for _ in range(4)
        ]
        for session in sessions:
            stub.Reset(pb.ResetRequest(session_id=session, seed=1), timeout=DEADLINE)
        for _ in range(2):  # the second round: the step is known to be slow, and still off the loop
            steps = [
                stub.Step.future(pb.StepRequest(session_id=s, action="+"), timeout=DEADLINE) for s in sessions
            ]
            time.sleep(0.1)
            stub.Describe(pb.DescribeRequest(), timeout=DEADLINE)
            extra = stub.CreateSession(pb.CreateSessionRequest(), timeout=DEADLINE).session_id
            stub.CloseSession(pb.CloseSessionRequest(session_id=extra), timeout=DEADLINE)
            assert not any(step.done() for step in steps), "a call waited for the slow steps"
            assert all(step.result().episode_step >= 1 for step in steps)
    finally:
        channel.close()
        running.drain(grace=0)
