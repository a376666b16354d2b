"""`agent-client eval` against real env-server processes: the oracle and the tiny VLM on every game."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Process, command, start
from tests.vlm_families import FAMILY_BUILDERS

GAMES = ("numberline", "ezpoints", "points24", "blackjack")
#: what the oracle must reach over 40 held-out episodes (Blackjack's basic strategy wins ~42%)
ORACLE_FLOOR = {"numberline": 0.95, "ezpoints": 0.95, "points24": 0.95, "blackjack": 0.2}
FACT_KEYS = {
    "numberline": ("current number", "target number"),
    "ezpoints": ("cards", "formula"),
    "points24": ("cards", "formula"),
    "blackjack": ("dealer card", "player cards", "player total"),
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Process]]:
    workdir = tmp_path_factory.mktemp("servers")
    running = {
        game: start(
            game,
            [
                *command("env-server"),
                "--env",
                game,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--ready-file",
                str(workdir / f"{game}.port"),
            ],
            workdir,
            ready_file=workdir / f"{game}.port",
        )
        for game in GAMES
    }
    yield running
    for process in running.values():
        assert process.stop(timeout=30) == 0


def run_eval(tmp_path: Path, *args: str, progress: bool = False) -> tuple[dict, str]:
    """Run ``agent-client eval``; its summary and its output (a file: not a terminal)."""
    out = tmp_path / "summary.json"
    flags = [] if progress else ["--no-progress"]
    process = start("eval", [*command("agent-client"), "eval", *flags, "--json", str(out), *args], tmp_path)
    assert process.popen.wait(timeout=600) == 0, process.text()[-3000:]
    assert "success rate" in process.text()
    return json.loads(out.read_text()), process.text()


def test_progress_in_a_log_file_is_whole_lines(servers: dict[str, Process], tmp_path: Path) -> None:
    _, output = run_eval(
        tmp_path, "--server", servers["numberline"].address, "--oracle", "--episodes", "20", progress=True
    )
    assert "\r" not in output
    assert any(line.startswith("eval episodes: 20/20 (100%)") for line in output.splitlines()), output


@pytest.mark.parametrize("game", GAMES)
def test_oracle_eval_scores_near_perfect(servers: dict[str, Process], tmp_path: Path, game: str) -> None:
    summary, _ = run_eval(tmp_path, "--server", servers[game].address, "--oracle", "--episodes", "40")
    assert summary["episodes"] == 40 and summary["env"] == game
    assert summary["success_rate"] >= ORACLE_FLOOR[game], summary
    assert summary["valid_action_rate"] == 1.0
    assert summary["fact_accuracy"] == 1.0, summary  # the expert states its own facts
    assert set(summary["fact_accuracy_by_key"]) == set(FACT_KEYS[game])
    assert summary["expert_agreement"] == 1.0, summary  # and plays its own moves
    assert sum(summary["action_shares"].values()) == pytest.approx(1.0)
    low, high = summary["success_ci95"]
    assert low <= summary["success_rate"] <= high


@pytest.mark.slow
@pytest.mark.parametrize("game", GAMES)
def test_tiny_vlm_eval_runs_and_reports_answer_health(
    servers: dict[str, Process], tmp_path: Path, game: str
) -> None:
    summary, _ = run_eval(
        tmp_path,
        "--server",
        servers[game].address,
        "--model",
        "tiny",
        "--episodes",
        "3",
        "--sessions",
        "3",
        "--max-new-tokens",
        "24",
        "--threads",
        "1",
    )
    assert summary["episodes"] == 3 and summary["steps"] >= 3
    assert summary["policy"] == "vlm:tiny"
    assert 0.0 <= summary["valid_action_rate"] <= 1.0
    assert 0 < summary["mean_answer_tokens"] <= 24
    assert summary["steps_per_second"] > 0
    assert 0.0 <= summary["fact_accuracy"] <= 1.0  # checked against the server's expert


def test_action_only_answers_have_no_facts_to_check(servers: dict[str, Process], tmp_path: Path) -> None:
    address = servers["numberline"].address
    summary, output = run_eval(tmp_path, "--server", address, "--oracle", "--no-cot", "--episodes", "5")
    assert summary["fact_accuracy"] is None and summary["valid_action_rate"] == 1.0
    assert "no facts checked" in output


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_vl", "smolvlm", "gemma3"])
def test_agent_client_runs_a_checkpoint_of_another_family_by_path(
    servers: dict[str, Process], tmp_path: Path, family: str
) -> None:
    """``--model PATH``: a checkpoint written the way the hub's are (tiny and random here)."""
    builder, _ = FAMILY_BUILDERS[family]
    model = builder(tmp_path / family)
    summary, _ = run_eval(
        tmp_path,
        "--server", servers["numberline"].address, "--model", str(model), "--episodes", "2",
        "--sessions", "2", "--max-new-tokens", "8", "--threads", "1",
    )  # fmt: skip
    assert summary["episodes"] == 2 and summary["steps"] >= 2
    assert summary["policy"] == f"vlm:{model}"
    assert 0 < summary["mean_answer_tokens"] <= 8
