"""Run only in an inner pytest by test_process_lifetimes.py (not collected otherwise: no test_
prefix). The first test starts an env server and a process whose child runs in a session of its
own (as torchrun's workers do), writes their pids to $VISACT_CASE_PIDS, and fails, as a test
whose trainer did not start; the second, in the same session, finds none of them running."""

from __future__ import annotations

import os
from pathlib import Path

from tests.processes import command, running, start, start_env, wait_for

SPAWNER = (
    "import subprocess, time\n"
    "child = subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
    "print('CHILD', child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def pids_file() -> Path:
    return Path(os.environ["VISACT_CASE_PIDS"])


def test_starts_processes_then_fails(tmp_path: Path) -> None:
    env = start_env(tmp_path, "env")
    spawner = start("spawner", [*command("python"), "-c", SPAWNER], tmp_path)
    wait_for(lambda: "CHILD" in spawner.text(), 60, "the spawner printed no child", spawner)
    grandchild = int(spawner.text().split("CHILD")[1].split()[0])
    pids_file().write_text(f"{env.popen.pid} {spawner.popen.pid} {grandchild}\n")
    raise AssertionError("the trainer did not start (on purpose)")


def test_then_nothing_it_started_runs() -> None:
    pids = [int(pid) for pid in pids_file().read_text().split()]
    assert [pid for pid in pids if running(pid)] == []
