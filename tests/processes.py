"""Real processes for integration and end-to-end tests, on the launcher of
``visact.orchestration.processes`` (start with a ready file, wait, stop a whole tree, read logs).

Every process started here is tracked, in a session of its own (so its process group holds its
children, torchrun's launcher among them), and tied to the test process (``visact.children``:
it gets SIGTERM if pytest dies, even by SIGKILL). The autouse fixture in tests/conftest.py stops
whatever a test left running, however the test ended (``stop_started_since``). ``start`` leaves
``VISACT_TOKEN`` out of their environment unless its ``env`` gives one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visact.orchestration.processes import (
    Process,
    command,
    descendants,
    launch,
    running,
    stop_tree,
    wait_for,
)
from visact.orchestration.processes import start as launch_logged

__all__ = [
    "STARTED",
    "TRAINER_ARGS",
    "Process",
    "command",
    "descendants",
    "run_conformance",
    "running",
    "start",
    "start_agent",
    "start_env",
    "start_process",
    "stop_started_since",
    "stop_tree",
    "untokened_environment",
    "wait_for",
]

#: Every process started through ``start_process`` and ``start``, in order.
STARTED: list[subprocess.Popen[Any]] = []


def untokened_environment() -> dict[str, str]:
    """This environment without ``VISACT_TOKEN``."""
    return {k: v for k, v in os.environ.items() if k != "VISACT_TOKEN"}


def start(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    *,
    ready_file: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Process:
    """Start ``argv`` in ``workdir``, tracked, with output to ``workdir/<name>.log``; wait for
    ``ready_file`` to hold a port. ``env`` adds to its environment."""
    process = launch_logged(
        name,
        argv,
        workdir / f"{name}.log",
        env={**untokened_environment(), **(env or {})},
        cwd=workdir,
        start_new_session=True,
    )
    STARTED.append(process.popen)
    if ready_file is not None:
        process.wait_ready(ready_file, timeout)
    return process


def start_process(argv: Sequence[str], **popen_args: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen_args)``, tracked, in a new session, tied to this process."""
    popen = launch(argv, start_new_session=True, **popen_args)
    STARTED.append(popen)
    return popen


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
    return subprocess.run(
        [*command("env-conformance"), "--server", address, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=untokened_environment(),
    )


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
