"""The TypeScript environment server in examples/node-env-server, as a real Node.js process, passes
env-conformance: the protocol can be implemented in another language from the .proto alone.

Builds it with ``npm ci && npm run build`` (skipped when dist/ matches the manifest written after
its build, for these sources, build config and lockfile), starts ``node dist/server.js --port 0 --ready-file F``, and runs ``env-conformance``
against it as a subprocess. Skipped, with the reason, when node or npm is missing.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.processes import start_process
from visact.cache import entry_problem, write_manifest
from visact.orchestration.processes import wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node-env-server"
SERVER_JS = EXAMPLE / "dist" / "server.js"
BUILD_FILES = ("package.json", "package-lock.json", "tsconfig.json")
MIN_NODE = 18


def _run(command: list[str], *, timeout: float) -> None:
    result = subprocess.run(command, cwd=EXAMPLE, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` in {EXAMPLE} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )


def _inputs_digest() -> str:
    """sha256 of what the build reads: the sources, the build config and the lockfile."""
    digest = hashlib.sha256()
    inputs = [*(EXAMPLE / "src").rglob("*.ts"), *(EXAMPLE / name for name in BUILD_FILES)]
    for path in sorted(inputs):
        digest.update(f"{path.relative_to(EXAMPLE).as_posix()}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _built_and_current() -> bool:
    """node_modules is installed and dist/ is a complete build of the current inputs."""
    if not (EXAMPLE / "node_modules" / ".package-lock.json").is_file():
        return False
    return entry_problem(EXAMPLE / "dist", required=["server.js"], about={"inputs": _inputs_digest()}) is None


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the example built (npm ci && npm run build) unless dist/ is current."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if path is None)
        pytest.skip(f"{missing} not found on PATH; install Node.js >= {MIN_NODE} with npm to build {EXAMPLE}")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE:
        pytest.skip(f"node {version} is too old for {EXAMPLE}; it needs Node.js >= {MIN_NODE}")
    if not _built_and_current():
        shutil.rmtree(EXAMPLE / "dist", ignore_errors=True)  # a build killed midway left no manifest
        lock_installed = EXAMPLE / "node_modules" / ".package-lock.json"
        lockfile = EXAMPLE / "package-lock.json"
        if not lock_installed.exists() or lock_installed.stat().st_mtime < lockfile.stat().st_mtime:
            _run([npm, "ci", "--no-audit", "--no-fund"], timeout=600)
        _run([npm, "run", "build"], timeout=600)
        write_manifest(EXAMPLE / "dist", {"inputs": _inputs_digest()})
    return node


class NodeServer:
    """A running ``node dist/server.js`` process and its port."""

    def __init__(self, process: subprocess.Popen[str], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(
                    f"the Node server did not exit {timeout} s after SIGTERM; log:\n{self.log.read_text()}"
                )
        return self.process.returncode


def start_node_server(node: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> NodeServer:
    ready = tmp_path / "port"
    log = tmp_path / "server.log"
    with log.open("w") as log_file:
        process = start_process(
            [node, str(SERVER_JS), "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready), *args],
            cwd=EXAMPLE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
    return NodeServer(process, wait_ready(process, ready, name="the Node server", log=log, timeout=30), log)


@pytest.fixture
def node_server(node: str, tmp_path: Path) -> Iterator[NodeServer]:
    # A small capacity and a short idle timeout so that the capacity and reaper checks run too.
    server = start_node_server(node, tmp_path, "--max-sessions", "16", "--idle-timeout", "2")
    yield server
    server.stop()


def conformance_command() -> list[str]:
    """env-conformance from this interpreter's environment (or PATH)."""
    script = shutil.which("env-conformance", path=str(Path(sys.executable).parent)) or shutil.which(
        "env-conformance"
    )
    if script:
        return [script]
    return [
        sys.executable,
        "-c",
        "import sys; from visact.env_server.conformance.cli import main; sys.exit(main())",
    ]


def run_conformance(server: NodeServer, *args: str) -> str:
    """env-conformance against ``server``; fails the test unless it exits 0. Returns its report."""
    result = subprocess.run(
        [*conformance_command(), "--server", server.address, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"env-conformance exited {result.returncode} against the Node server\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\nserver log:\n{server.log.read_text()[-4000:]}"
    )
    return result.stdout


def test_node_server_passes_env_conformance(node_server: NodeServer) -> None:
    report = run_conformance(node_server)
    assert "CONFORMANT" in report and " 0 failed" in report


def test_node_server_with_a_token_passes_env_conformance(node: str, tmp_path: Path) -> None:
    token = secrets.token_hex(16)
    # The token comes from the environment, as in a container, so it is not in the process list.
    env = {**os.environ, "VISACT_TOKEN": token}
    server = start_node_server(node, tmp_path, "--max-sessions", "16", "--idle-timeout", "2", env=env)
    try:
        report = run_conformance(server, "--token", token, "--only", "auth,errors,batch_step")
    finally:
        server.stop()
    assert "PASS  auth.token" in report


def test_node_server_reports_health_and_drains_on_sigterm(node_server: NodeServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(node_server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "visact.env.v1.Environment"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    assert node_server.stop() == 0, node_server.log.read_text()
    assert '"msg":"stopped"' in node_server.log.read_text()


def test_agent_evaluation_episodes_through_the_node_server(node_server: NodeServer, tmp_path: Path) -> None:
    """The agent plays the Node game: the oracle through the expert, and the tiny VLM's own answers."""
    import json
    import shutil
    import sys

    agent = shutil.which("agent-client", path=str(Path(sys.executable).parent)) or "agent-client"
    summary_path = tmp_path / "oracle.json"
    oracle = subprocess.run(
        [
            agent,
            "eval",
            "--server",
            node_server.address,
            "--oracle",
            "--episodes",
            "10",
            "--no-progress",
            "--json",
            str(summary_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert oracle.returncode == 0, oracle.stdout + oracle.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["env"] == "lights" and summary["episodes"] == 10
    assert summary["success_rate"] >= 0.9 and summary["valid_action_rate"] == 1.0

    tiny_path = tmp_path / "tiny.json"
    tiny = subprocess.run(
        [
            agent,
            "eval",
            "--server",
            node_server.address,
            "--model",
            "tiny",
            "--episodes",
            "2",
            "--sessions",
            "2",
            "--max-new-tokens",
            "24",
            "--no-progress",
            "--threads",
            "1",
            "--json",
            str(tiny_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tiny.returncode == 0, tiny.stdout + tiny.stderr
    assert json.loads(tiny_path.read_text())["episodes"] == 2
