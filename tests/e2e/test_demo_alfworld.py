"""`visact demo --env alfworld` as a user runs it, with a tiny budget: the expert's demonstrations,
SFT of the tiny-alfworld VLM, env servers, the held-out evaluation, PPO with `trainer serve` and
two `agent-client`s, the evaluation again, and the summary with success per task type.

It asserts the plumbing, not the learning (a few SFT steps and 2 PPO updates win nothing): the
game's own settings were used (tiny-alfworld, no sampled evaluation), PPO published its updates,
and both held-out evaluations played alfworld's unseen rooms and were broken down by task type.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.processes import command

pytest.importorskip("textworld")
pytest.importorskip("fast_downward")
pytestmark = pytest.mark.slow

UPDATES = 2
EVAL_EPISODES = 3
TASK_TYPES = {
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
}


def test_alfworld_demo_runs_every_stage_and_reports_unseen_rooms_by_task_type(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    budget = [
        "--demo-episodes", "6",
        "--sft-steps", "10",
        "--sft-vision-warmup-steps", "5",
        "--ppo-updates", str(UPDATES),
        "--steps-per-update", "8",
        "--sessions", "4",
        "--max-new-tokens", "24",
        "--eval-episodes", str(EVAL_EPISODES),
    ]  # fmt: skip
    result = subprocess.run(
        [*command("visact"), "demo", "--env", "alfworld", "--workdir", str(work), *budget],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    summary = json.loads((work / "summary.json").read_text())
    assert summary["env"] == "alfworld" and summary["config"]["model"] == "tiny-alfworld"
    assert summary["ppo_updates"] == UPDATES
    for key in ("success_after_sft", "success_after_ppo"):
        assert 0.0 <= summary[key] <= 1.0, (key, summary[key])
    # ALFWorld's budget leaves the sampled evaluation out
    assert summary["success_after_ppo_sampled"] is None
    assert not (work / "eval_after_ppo_sampled.json").exists()
    status = json.loads((work / "ppo" / "status.json").read_text())
    assert status["latest_version"] == UPDATES

    for stage in ("after_sft", "after_ppo"):
        breakdown = summary[f"breakdown_{stage}"]
        by_type = breakdown["task_type"]
        assert set(by_type) <= TASK_TYPES and by_type, by_type
        assert sum(group["episodes"] for group in by_type.values()) == EVAL_EPISODES
        successes = sum(group["successes"] for group in by_type.values())
        assert successes == round(summary[f"success_{stage}"] * EVAL_EPISODES)
        for group in by_type.values():
            low, high = group["success_ci95"]
            assert 0.0 <= low <= group["success_rate"] <= high <= 1.0
        # the held-out seeds play alfworld's unseen rooms, every one of them
        assert breakdown["split"] == {"unseen": breakdown["split"]["unseen"]}
        assert breakdown["split"]["unseen"]["episodes"] == EVAL_EPISODES

    # the per-task-type table the demo prints at the end
    table = result.stdout[result.stdout.index("== result") :]
    assert "task_type" in table and "after SFT" in table and "after PPO" in table
    assert all(task_type in table for task_type in summary["breakdown_after_ppo"]["task_type"])
