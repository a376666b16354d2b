"""``env-conformance --server host:port``: check any visact environment server, in any language.

Prints one line per check (PASS, FAIL, WARN or SKIP, its name, and why) and exits
0 when no check failed, 1 when one did, 2 on a usage error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from visact.configcli import parse_config
from visact.env_server.conformance.checks import CHECKS, NAMES, select
from visact.env_server.conformance.context import Options
from visact.env_server.conformance.report import CheckResult
from visact.env_server.conformance.runner import run_conformance

NAME_WIDTH = max(len(name) for name in NAMES)


@dataclass
class ConformanceConfig(Options):
    """The env-conformance command line: the server's address, the run's options, where to write JSON."""

    server: str = field(
        default="", metadata={"help": "address of the server under test, host:port (required)"}
    )
    json: Path | None = field(default=None, metadata={"help": "also write the report as JSON to this file"})
    list: bool = field(default=False, metadata={"help": "print the checks and exit"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.token is None:
            self.token = os.environ.get("VISACT_TOKEN") or None
        if not self.server and not self.list:
            raise ValueError("--server host:port is required")
        select(self.only)  # ValueError names the unknown checks


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(
        ConformanceConfig, argv, prog="env-conformance", description=__doc__.splitlines()[0]
    )
    if config.list:
        for check in CHECKS:
            print(f"{check.name:<{NAME_WIDTH}}  {check.level.value:<11}  {check.summary}")
        return 0

    def show(result: CheckResult) -> None:
        print(result.line(NAME_WIDTH + 2), flush=True)

    print(f"env-conformance: checking {config.server}", flush=True)
    report = run_conformance(config.server, config, on_result=show)
    print(report.summary(), flush=True)
    if config.json is not None:
        report.write_json(config.json)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
