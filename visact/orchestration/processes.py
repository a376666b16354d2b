"""Child processes: start one tied to this process, wait until it is ready, stop it and its tree.

The one launcher of the demo, the tests and the benches:

- ``command(name)``: a console script of this environment (``env-server``, ``trainer``, ...);
- ``launch(argv, ...)``: ``subprocess.Popen`` of ``argv`` tied to this process
  (``visact.children``: it gets SIGTERM when this process dies, even by SIGKILL);
- ``start(name, argv, log, ready_file=...)``: launched with its output in ``log``, waited for until
  ``ready_file`` holds its port (a ``Process``; ``wait_ready`` for any ``Popen``); ``ProcessError``
  with the log's tail if it exits first or takes too long;
- ``wait_for(condition, timeout, message, *watched)``: poll until true, fail when a watched
  process dies;
- ``stop_all(popens)``: SIGTERM, a grace period, then SIGKILL; ``stop_tree(popen)`` also stops
  every descendant and the process group (children in sessions of their own, as torchrun's).

Needs only the standard library and ``visact.children``: the benches' peer venvs import it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visact.children import tied_to_this_process

BIN = Path(sys.executable).parent
#: How much of a log an error shows.
TAIL = 3000


class ProcessError(RuntimeError):
    """A child process exited early or did not become ready in time (the message has its log's tail)."""


def command(name: str) -> list[str]:
    """The console script ``name`` of this environment (the Python running this), as an argv."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} is not installed in this environment; run the README's set-up command "
            "(pip install -e '.[all,dev]')"
        )
    return [found]


def launch(argv: Sequence[str], **popen_args: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen_args)``, the child tied to this process."""
    return subprocess.Popen(tied_to_this_process(argv), **popen_args)


def log_tail(log: Path | None) -> str:
    """The end of ``log`` ("" when there is none)."""
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-TAIL:]


@dataclass
class Process:
    """A started child: its name, its ``Popen``, its log and (once ready) its loopback port."""

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
        """SIGTERM, then wait up to ``timeout`` seconds (SIGKILL after); returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        return _wait_or_kill(self.popen, timeout)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=10)

    def wait_ready(self, ready_file: Path, timeout: float = 120) -> int:
        """``wait_ready`` for this process; its port becomes ``self.port``."""
        self.port = wait_ready(self.popen, ready_file, name=self.name, log=self.log, timeout=timeout)
        return self.port


def wait_ready(
    popen: subprocess.Popen[Any],
    ready_file: Path,
    *,
    name: str,
    log: Path | None = None,
    timeout: float = 120,
) -> int:
    """The port ``popen`` writes to ``ready_file`` once it serves; ``ProcessError`` (with
    ``log``'s tail) if it exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not (ready_file.exists() and ready_file.read_text().strip()):
        if popen.poll() is not None:
            problem = f"{name} exited {popen.returncode} before it was ready"
        elif time.monotonic() > deadline:
            problem = f"{name} did not become ready in {timeout:g} s"
        else:
            time.sleep(0.05)
            continue
        seen = f"; its log ({log}) ends with:\n{log_tail(log)}" if log is not None else ""
        raise ProcessError(problem + seen)
    return int(ready_file.read_text())


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    ready_file: Path | None = None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    fresh_log: bool = False,
    **popen_args: Any,
) -> Process:
    """Launch ``argv`` with its output (stdout and stderr, unbuffered) appended to ``log`` (written
    afresh with ``fresh_log``) and ``env`` as its environment (default: this one's); with
    ``ready_file``, wait until it holds the port (``Process.wait_ready``). ``popen_args`` go to
    ``Popen`` (``cwd``, ``start_new_session``, ...)."""
    environment = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    with log.open("wb" if fresh_log else "ab") as out:
        popen = launch(argv, stdout=out, stderr=subprocess.STDOUT, env=environment, **popen_args)
    process = Process(name, popen, log)
    if ready_file is not None:
        process.wait_ready(ready_file, timeout)
    return process


def run(argv: Sequence[str], log: Path | None = None, **run_args: Any) -> int:
    """Run ``argv`` to its end, tied to this process; its output to the console, or appended to
    ``log``; returns its exit code."""
    if log is None:
        return subprocess.run(tied_to_this_process(argv), **run_args).returncode
    with log.open("ab") as out:
        return subprocess.run(
            tied_to_this_process(argv), stdout=out, stderr=subprocess.STDOUT, **run_args
        ).returncode


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    message: Callable[[], str] | str = "condition not met",
    *watched: Process,
    interval: float = 0.2,
) -> None:
    """Poll ``condition`` until true; ``ProcessError`` with ``message`` after ``timeout`` seconds,
    or with a watched process's log when it exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in watched:
            if not process.alive():
                raise ProcessError(
                    f"{process.name} exited {process.popen.returncode}; its log ({process.log}) "
                    f"ends with:\n{log_tail(process.log)}"
                )
        if time.monotonic() > deadline:
            raise ProcessError(message() if callable(message) else message)
        time.sleep(interval)


def _wait_or_kill(popen: subprocess.Popen[Any], grace: float) -> int:
    try:
        return popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        return popen.wait(timeout=10)


def stop_all(popens: Sequence[subprocess.Popen[Any]], grace: float = 30) -> None:
    """SIGTERM every process still running (the last started first: clients before their
    servers), wait up to ``grace`` seconds for each, then SIGKILL it."""
    for popen in reversed(popens):
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
    for popen in popens:
        _wait_or_kill(popen, grace)


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
    """SIGTERM every live process of ``popen``'s process group (when it leads one, started with
    ``start_new_session=True``: its group outlives it when it is killed) and every descendant (in
    sessions of their own too, as torchrun's workers), SIGKILL what is left after ``grace``
    seconds, and reap ``popen``."""
    pids = {pid for pid, _, group in live_processes() if group == popen.pid} | set(descendants(popen.pid))
    if popen.poll() is None:
        pids.add(popen.pid)
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
