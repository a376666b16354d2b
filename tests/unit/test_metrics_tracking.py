"""The trainer's metrics sinks: metrics.jsonl always, and a Weights & Biases run when asked for."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from visact.trainer.config import RunConfig
from visact.trainer.metrics import MetricsLogger, open_wandb


class FakeRun:
    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, float], int]] = []
        self.finished = 0

    def log(self, row: dict[str, float], step: int) -> None:
        self.logged.append((row, step))

    def finish(self) -> None:
        self.finished += 1


def test_every_update_goes_to_the_wandb_run_as_to_the_jsonl_and_the_run_is_finished_once(
    tmp_path: Path,
) -> None:
    run = FakeRun()
    logger = MetricsLogger(tmp_path, run)
    logger.log(1, {"losses/policy": -0.5, "charts/success_rate": 0.25, "note": "not a number"})  # type: ignore[dict-item]
    logger.log(2, {"losses/policy": float("nan"), "charts/success_rate": 0.5})
    logger.close()
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["losses/policy"] == -0.5 and "losses/policy" not in rows[1]
    assert run.logged == [
        ({"losses/policy": -0.5, "charts/success_rate": 0.25}, 1),
        ({"charts/success_rate": 0.5}, 2),  # the same finite numbers as metrics.jsonl
    ]
    assert run.finished == 1


def test_without_a_project_there_is_no_wandb_run(tmp_path: Path) -> None:
    assert open_wandb(None, None, "abc", tmp_path, {}) is None


def test_wandb_project_without_the_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "wandb" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ValueError, match=r"pip install 'visact\[wandb\]'"):
        RunConfig(wandb_project="p")
    RunConfig()  # nothing asked, nothing needed


def test_a_wandb_entity_alone_is_refused() -> None:
    with pytest.raises(ValueError, match="--wandb-entity needs --wandb-project"):
        RunConfig(wandb_entity="team")
