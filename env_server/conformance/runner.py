"""Run the checks against a server by address and collect a :class:`Report`."""

from __future__ import annotations

import time
from collections.abc import Callable

from visact.env_server.conformance.checks import Check, select
from visact.env_server.conformance.context import Context, Options
from visact.env_server.conformance.report import CheckResult, Level, Outcome, Report
from visact.env_server.conformance.wire import CheckFailed, CheckSkipped, CheckWarning, Wire

OnResult = Callable[[CheckResult], None]


def run_conformance(
    address: str, options: Options | None = None, *, on_result: OnResult | None = None
) -> Report:
    """Check the server at ``address`` (host:port); ``on_result`` sees each result as it comes.

    Raises ValueError for an unknown check name in ``options.only``; everything the
    server does wrong, including not answering, ends up in the report.
    """
    options = options or Options()
    selected = select(options.only)
    started = time.monotonic()
    report = Report(address)
    wire = Wire(
        address,
        token=options.token,
        timeout=options.timeout,
        tls_ca=options.tls_ca,
        tls_cert=options.tls_cert,
        tls_key=options.tls_key,
    )

    def record(result: CheckResult) -> None:
        report.results.append(result)
        if on_result is not None:
            on_result(result)

    try:
        ctx = Context(wire, options)
        failure = _preflight(ctx, report)
        unreachable = failure is not None and failure.name == "connect"
        if failure is not None and (unreachable or all(c.name != "describe" for c in selected)):
            record(failure)
        for check in selected:
            # without a connection nothing runs; without a spec only what needs none (and describe, to report it)
            blocked = unreachable or (failure is not None and check.needs_spec and check.name != "describe")
            if failure is not None and blocked:
                record(CheckResult(check.name, Outcome.SKIP, f"not run: {failure.name} failed", check.level))
            else:
                record(_run_one(check, ctx))
    finally:
        wire.close()
    report.seconds = time.monotonic() - started
    return report


def _preflight(ctx: Context, report: Report) -> CheckResult | None:
    """Connect and Describe; the failure, if any (the checks that need them are then skipped)."""
    if not ctx.wire.wait_connected(ctx.options.connect_timeout):
        reason = (
            f"no server answered at {ctx.wire.address} within {ctx.options.connect_timeout:g} s; is it running, "
            "and does it speak TLS (pass --tls-ca) or plaintext (do not)?"
        )
        return CheckResult("connect", Outcome.FAIL, reason)
    try:
        spec = ctx.spec
    except CheckFailed as exc:
        return CheckResult("describe", Outcome.FAIL, str(exc))
    report.env_name, report.protocol_version = spec.name, spec.protocol_version
    return None


def _run_one(check: Check, ctx: Context) -> CheckResult:
    started = time.monotonic()
    try:
        outcome, reason = Outcome.PASS, check.run(ctx)
    except CheckFailed as exc:
        outcome, reason = Outcome.FAIL, str(exc)
    except CheckSkipped as exc:
        outcome, reason = Outcome.SKIP, str(exc)
    except CheckWarning as exc:
        outcome, reason = Outcome.WARN, str(exc)
    except Exception as exc:  # a response the suite did not foresee is the server's failure to report
        outcome, reason = Outcome.FAIL, f"the check stopped on an unexpected {type(exc).__name__}: {exc}"
    if outcome is Outcome.FAIL and check.level is Level.RECOMMENDED:
        outcome, reason = Outcome.WARN, f"recommended, not required: {reason}"
    return CheckResult(check.name, outcome, reason, check.level, time.monotonic() - started)
