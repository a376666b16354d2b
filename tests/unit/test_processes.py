"""visact.orchestration.processes: a real child waited for, its failure told with its log, its
whole tree stopped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from visact.orchestration.processes import (
    ProcessError,
    descendants,
    launch,
    running,
    start,
    stop_tree,
    wait_for,
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_start_waits_for_the_port_in_the_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = f"import pathlib, time; pathlib.Path({str(ready)!r}).write_text('4321'); time.sleep(60)"
    process = start("server", python(code), tmp_path / "server.log", ready_file=ready, timeout=60)
    try:
        assert process.port == 4321 and process.address == "127.0.0.1:4321"
        assert process.alive()
    finally:
        assert process.stop(timeout=10) != 0  # SIGTERM
    assert not process.alive()


def test_a_process_that_exits_before_it_is_ready_fails_with_the_end_of_its_log(tmp_path: Path) -> None:
    code = "import sys; print('the port is taken'); sys.exit(3)"
    with pytest.raises(ProcessError, match=r"(?s)server exited 3 before it was ready.*the port is taken"):
        start("server", python(code), tmp_path / "server.log", ready_file=tmp_path / "ready", timeout=60)


def test_stop_tree_stops_a_grandchild_in_a_session_of_its_own(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    code = (
        "import pathlib, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    parent = launch(python(code), start_new_session=True)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", 60, "no grandchild started")
        grandchild = int(pid_file.read_text())
        assert grandchild in descendants(parent.pid) and running(grandchild)
    finally:
        stop_tree(parent, grace=5)
    assert parent.returncode is not None
    assert not running(grandchild)
