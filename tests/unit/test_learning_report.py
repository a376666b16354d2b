"""The learning benchmark's report (bench/learning.py): each section of docs/results.md is
rewritten only from the games run into it, and ALFWorld's rows come with success by task type."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

LEARNING = Path(__file__).resolve().parents[2] / "bench" / "learning.py"


@pytest.fixture(scope="module")
def learning() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_learning", LEARNING)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def evaluation(successes: int, episodes: int, by_type: dict[str, tuple[int, int]]) -> dict[str, Any]:
    return {
        "success_rate": successes / episodes,
        "success_ci95": [0.0, 1.0],
        "valid_action_rate": 1.0,
        "breakdown": {
            "task_type": {
                task: {"successes": s, "episodes": n, "success_rate": s / n, "success_ci95": [0.1, 0.9]}
                for task, (s, n) in by_type.items()
            }
        },
    }


def alfworld_result(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    work = tmp_path / "alfworld" / "cot"
    (work / "ppo").mkdir(parents=True, exist_ok=True)
    sft = evaluation(1, 4, {"pick_and_place_simple": (1, 2), "pick_two_obj_and_place": (0, 2)})
    ppo = evaluation(3, 4, {"pick_and_place_simple": (2, 2), "pick_two_obj_and_place": (1, 2)})
    (work / "eval_after_sft.json").write_text(json.dumps(sft))
    (work / "eval_after_ppo.json").write_text(json.dumps(ppo))
    summary = {"config": {"workdir": str(work)}, "ppo_updates": 4, "minutes": 31.5}
    base = {
        "random": evaluation(0, 4, {"pick_and_place_simple": (0, 4)}),
        "oracle": evaluation(4, 4, {"pick_and_place_simple": (2, 2), "pick_two_obj_and_place": (2, 2)}),
    }
    return {"cot": summary}, base


def test_an_alfworld_run_writes_its_own_block_and_leaves_the_card_games_as_they_were(
    learning: ModuleType, tmp_path: Path
) -> None:
    cards = "<!-- learning:begin -->\n| numberline | SFT + PPO (CoT) | **100.0** |\n<!-- learning:end -->"
    out = tmp_path / "results.md"
    out.write_text(f"# Results\n\n{cards}\n\n## What it shows\n\nprose\n")

    learning.write_report({"alfworld": alfworld_result(tmp_path)}, out)

    text = out.read_text()
    assert cards in text and "prose" in text
    begin, end = learning.markers("learning-alfworld")
    block = text[text.index(begin) : text.index(end)]
    assert "| alfworld | SFT + PPO (CoT) | **75.0** (0-100) |" in block
    assert "| 21.7 | 26.5 (CoSo, 7B) |" in block
    assert "| alfworld | SFT only (CoT) | **25.0** (0-100) |" in block
    # success by task type: every policy, every task type any of them played
    assert "| task type | random | oracle | SFT (cot) | SFT + PPO (cot) |" in block
    assert "| pick_two_obj_and_place | - | 2/2 (10-90) | 0/2 (10-90) | 1/2 (10-90) |" in block
    assert "![alfworld](results/alfworld.png)" in block

    # run again: the block is replaced, not appended
    learning.write_report({"alfworld": alfworld_result(tmp_path)}, out)
    assert out.read_text().count(begin) == 1 and out.read_text() == text


def test_an_interval_below_one_percent_keeps_a_decimal(learning: ModuleType) -> None:
    assert learning.ci([1e-19, 0.0019]) == "0-0.2"  # 0 of 2,000 hands: not "0-0"
    assert learning.ci([0.361, 0.402]) == "36-40"
    assert learning.ci([0.004, 0.021]) == "0.4-2"
