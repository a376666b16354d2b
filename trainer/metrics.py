"""Metrics to TensorBoard, to a JSONL file (for plots and tests) and to the console."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("trainer")

#: shown on the console line, in this order, with these short names
CONSOLE = (
    ("charts/success_rate", "success", "{:.0%}"),
    ("charts/episode_return", "return", "{:+.2f}"),
    ("charts/valid_action_rate", "valid", "{:.0%}"),
    ("charts/fact_accuracy", "facts", "{:.0%}"),
    ("charts/cot_tokens", "cot", "{:.0f}"),
    ("charts/cot_distinct", "distinct", "{:.0%}"),
    ("losses/policy", "pi", "{:+.4f}"),
    ("losses/value", "v", "{:.4f}"),
    ("losses/approx_kl", "kl", "{:.4f}"),
    ("losses/clip_frac", "clip", "{:.2f}"),
    ("losses/stop_kl", "stopped early at kl", "{:.4f}"),
    ("losses/explained_variance", "ev", "{:+.2f}"),
    ("charts/policy_lag_mean", "lag", "{:.2f}"),
    ("perf/samples_per_second", "samples/s", "{:.1f}"),
    ("perf/publish_seconds", "publish", "{:.3f}s"),
)


class MetricsLogger:
    """Writes each update's metrics to ``run_dir/tb`` (TensorBoard), ``run_dir/metrics.jsonl`` and,
    given one, a Weights & Biases run (``open_wandb``)."""

    def __init__(self, run_dir: Path, wandb_run: Any = None) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.wandb_run = wandb_run
        self.jsonl = run_dir / "metrics.jsonl"
        self._writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tb"))
        except ImportError:  # tensorboard is in the trainer extra; metrics.jsonl still works
            log.warning("tensorboard is not installed; metrics go to %s only", self.jsonl)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
        with self.jsonl.open("a") as out:
            out.write(json.dumps({"update": step, "time": time.time(), **clean}) + "\n")
        if self._writer is not None:
            for key, value in clean.items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(clean, step=step)
        parts = [f"update {step}"]
        for key, short, fmt in CONSOLE:
            if key in clean:
                parts.append(f"{short} {fmt.format(clean[key])}")
        log.info("  ".join(parts))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def open_wandb(
    project: str | None, entity: str | None, run_id: str, run_dir: Path, config: Mapping[str, Any]
) -> Any:
    """The Weights & Biases run of this trainer run, or None without a project. The W&B run id is
    the trainer's run id, which a checkpoint keeps: a resumed trainer logs on into the same run.
    Its files go under ``run_dir/wandb``."""
    if not project:
        return None
    import wandb

    run_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=project,
        entity=entity,
        id=run_id,
        name=run_id,
        resume="allow",
        dir=str(run_dir),
        job_type="ppo",
        config={
            key: value if isinstance(value, int | float | bool | None) else str(value)
            for key, value in config.items()
        },
    )


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Every update's metrics from ``run_dir/metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trailing_success(rows: Sequence[Mapping[str, float]], episodes: int = 200) -> float | None:
    """Training success over (about) the last ``episodes`` episodes: the paper's running mean.

    From whole updates: the newest updates whose episodes add up to at least ``episodes``
    (all of them if fewer), each update's success rate weighted by its episode count.
    None without any episode.
    """
    wins = seen = 0.0
    for row in reversed(rows):
        count = row.get("charts/episodes", 0.0)
        wins += row.get("charts/success_rate", 0.0) * count
        seen += count
        if seen >= episodes:
            break
    return wins / seen if seen else None
