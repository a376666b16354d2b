"""`env-server --env alfworld` as a process: conformant (dynamic vocabulary, seeds, truncation at 50,
errors, capacity, concurrency), and the expert wins held-out (unseen-room) games through agent-client."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.processes import command, run_conformance, start_env

pytest.importorskip("textworld")
pytest.importorskip("fast_downward")
pytestmark = pytest.mark.slow


def test_alfworld_server_is_conformant_and_its_expert_wins_unseen_rooms(tmp_path: Path) -> None:
    # idle sessions are reaped after 15 s: long enough for another session's 50-step episode
    server = start_env(tmp_path, "alfworld", 0, "--idle-timeout", "15", "--max-sessions", "16",
                       game=("--env", "alfworld"), env={"VISACT_CACHE": str(tmp_path / "cache")})  # fmt: skip
    try:
        conformance = run_conformance(server.address, timeout=600)
        assert conformance.returncode == 0, conformance.stdout + conformance.stderr
        assert f"'alfworld' at {server.address} is CONFORMANT" in conformance.stdout
        assert "PASS  episode.truncation           truncated at step 50" in conformance.stdout

        oracle = tmp_path / "oracle.json"
        result = subprocess.run(
            [
                *command("agent-client"), "eval", "--server", server.address, "--oracle", "--episodes", "12",
                "--sessions", "4", "--no-progress", "--json", str(oracle),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads(oracle.read_text())
        assert summary["episodes"] == 12 and summary["valid_action_rate"] == 1.0, summary
        assert summary["success_rate"] == 1.0 and summary["steps"] <= 12 * 15, summary
    finally:
        assert server.stop(timeout=30) == 0
