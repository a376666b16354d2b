"""BabyAI served with `env-server --gym`: conformant, the bundled bot as expert, the tiny agent through it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.processes import command, run_conformance, start_env

pytest.importorskip("minigrid")
pytestmark = pytest.mark.slow

LEVEL = "BabyAI-GoToRedBall-v0"


def test_babyai_is_conformant_and_the_bot_wins(tmp_path: Path) -> None:
    server = start_env(tmp_path, "babyai", 0, "--idle-timeout", "2", game=("--gym", LEVEL))
    try:
        conformance = run_conformance(server.address)
        assert conformance.returncode == 0, conformance.stdout + conformance.stderr
        assert f"'{LEVEL}' at {server.address} is CONFORMANT" in conformance.stdout

        oracle = tmp_path / "oracle.json"
        result = subprocess.run(
            [
                *command("agent-client"),
                "eval",
                "--server",
                server.address,
                "--oracle",
                "--episodes",
                "30",
                "--no-progress",
                "--json",
                str(oracle),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads(oracle.read_text())
        assert summary["success_rate"] >= 0.95 and summary["valid_action_rate"] == 1.0, summary

        tiny = tmp_path / "tiny.json"
        result = subprocess.run(
            [
                *command("agent-client"),
                "eval",
                "--server",
                server.address,
                "--model",
                "tiny",
                "--episodes",
                "2",
                "--sessions",
                "2",
                "--max-new-tokens",
                "16",
                "--threads",
                "1",
                "--no-progress",
                "--json",
                str(tiny),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads(tiny.read_text())
        assert summary["episodes"] == 2 and summary["steps"] >= 2
    finally:
        assert server.stop(timeout=30) == 0


def test_the_prompt_explains_the_picture_and_the_actions() -> None:
    from visact.env_server.gym_adapter import gym_env_factory

    env = gym_env_factory(LEVEL)()
    env.reset(seed=1)
    assert env.action_vocabulary == ("left", "right", "forward", "pickup", "drop", "toggle", "done")
    assert "red triangle" in env.task_text() and "Mission: go to the red ball" in env.task_text()
    move = env.expert()
    assert move is not None and move.action in env.action_vocabulary and "go to the red ball" in move.thoughts
