"""The env-server image, for real: build it with podman on the local Debian base, run it, talk
to it from the host over gRPC (health, a reset and steps, the conformance suite), and stop it
with SIGTERM, which it must answer by draining (exit 0, well inside the grace period).

Needs rootful podman and the base image that ``deploy/podman-setup.sh`` makes; skipped without
them, except under CI (``CI=true``), where a missing podman is a failure: run the setup first.
Layers are cached by podman, so a rerun that changed only source rebuilds only the source layer.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.container.podman_util import (
    BASE,
    ROOT,
    build_args_for_pip,
    image_mb,
    podman,
    podman_environment,
    timed_build,
)
from tests.own_env import write_my_games
from visact.env_server.client import EnvCallError, EnvClient

pytestmark = [pytest.mark.container, pytest.mark.slow]

IMAGE = "localhost/visact-env-server:test"  # deploy/compose.yaml's env-server image under VISACT_TAG=test
GYM_IMAGE = "localhost/visact-env-server-gym:test"
TOKEN = "visact-test-token"  # the image reads $VISACT_TOKEN; health stays open without it
GRACE = 15.0  # the server's --grace; a drain with no call in flight should take well under it
SLIM_LIMIT_MB = 600  # the image stays slim: no torch (that alone is ~1 GB)


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for podman commands, with the containers.conf deploy/podman-setup.sh writes."""
    return podman_environment(tmp_path_factory.mktemp("podman"))


def build(env: dict[str, str], tag: str, *build_args: str) -> float:
    """Build deploy/env-server.Containerfile as ``tag``; returns the seconds it took."""
    args = ["build", *build_args_for_pip(), "--build-arg", f"BASE={BASE}"]
    for arg in build_args:
        args += ["--build-arg", arg]
    args += ["-f", str(ROOT / "deploy" / "env-server.Containerfile"), "-t", tag, str(ROOT)]
    return timed_build(env, tag, lambda: podman(env, *args, timeout=900))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_status(address: str, timeout: float = 2.0) -> str:
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


@dataclass
class Running:
    name: str
    port: int
    env: dict[str, str]
    image: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = subprocess.run(
            ["podman", "logs", self.name], env=self.env, capture_output=True, text=True, check=False
        )
        return result.stdout + result.stderr


def run_container(
    env: dict[str, str], image: str, *server_args: str, run_args: tuple[str, ...] = ()
) -> Iterator[Running]:
    port = free_port()
    name = f"visact-test-{uuid.uuid4().hex[:8]}"
    podman(
        env,
        *("run", "-d", "--name", name, "--network", "host", "--ulimit", "host", *run_args, image),
        *server_args,
        *("--port", str(port), "--grace", str(GRACE), "--log-format", "json"),
    )
    running = Running(name, port, env, image)
    try:
        deadline = time.monotonic() + 90
        status = "no answer"
        while time.monotonic() < deadline:
            try:
                status = health_status(running.address)
                if status == "SERVING":
                    break
            except grpc.RpcError as exc:
                status = exc.code().name
            time.sleep(0.5)
        assert status == "SERVING", f"health never SERVING (last: {status})\n{running.logs()}"
        yield running
    finally:
        podman(env, "rm", "-f", "-t", "0", name, check=False)


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str]) -> str:
    seconds = build(podman_env, IMAGE)
    size_mb = image_mb(podman_env, IMAGE)
    print(f"\nenv-server image {IMAGE}: built in {seconds:.1f} s, {size_mb:.0f} MB")
    assert size_mb < SLIM_LIMIT_MB, f"the env-server image is {size_mb:.0f} MB; it should stay slim"
    return IMAGE


@pytest.fixture(scope="module")
def server(podman_env: dict[str, str], image: str) -> Iterator[Running]:
    # As deploy/k8s/env-server.yaml runs it: `--gym=$(VISACT_GYM)` expands to an empty --gym=.
    yield from run_container(
        podman_env, image, "--env=numberline", "--gym=", run_args=("--env", f"VISACT_TOKEN={TOKEN}")
    )


def test_runs_as_non_root_with_env_server_as_pid_1(server: Running) -> None:
    env = server.env
    assert podman(env, "exec", server.name, "id", "-u").strip() == "10001"
    config_user = podman(env, "image", "inspect", "--format", "{{.Config.User}}", server.image).strip()
    assert config_user == "10001:10001"
    pid1 = podman(env, "exec", server.name, "cat", "/proc/1/cmdline").split("\0")
    assert Path(pid1[1]).name == "env-server", pid1  # python3 /opt/venv/bin/env-server ...: no shell


def test_image_is_slim_without_torch(server: Running) -> None:
    result = subprocess.run(
        ["podman", "exec", server.name, "python", "-c", "import torch"],
        env=server.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "No module named 'torch'" in result.stderr


def test_image_healthcheck_reports_healthy(server: Running) -> None:
    """The image's own HEALTHCHECK (gRPC health from inside the container) passes."""
    healthcheck = json.loads(
        podman(server.env, "image", "inspect", "--format", "{{json .Config.Healthcheck}}", server.image)
    )
    assert healthcheck["Test"][-3:] == ["python", "-m", "visact.env_server.healthcheck"]
    result = subprocess.run(
        ["podman", "healthcheck", "run", server.name], env=server.env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_reset_and_step_from_the_host(server: Running) -> None:
    with EnvClient(server.address, timeout=10) as anonymous:
        with pytest.raises(EnvCallError) as refused:
            anonymous.describe()
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    with EnvClient(server.address, token=TOKEN, timeout=10) as client:
        assert client.describe().name == "numberline"
        session = client.create_session()
        reset = client.reset(session, seed=7)
        assert reset.observation.image.ndim == 3
        step = client.step(session, reset.observation.legal_actions[0])
        assert step.episode_step == 1
        client.close_session(session)


def test_conformance_from_the_host(server: Running) -> None:
    if importlib.util.find_spec("visact.env_server.conformance") is None:
        pytest.skip("visact.env_server.conformance (env-conformance) is not written yet")
    script = Path(sys.executable).with_name("env-conformance")
    command = (
        [str(script)]
        if script.exists()
        else [
            sys.executable,
            "-c",
            "import sys; from visact.env_server.conformance.cli import main; sys.exit(main())",
        ]
    )
    result = subprocess.run(
        [*command, "--server", server.address, "--token", TOKEN],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr + server.logs()


def test_sigterm_drains_and_exits_zero_within_grace(server: Running) -> None:
    """Last on this container: `podman stop` sends SIGTERM; env-server (PID 1) drains and exits 0."""
    env = server.env
    start = time.monotonic()
    podman(env, "stop", "-t", str(int(GRACE * 2)), server.name, timeout=GRACE * 3)
    elapsed = time.monotonic() - start
    state = json.loads(podman(env, "inspect", "--format", "{{json .State}}", server.name))
    logs = server.logs()
    assert state["ExitCode"] == 0, (
        f"exit {state['ExitCode']} (137 would be SIGKILL after the timeout)\n{logs}"
    )
    assert elapsed < GRACE / 2, f"stop took {elapsed:.1f} s of a {GRACE} s grace\n{logs}"
    events = [json.loads(line)["msg"] for line in logs.splitlines() if line.startswith("{")]
    assert events[-2:] == ["draining", "stopped"], logs
    draining = next(json.loads(line) for line in logs.splitlines() if '"draining"' in line)
    assert draining["signal"] == "SIGTERM" and draining["grace"] == GRACE


def test_serves_a_gymnasium_env_by_name(podman_env: dict[str, str], image: str) -> None:
    """The same Containerfile with a Gymnasium suite added serves `--gym ID` (CartPole renders with pygame)."""
    seconds = build(podman_env, GYM_IMAGE, "EXTRA_PACKAGES=gymnasium[classic-control]")
    print(f"\nenv-server + gymnasium[classic-control] image: built in {seconds:.1f} s")
    for running in run_container(podman_env, GYM_IMAGE, "--gym", "CartPole-v1"):
        with EnvClient(running.address, timeout=10) as client:
            assert client.describe().name == "CartPole-v1"
            session = client.create_session(encoding="png")
            reset = client.reset(session, seed=0)
            assert reset.observation.image.shape[-1] == 3
            assert client.step(session, "1").reward == 1.0


def test_serves_an_env_of_ones_own_mounted_into_the_image(
    podman_env: dict[str, str], image: str, tmp_path: Path
) -> None:
    """docs/deploy.md's recipe: the package mounted read-only, PYTHONPATH, --env module:Class."""
    write_my_games(tmp_path)
    mount = ("-v", f"{tmp_path / 'my_games'}:/games/my_games:ro", "--env", "PYTHONPATH=/games")
    for running in run_container(podman_env, image, "--env", "my_games.coin:Coin", run_args=mount):
        with EnvClient(running.address, timeout=10) as client:
            assert client.describe().name == "coin"
            session = client.create_session()
            client.reset(session, seed=1)
            assert client.step(session, "heads").terminated
