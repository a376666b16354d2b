"""Plots people would rather look at than tables: learning curves from a trainer's metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def learning_curve(
    rows: Sequence[Mapping[str, float]],
    out: Path,
    *,
    title: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> Path:
    """Training success and valid-action rate per PPO update, with held-out evaluations as bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [0.0]
    for row in rows:
        steps.append(steps[-1] + row.get("charts/steps", 0.0))
    x = steps[1:]
    success = [row.get("charts/success_rate", 0.0) for row in rows]
    valid = [row.get("charts/valid_action_rate", 0.0) for row in rows]
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=120)
    if rows:
        axis.plot(x, success, color="#1f77b4", alpha=0.35, lw=1, label="training success (per update)")
        axis.plot(x, running_mean(success, 5), color="#1f77b4", lw=2, label="training success (mean of 5)")
        axis.plot(x, valid, color="#2ca02c", lw=1.5, ls="--", label="valid-action rate")
    for evaluation, color, label in (
        (before, "#d62728", "held-out after SFT"),
        (after, "#9467bd", "held-out after PPO"),
    ):
        if evaluation:
            low, high = evaluation["success_ci95"]
            axis.axhspan(low, high, color=color, alpha=0.12)
            axis.axhline(
                evaluation["success_rate"],
                color=color,
                lw=1.5,
                label=f"{label}: {evaluation['success_rate']:.0%}",
            )
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("environment steps")
    axis.set_ylabel("rate")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out
