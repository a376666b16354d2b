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
