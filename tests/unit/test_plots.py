"""Learning curves: the running means they draw, and PNG files that open."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from visact.orchestration.plots import compare_curves, learning_curve, running_mean, trailing_curve
from visact.trainer.metrics import trailing_success

ROWS = [
    {
        "charts/steps": 10.0,
        "charts/episodes": 4.0,
        "charts/success_rate": 0.25,
        "charts/valid_action_rate": 0.5,
    },
    {
        "charts/steps": 10.0,
        "charts/episodes": 2.0,
        "charts/success_rate": 1.0,
        "charts/valid_action_rate": 1.0,
    },
    {
        "charts/steps": 20.0,
        "charts/episodes": 4.0,
        "charts/success_rate": 0.5,
        "charts/valid_action_rate": 1.0,
    },
]


def test_running_mean_uses_at_most_the_last_window_values() -> None:
    assert running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_trailing_success_weights_updates_by_their_episodes() -> None:
    # last update alone has 4 episodes; with the one before, 6 >= 5: (2 * 1.0 + 4 * 0.5) / 6
    assert trailing_success(ROWS, 5) == pytest.approx(4 / 6)
    assert trailing_success(ROWS, 100) == pytest.approx((1 + 2 + 2) / 10)
    assert trailing_success([], 5) is None


def test_trailing_curve_is_cumulative_steps_against_the_running_success() -> None:
    steps, success = trailing_curve(ROWS, 5)
    assert steps == [10.0, 20.0, 40.0]
    assert success == pytest.approx([0.25, (1 + 2) / 6, 4 / 6])


def test_plots_are_png_files(tmp_path: Path) -> None:
    evaluation = {"success_rate": 0.7, "success_ci95": [0.6, 0.8]}
    one = learning_curve(ROWS, tmp_path / "a" / "curve.png", title="t", before=evaluation, after=None)
    two = compare_curves({"run": ROWS}, tmp_path / "compare.png", title="t", levels={"random": 0.5}, window=5)
    for path in (one, two):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300
