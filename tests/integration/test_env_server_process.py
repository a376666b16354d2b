"""The env-server process: structured logs, and a graceful drain on SIGTERM."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.processes import command, start
from visact.env_server.client import EnvClient


def test_sigterm_drains_and_exits_cleanly(tmp_path: Path) -> None:
    server = start(
        "env",
        [
            *command("env-server"),
            "--env",
            "blackjack",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ready-file",
            str(tmp_path / "port"),
            "--grace",
            "5",
        ],
        tmp_path,
        ready_file=tmp_path / "port",
    )
    with EnvClient(server.address) as client:
        session = client.create_session()
        client.reset(session, seed=1)
    started = time.monotonic()
    assert server.stop(timeout=30) == 0
    assert time.monotonic() - started < 5
    records = [json.loads(line) for line in server.text().splitlines() if line.startswith("{")]
    events = [r["msg"] for r in records]
    assert events[0] == "serving" and "draining" in events and events[-1] == "stopped", events
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert records[0]["port"] == server.port and records[0]["env"] == "blackjack"
