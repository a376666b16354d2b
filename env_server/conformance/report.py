"""The outcome of a conformance run: one result per check, printable and as JSON."""

from __future__ import annotations

import enum
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Outcome(enum.Enum):
    """How one check ended."""

    PASS = "PASS"
    FAIL = "FAIL"  # a required check failed: the server does not conform
    WARN = "WARN"  # suspicious or a recommended feature is broken; not a failure
    SKIP = "SKIP"  # the check does not apply (capability absent, limit too large...)


class Level(enum.Enum):
    """How much a check matters: a failed recommended check is reported as WARN."""

    REQUIRED = "required"
    RECOMMENDED = "recommended"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome and a reason that says what was expected and what came."""

    name: str
    outcome: Outcome
    reason: str
    level: Level = Level.REQUIRED
    seconds: float = 0.0

    def line(self, name_width: int = 30) -> str:
        return f"{self.outcome.value:<5} {self.name:<{name_width}}{self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "level": self.level.value,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Report:
    """Every check's result for one server; ``ok`` when no check FAILed."""

    address: str
    env_name: str = ""
    protocol_version: str = ""
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome is Outcome.FAIL]

    def result(self, name: str) -> CheckResult:
        """The result of the check called ``name``; KeyError if it did not run."""
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r} in this report; ran: {[r.name for r in self.results]}")

    def counts(self) -> dict[str, int]:
        counted = Counter(r.outcome for r in self.results)
        return {outcome.value: counted.get(outcome, 0) for outcome in Outcome}

    def summary(self) -> str:
        """The last line: counts and the verdict."""
        counts = self.counts()
        served = f"{self.env_name!r} at " if self.env_name else ""
        verdict = "CONFORMANT" if self.ok else "NOT CONFORMANT"
        return (
            f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['WARN']} warnings, "
            f"{counts['SKIP']} skipped in {self.seconds:.1f} s: {served}{self.address} is {verdict}"
        )

    def to_text(self) -> str:
        """One line per check, then the summary."""
        width = max((len(r.name) for r in self.results), default=0) + 2
        return "\n".join([*(r.line(width) for r in self.results), self.summary()])

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "env_name": self.env_name,
            "protocol_version": self.protocol_version,
            "ok": self.ok,
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "checks": [r.to_dict() for r in self.results],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
