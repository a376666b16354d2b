"""The conformance suite: checks any visact environment server by address, whatever its language.

It speaks only the protocol (``visact/env/v1/env.proto``) through the generated stubs,
and assumes nothing about the game beyond what Describe says::

    env-conformance --server localhost:50051

or from Python::

    report = run_conformance("localhost:50051", Options(token="..."))
    assert report.ok, report.to_text()

and for an ``Env`` class in process (served on a free loopback port)::

    report = check_env(MyGame)
"""

from visact.env_server.conformance.check_env import check_env
from visact.env_server.conformance.checks import CHECKS, NAMES, Check
from visact.env_server.conformance.context import Options
from visact.env_server.conformance.report import CheckResult, Level, Outcome, Report
from visact.env_server.conformance.runner import run_conformance

__all__ = [
    "CHECKS",
    "NAMES",
    "Check",
    "CheckResult",
    "Level",
    "Options",
    "Outcome",
    "Report",
    "check_env",
    "run_conformance",
]
