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
    return _finish(figure, axis, out, title=title, ylabel="rate")


def _finish(figure: Any, axis: Any, out: Path, *, title: str, ylabel: str) -> Path:
    """Axes labelled 0..1 against environment steps, legend, saved to ``out`` and closed."""
    import matplotlib.pyplot as plt

    axis.set_ylim(0, 1.02)
    axis.set_xlabel("environment steps")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out


def trailing_curve(rows: Sequence[Mapping[str, float]], window: int) -> tuple[list[float], list[float]]:
    """(environment steps, training success over about the last ``window`` episodes) per update."""
    from visact.trainer.metrics import trailing_success

    steps, success, total = [], [], 0.0
    for index, row in enumerate(rows):
        total += row.get("charts/steps", 0.0)
        value = trailing_success(rows[: index + 1], window)
        if value is not None:
            steps.append(total)
            success.append(value)
    return steps, success


def compare_curves(
    series: Mapping[str, Sequence[Mapping[str, float]]],
    out: Path,
    *,
    title: str,
    levels: Mapping[str, float] | None = None,
    window: int = 200,
) -> Path:
    """Training success (mean over the last ``window`` episodes) of several runs against env
    steps, with reference levels (e.g. held-out success of SFT alone, of a random policy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, rows in series.items():
        x, y = trailing_curve(rows, window)
        axis.plot(x, y, lw=2, label=label)
    styles = iter(("--", ":", "-.", (0, (5, 1))))
    for label, value in (levels or {}).items():
        axis.axhline(value, color="grey", lw=1.2, ls=next(styles, "--"), label=f"{label}: {value:.0%}")
    return _finish(figure, axis, out, title=title, ylabel=f"training success, last {window} episodes")
