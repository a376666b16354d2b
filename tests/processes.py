"""Real processes for integration and end-to-end tests: start with a ready file, stop, kill, read logs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def command(name: str) -> list[str]:
    """The console script ``name`` of this environment."""
    script = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert script is not None, f"{name} is not installed; pip install -e ."
    return [script]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(timeout=10)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=10)


def start(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    *,
    ready_file: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Process:
    """Start ``argv`` with output to ``workdir/<name>.log``; wait for ``ready_file`` to hold a port."""
    log = workdir / f"{name}.log"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    environment.pop("VISACT_TOKEN", None)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=workdir
        )
    process = Process(name, popen, log)
    if ready_file is not None:
        wait_for(
            lambda: ready_file.exists() and ready_file.read_text().strip() != "",
            timeout,
            lambda: f"{name} did not become ready:\n{process.text()[-3000:]}",
            process,
        )
        process.port = int(ready_file.read_text())
    return process


def start_agent(workdir: Path, name: str, env: Process, trainer: Process, *extra: str) -> Process:
    """A training `agent-client` of ``env``'s server and ``trainer``, one torch thread."""
    argv = [
        *command("agent-client"), "--server", env.address, "--trainer", trainer.address, "--threads", "1", *extra,
    ]  # fmt: skip
    return start(name, argv, workdir)


def run_conformance(address: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``env-conformance --server address ...`` to the end, its output captured (no token in its
    environment)."""
    environment = {k: v for k, v in os.environ.items() if k != "VISACT_TOKEN"}
    return subprocess.run(
        [*command("env-conformance"), "--server", address, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    message: Callable[[], str] | str = "condition not met",
    *watched: Process,
) -> None:
    """Poll ``condition`` until true; fail with ``message`` on timeout or when a watched process dies."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in watched:
            if not process.alive():
                raise AssertionError(
                    f"{process.name} exited {process.popen.returncode}:\n{process.text()[-3000:]}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(0.2)


#: `trainer serve` flags for tests: the tiny VLM, tiny updates, a checkpoint every update
TRAINER_ARGS = [
    "--host",
    "127.0.0.1",
    "--steps-per-update",
    "12",
    "--minibatch-size",
    "6",
    "--micro-batch-size",
    "6",
    "--ppo-epochs",
    "1",
    "--lr",
    "1e-3",
    "--max-grad-norm",
    "1.0",
    "--max-new-tokens",
    "24",
    "--temperature",
    "1.0",
    "--lora-r",
    "4",
    "--lora-alpha",
    "8",
    "--checkpoint-every",
    "1",
    "--threads",
    "1",
]


def start_env(
    workdir: Path,
    name: str,
    port: int = 0,
    *extra: str,
    game: Sequence[str] = ("--env", "numberline"),
    env: dict[str, str] | None = None,
) -> Process:
    """An `env-server` on loopback (port 0: a free one), text logs, 1 s grace: NumberLine, or
    what ``game`` names (``("--gym", ID)``, ``("--env", "module:Class")``); ``env`` adds to its
    environment."""
    ready = workdir / f"{name}.port"
    ready.unlink(missing_ok=True)
    argv = [
        *command("env-server"),
        *game,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ready-file",
        str(ready),
        "--log-format",
        "text",
        "--grace",
        "1",
        *extra,
    ]
    return start(name, argv, workdir, ready_file=ready, env=env)
