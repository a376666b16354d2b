"""Real processes for integration and end-to-end tests: start with a ready file, stop, kill, read logs.

Every process started here is tracked, in a session of its own (so its process group holds its
children, torchrun's launcher among them), and tied to the test process (``visact.children``:
it gets SIGTERM if pytest dies, even by SIGKILL). The autouse fixture in tests/conftest.py stops
whatever a test left running, however the test ended (``stop_started_since``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visact.children import tied_to_this_process

BIN = Path(sys.executable).parent

#: Every process started through ``start_process`` (and so ``start``), in order.
STARTED: list[subprocess.Popen[Any]] = []


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
        popen = start_process(argv, stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=workdir)
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


def start_process(argv: Sequence[str], **popen_args: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen_args)``, tracked, in a new session, tied to this process."""
    popen: subprocess.Popen[Any] = subprocess.Popen(
        tied_to_this_process(argv), start_new_session=True, **popen_args
    )
    STARTED.append(popen)
    return popen


def live_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every process that is not a zombie, from /proc."""
    table = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
                if state not in "ZX":
                    table.append((int(entry.name), int(ppid), int(pgrp)))
    return table


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children in sessions of their own too)."""
    children: dict[int, list[int]] = {}
    for child, parent, _ in live_processes():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def stop_tree(popen: subprocess.Popen[Any], grace: float = 10) -> None:
    """SIGTERM every live process of ``popen``'s process group (``start_process`` made it lead one:
    its group outlives it when it is killed) and every descendant (in sessions of their own too,
    as torchrun's workers), SIGKILL what is left after ``grace`` seconds, and reap ``popen``."""
    pids = {pid for pid, _, group in live_processes() if group == popen.pid} | set(descendants(popen.pid))
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(running(pid) for pid in pids):
            popen.poll()  # reap our own child, else it stays a zombie
            time.sleep(0.05)
        pids = {pid for pid in pids if running(pid)}
        if not pids:
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=10)


def stop_started_since(index: int) -> None:
    """``stop_tree`` every process of ``STARTED[index:]`` (the exited too: their children may run
    on in their groups) and forget them."""
    for popen in STARTED[index:]:
        stop_tree(popen)
    del STARTED[index:]


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
