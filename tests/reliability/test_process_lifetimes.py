"""No process a test starts outlives it: stopped when the test ends however it ended (the
autouse fixture of tests/conftest.py), and killed with its parent if pytest itself is killed
(visact.children). Issue 16: seven env servers of failed tests ran on for hours."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.processes import command, running, start, wait_for

ROOT = Path(__file__).resolve().parents[2]
CASE = Path(__file__).with_name("leftover_case.py")


def kill_survivors(pids: list[int]) -> None:
    """What the test found still running after it failed: gone before the next test."""
    for pid in pids:
        if running(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_the_processes_of_a_failing_test_are_stopped_when_it_ends(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    inner = start(
        "inner-pytest",
        [*command("python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASE)],
        tmp_path,
        env={"VISACT_CASE_PIDS": str(pids_file)},
    )
    inner.popen.wait(timeout=300)
    output = inner.text()
    pids = [int(pid) for pid in pids_file.read_text().split()] if pids_file.exists() else []
    try:
        assert len(pids) == 3, output[-3000:]
        assert "1 failed, 1 passed" in output, output[-3000:]
        wait_for(lambda: not any(running(pid) for pid in pids), 15, f"still running after pytest: {pids}")
    finally:
        kill_survivors(pids)


def test_children_die_with_a_sigkilled_parent(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.processes import start_env\n"
        "env = start_env(Path(sys.argv[1]), 'env')\n"
        "print('CHILD', env.popen.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = start(
        "parent", [*command("python"), "-c", code, str(tmp_path)], tmp_path, env={"PYTHONPATH": str(ROOT)}
    )
    wait_for(lambda: "CHILD" in parent.text(), 120, lambda: parent.text()[-3000:], parent)
    child = int(parent.text().split("CHILD")[1].split()[0])
    try:
        assert running(child)
        parent.popen.send_signal(signal.SIGKILL)
        parent.popen.wait(timeout=10)
        wait_for(lambda: not running(child), 15, "the env server outlived its SIGKILLed parent")
    finally:
        kill_survivors([child])
