"""env-conformance against real servers on port 0: a conformant one passes, broken ones fail the right check.

The broken servers are the generic servicer with one deviation each (a wrong image size,
OK for an unknown session, no truncation, ignored seeds, a scrambled batch, the wrong error
precedence, no reaper, a hung Step), served bare (no health, no reflection). The CLI runs as
a subprocess against ``env-server`` processes, with and without a bearer token; TLS in process.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.envs import CounterEnv
from tests.processes import Process, command, start, untokened_environment
from visact import rpc
from visact.env.v1 import env_pb2 as pb
from visact.env.v1 import env_pb2_grpc as pb_grpc
from visact.env_server.conformance import NAMES, Options, Outcome, Report, check_env, run_conformance
from visact.env_server.conformance.cli import main as conformance_main
from visact.env_server.core import Env, StepOutcome
from visact.env_server.errors import InvalidAction, UnknownSession
from visact.env_server.server import ServerConfig, start_server
from visact.env_server.service import SERVICE, EnvironmentServicer, ServiceLimits
from visact.env_server.sessions import Session


# ---------------------------------------------------------------------- a conformant server
def test_counter_server_passes_every_check() -> None:
    config = ServerConfig(port=0, host="127.0.0.1", idle_timeout=1.0, max_sessions=8)
    running = start_server(config, env_factory=CounterEnv)
    try:
        report = run_conformance(f"127.0.0.1:{running.port}")
    finally:
        running.drain(grace=0)
    assert report.ok, report.to_text()
    outcomes = {r.name: r.outcome for r in report.results}
    assert list(outcomes) == list(NAMES)
    assert outcomes.pop("auth.token") is Outcome.SKIP  # no --token given
    assert set(outcomes.values()) == {Outcome.PASS}, report.to_text()
    assert "NOT_FOUND" in report.result("sessions.idle_reaper").reason
    assert "freed the full server" in report.result("sessions.idle_reaper").reason
    assert "session 9 with max_sessions=8" in report.result("sessions.capacity").reason


def test_token_check_passes_with_the_token_and_describe_fails_without() -> None:
    config = ServerConfig(port=0, host="127.0.0.1", token="s3cret")
    running = start_server(config, env_factory=CounterEnv)
    address = f"127.0.0.1:{running.port}"
    try:
        with_token = run_conformance(address, Options(token="s3cret", only=["describe", "auth", "health"]))
        without = run_conformance(address, Options(only=["describe", "errors.unknown_session", "health"]))
    finally:
        running.drain(grace=0)
    assert with_token.ok and with_token.result("auth.token").outcome is Outcome.PASS, with_token.to_text()
    assert not without.ok
    assert "UNAUTHENTICATED" in without.result("describe").reason
    assert "pass --token" in without.result("describe").reason
    assert without.result("errors.unknown_session").outcome is Outcome.SKIP
    assert without.result("health").outcome is Outcome.PASS  # health is exempt from the token


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key (made with the openssl command)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_options_reach_a_tls_server(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    running = start_server(
        ServerConfig(port=0, host="127.0.0.1", tls_cert=cert, tls_key=key), env_factory=CounterEnv
    )
    address = f"127.0.0.1:{running.port}"
    try:
        over_tls = run_conformance(address, Options(tls_ca=cert, only=["describe", "errors.unknown_session"]))
        plaintext = run_conformance(address, Options(connect_timeout=0.5, only=["describe"]))
    finally:
        running.drain(grace=0)
    assert over_tls.ok, over_tls.to_text()
    assert plaintext.result("connect").outcome is Outcome.FAIL
    assert "--tls-ca" in plaintext.result("connect").reason


# ---------------------------------------------------------------------- broken servers
class NarrowImageEnv(CounterEnv):
    """Renders one column fewer than its declared image_shape."""

    def render(self) -> np.ndarray:
        return super().render()[:, :-1]


class SeedIgnoringEnv(CounterEnv):
    """Draws its target from a shared counter, whatever the seed."""

    draws = 0

    def reset(self, seed: int | None = None, options: object = None) -> None:
        super().reset(seed)
        SeedIgnoringEnv.draws += 1
        self.target = 2 + SeedIgnoringEnv.draws % 3


class OkForUnknownSession(EnvironmentServicer):
    """CloseSession of an unknown session answers OK."""

    def close_session(self, request: pb.CloseSessionRequest) -> pb.CloseSessionResponse:
        try:
            return super().close_session(request)
        except UnknownSession:
            return pb.CloseSessionResponse()


class NeverTruncates(EnvironmentServicer):
    """Declares max_episode_steps but lets episodes run past it."""

    def _apply_time_limit(self, session: Session, outcome: StepOutcome) -> StepOutcome:
        return outcome


class ReversedBatch(EnvironmentServicer):
    """Answers BatchStep with the results in reverse order."""

    def batch_step_bytes(self, request: pb.BatchStepRequest) -> bytes:
        response = super().batch_step(request)
        return pb.BatchStepResponse(results=list(reversed(response.results))).SerializeToString()


class ValidatesActionFirst(EnvironmentServicer):
    """Refuses an illegal action before noticing that the session needs a Reset."""

    def step(self, request: pb.StepRequest, out: pb.StepResponse | None = None) -> pb.StepResponse:
        with self.sessions.use(request.session_id) as session:
            if request.action not in session.env.legal_actions():
                raise InvalidAction(f"{request.action!r} is not legal")
        return super().step(request, out)


class HungStep(EnvironmentServicer):
    """Step takes longer than the client's deadline."""

    def step(self, request: pb.StepRequest, out: pb.StepResponse | None = None) -> pb.StepResponse:
        time.sleep(1.5)
        return super().step(request, out)


ServicerFactory = Callable[[Callable[[], Env], ServiceLimits], EnvironmentServicer]


def serve_bare(
    servicer_cls: ServicerFactory, env: Callable[[], Env], *, reaper: bool = True
) -> tuple[rpc.Server, EnvironmentServicer, int]:
    """The Environment service alone (no health, no reflection) on a free port."""
    # grpc's default message limit (4 MiB), which this bare server keeps
    limits = ServiceLimits(max_sessions=8, idle_timeout=1.0, max_message_bytes=4 * 1024 * 1024)
    servicer = servicer_cls(env, limits)
    listen = rpc.Listen("127.0.0.1", 0, limits.max_message_bytes)
    server = rpc.Server(listen, [rpc.Service(SERVICE, servicer)], servicer.workers, standard_services=False)
    if reaper:
        servicer.sessions.start_reaper()
    return server, servicer, server.port


def check_broken(
    servicer_cls: ServicerFactory, env: Callable[[], Env], only: str, *, reaper: bool = True, **options: float
) -> Report:
    server, servicer, port = serve_bare(servicer_cls, env, reaper=reaper)
    try:
        return run_conformance(f"127.0.0.1:{port}", Options(only=[only, "health", "reflection"], **options))
    finally:
        server.stop(0)
        servicer.sessions.stop_reaper()


@pytest.mark.parametrize(
    ("servicer_cls", "env", "check", "expected"),
    [
        (
            EnvironmentServicer,
            NarrowImageEnv,
            "reset.observation",
            "image declares height, width, channels = (8, 5, 3)",
        ),
        (OkForUnknownSession, CounterEnv, "errors.unknown_session", "CloseSession of an unknown session"),
        (NeverTruncates, CounterEnv, "episode.truncation", "expected truncated=true at step 6"),
        (EnvironmentServicer, SeedIgnoringEnv, "seed.determinism", "gave a different episode"),
        (ReversedBatch, CounterEnv, "batch_step", "item 1 (reset seed 1600)"),
        (
            ValidatesActionFirst,
            CounterEnv,
            "errors.precedence",
            "expected FAILED_PRECONDITION, got INVALID_ARGUMENT",
        ),
    ],
    ids=[
        "wrong-image-size",
        "ok-for-unknown-session",
        "never-truncates",
        "ignores-seed",
        "reversed-batch",
        "invalid-before-precondition",
    ],
)
def test_a_broken_server_fails_the_matching_check(
    servicer_cls: ServicerFactory, env: Callable[[], Env], check: str, expected: str
) -> None:
    report = check_broken(servicer_cls, env, check)
    result = report.result(check)
    assert result.outcome is Outcome.FAIL, report.to_text()
    assert expected in result.reason, result.reason
    assert not report.ok
    # the bare server has neither: recommended checks are skipped, not failed
    assert report.result("health").outcome is Outcome.SKIP
    assert report.result("reflection").outcome is Outcome.SKIP


def test_check_env_runs_the_suite_on_a_class_in_process() -> None:
    good = check_env(CounterEnv)
    assert good.ok, good.to_text()
    assert {r.outcome for r in good.results} == {Outcome.PASS, Outcome.SKIP}  # auth.token: no token
    narrow = check_env(NarrowImageEnv, Options(only=["reset.observation"]))
    assert narrow.result("reset.observation").outcome is Outcome.FAIL
    assert "image declares height, width, channels = (8, 5, 3)" in narrow.result("reset.observation").reason


def test_a_server_that_never_reaps_fails_the_reaper_check() -> None:
    report = check_broken(EnvironmentServicer, CounterEnv, "sessions.idle_reaper", reaper=False)
    result = report.result("sessions.idle_reaper")
    assert result.outcome is Outcome.FAIL, report.to_text()
    assert "expected NOT_FOUND" in result.reason and "session_idle_timeout_seconds=1" in result.reason


def test_a_hung_server_fails_by_deadline_rather_than_hanging() -> None:
    started = time.monotonic()
    report = check_broken(HungStep, CounterEnv, "episode.play", timeout=0.3)
    result = report.result("episode.play")
    assert result.outcome is Outcome.FAIL
    assert "DEADLINE_EXCEEDED" in result.reason and "did not answer in time" in result.reason
    assert time.monotonic() - started < 5


class ThreadPerCall(pb_grpc.EnvironmentServicer):
    """The servicer's own methods on grpc's thread-per-call server: a held stream keeps a thread."""

    def __init__(self, env: Callable[[], Env]) -> None:
        self.inner = EnvironmentServicer(env, ServiceLimits(max_sessions=8, idle_timeout=0))

    def Describe(self, request: pb.DescribeRequest, context: object) -> pb.DescribeResponse:
        return pb.DescribeResponse(spec=self.inner.spec)

    def CreateSession(self, request: pb.CreateSessionRequest, context: object) -> pb.CreateSessionResponse:
        return self.inner.create_session(request)

    def Reset(self, request: pb.ResetRequest, context: object) -> pb.ResetResponse:
        return self.inner.reset(request)

    def CloseSession(self, request: pb.CloseSessionRequest, context: object) -> pb.CloseSessionResponse:
        return self.inner.close_session(request)

    def BatchStepStream(
        self, requests: Iterator[pb.BatchStepRequest], context: object
    ) -> Iterator[pb.BatchStepResponse]:
        for request in requests:
            yield self.inner.batch_step(request)


def test_a_thread_per_call_server_fails_the_held_streams_check() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_EnvironmentServicer_to_server(ThreadPerCall(CounterEnv), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        report = run_conformance(f"127.0.0.1:{port}", Options(only=["capacity"], timeout=1.0))
    finally:
        server.stop(0)
    result = report.result("capacity.held_streams")
    assert result.outcome is Outcome.FAIL, report.to_text()
    assert "BatchStepStream 17 got no answer in 1 s while 16 others were held open" in result.reason


def test_an_unreachable_address_is_one_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    report = run_conformance(
        f"127.0.0.1:{port}", Options(connect_timeout=0.5, only=["reset.observation", "health"])
    )
    assert [(r.name, r.outcome) for r in report.results] == [
        ("connect", Outcome.FAIL),
        ("reset.observation", Outcome.SKIP),
        ("health", Outcome.SKIP),
    ]


# ---------------------------------------------------------------------- the CLI as a process
@pytest.fixture
def env_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Starts ``env-server`` processes; returns their addresses; stops them afterwards."""
    processes: list[Process] = []

    def begin(*extra: str) -> str:
        name = f"server-{len(processes)}"
        ready = tmp_path / f"{name}.port"
        args = ["--env", "numberline", "--port", "0", "--ready-file", str(ready), "--idle-timeout", "2"]
        argv = [*command("env-server"), *args, "--log-format", "text", "--grace", "0", *extra]
        process = start(name, argv, tmp_path, ready_file=ready, timeout=30)
        processes.append(process)
        return process.address

    yield begin
    for process in processes:
        process.stop(timeout=15)


def conformance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command("env-conformance"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=untokened_environment(),
    )


def test_cli_passes_the_numberline_server(env_server: Callable[..., str], tmp_path: Path) -> None:
    address = env_server("--max-sessions", "16")
    report_file = tmp_path / "report.json"
    result = conformance("--server", address, "--json", str(report_file))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].endswith(f"'numberline' at {address} is CONFORMANT")
    assert any(line.startswith("PASS  sessions.idle_reaper") for line in lines), result.stdout
    assert any(line.startswith("PASS  sessions.capacity") for line in lines), result.stdout
    report = json.loads(report_file.read_text())
    assert report["ok"] is True and report["env_name"] == "numberline"
    assert [c["name"] for c in report["checks"]] == list(NAMES)
    assert report["counts"]["FAIL"] == 0


def test_cli_with_a_token_server(env_server: Callable[..., str]) -> None:
    address = env_server("--token", "s3cret")
    refused = conformance("--server", address)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "FAIL  describe" in refused.stdout and "UNAUTHENTICATED" in refused.stdout
    assert "NOT CONFORMANT" in refused.stdout
    accepted = conformance("--server", address, "--token", "s3cret")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "PASS  auth.token" in accepted.stdout


def test_cli_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert conformance_main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in NAMES) and "recommended" in listed
    with pytest.raises(SystemExit) as exited:
        conformance_main(["--server", "127.0.0.1:1", "--only", "no.such.check"])
    assert exited.value.code == 2
    assert "unknown check" in capsys.readouterr().err


@pytest.mark.parametrize("game", ["ezpoints", "points24", "blackjack"])
def test_cli_passes_every_other_builtin_game(env_server: Callable[..., str], game: str) -> None:
    address = env_server("--env", game, "--max-sessions", "16")
    result = conformance("--server", address)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].endswith(f"'{game}' at {address} is CONFORMANT")
