"""Evaluation summaries: success rate with a 95% Wilson interval, returns, answer health."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from visact.wire.records import Episode

#: Episode seeds at or above this are held out for evaluation; training uses seeds below it.
EVAL_SEED_BASE = 1_000_000_000


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95% by default)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EvalSummary:
    """What `agent-client eval` prints and writes."""

    env: str
    policy: str
    episodes: int
    success_rate: float
    success_ci95: tuple[float, float]
    mean_return: float
    valid_action_rate: float
    mean_cot_tokens: float
    mean_answer_tokens: float
    steps: int
    steps_per_second: float
    seconds: float
    parse_failures: dict[str, int] = field(default_factory=dict)
    policy_version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        low, high = self.success_ci95
        return [
            f"env {self.env}  policy {self.policy}  episodes {self.episodes}  steps {self.steps}",
            f"success rate      {self.success_rate:6.1%}  (95% CI {low:.1%} .. {high:.1%})",
            f"mean return       {self.mean_return:7.3f}",
            f"valid-action rate {self.valid_action_rate:6.1%}  failures {dict(self.parse_failures) or '-'}",
            f"mean CoT tokens   {self.mean_cot_tokens:7.1f}  (answer {self.mean_answer_tokens:.1f})",
            f"steps per second  {self.steps_per_second:7.2f}  ({self.seconds:.1f} s)",
        ]


def summarize(
    episodes: Sequence[Episode], *, env: str, policy: str, seconds: float, policy_version: int = 0
) -> EvalSummary:
    """Aggregate finished episodes into an EvalSummary."""
    steps = [s for e in episodes for s in e.steps]
    wins = sum(e.success for e in episodes)
    n = len(episodes)
    failures = Counter(s.parse_failure for s in steps if s.parse_failure)
    return EvalSummary(
        env=env,
        policy=policy,
        episodes=n,
        success_rate=wins / n if n else 0.0,
        success_ci95=wilson_interval(wins, n),
        mean_return=sum(e.episode_return for e in episodes) / n if n else 0.0,
        valid_action_rate=sum(s.valid for s in steps) / len(steps) if steps else 0.0,
        mean_cot_tokens=sum(s.action_start for s in steps) / len(steps) if steps else 0.0,
        mean_answer_tokens=sum(len(s.generated_ids) for s in steps) / len(steps) if steps else 0.0,
        steps=len(steps),
        steps_per_second=len(steps) / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        parse_failures=dict(failures),
        policy_version=policy_version,
    )
