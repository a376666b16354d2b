"""Fact accuracy: how many of the facts the chains of thought state are right, overall and per
key (the checks come from ``visact.agent.parsing.check_facts``, against the environment's expert;
they travel with each step as ``TrajectoryStep.fact_checks``)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class FactStats:
    """Facts checked and stated correctly, overall and per key; ``metrics()`` for the logs."""

    checked: Counter[str] = field(default_factory=Counter)
    correct: Counter[str] = field(default_factory=Counter)

    def add(self, checks: Sequence[tuple[str, bool]]) -> None:
        """Count one answer's checks (:func:`check_facts`)."""
        for key, right in checks:
            self.checked[key] += 1
            self.correct[key] += int(right)

    @property
    def accuracy(self) -> float:
        """Correct facts / checked facts; NaN when none was checked (no truth, or action only)."""
        total = sum(self.checked.values())
        return sum(self.correct.values()) / total if total else math.nan

    def by_key(self) -> dict[str, float]:
        """Each key's accuracy, for the keys checked at least once."""
        return {key: self.correct[key] / n for key, n in sorted(self.checked.items()) if n}

    def metrics(self, prefix: str = "charts/fact_accuracy") -> dict[str, float]:
        """``{prefix}`` and ``{prefix}/<key>`` (spaces as ``_``); empty when nothing was checked."""
        if not self.checked:
            return {}
        out = {prefix: self.accuracy}
        out.update({f"{prefix}/{key.replace(' ', '_')}": rate for key, rate in self.by_key().items()})
        return out
