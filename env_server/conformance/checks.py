"""Every check of the suite, by name, in the order they run.

A check is a function of the :class:`Context` that returns a reason when the server
passes and raises CheckFailed / CheckSkipped / CheckWarning otherwise. Names are
dotted by group, so ``--only errors`` runs every ``errors.*`` check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from visact.env_server.conformance import (
    checks_batch,
    checks_capacity,
    checks_concurrency,
    checks_describe,
    checks_episode,
    checks_errors,
    checks_expert,
    checks_extras,
    checks_seed,
    checks_sessions,
)
from visact.env_server.conformance.context import Context
from visact.env_server.conformance.report import Level


@dataclass(frozen=True)
class Check:
    """One named check; ``needs_spec`` checks are skipped when Describe fails."""

    name: str
    run: Callable[[Context], str]
    level: Level = Level.REQUIRED
    needs_spec: bool = True

    @property
    def summary(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0]


CHECKS: tuple[Check, ...] = (
    Check("describe", checks_describe.check_describe),
    Check("describe.capabilities", checks_describe.check_capabilities),
    Check("describe.message_size", checks_describe.check_message_size),
    Check("reset.observation", checks_episode.check_reset_observation),
    Check("reset.png", checks_episode.check_png),
    Check("episode.play", checks_episode.check_play),
    Check("episode.end_and_reset", checks_episode.check_end_and_reset),
    Check("episode.truncation", checks_episode.check_truncation),
    Check("seed.determinism", checks_seed.check_determinism),
    Check("seed.variety", checks_seed.check_variety),
    Check("seed.range", checks_seed.check_seed_range),
    Check("errors.step_before_reset", checks_errors.check_step_before_reset),
    Check("errors.invalid_action", checks_errors.check_invalid_action),
    Check("errors.invalid_reset_option", checks_errors.check_invalid_reset_option),
    Check("errors.unknown_session", checks_errors.check_unknown_session),
    Check("errors.create_session", checks_errors.check_create_session_errors),
    Check("errors.precedence", checks_errors.check_error_precedence),
    Check("expert", checks_expert.check_expert),
    Check("batch_step", checks_batch.check_batch_step),
    Check("batch_step_stream", checks_batch.check_batch_step_stream),
    Check("sessions.capacity", checks_sessions.check_capacity),
    Check("sessions.ids", checks_sessions.check_session_ids),
    Check("sessions.concurrency", checks_concurrency.check_concurrency),
    Check("sessions.one_session", checks_concurrency.check_one_session),
    Check("sessions.idle_reaper", checks_sessions.check_idle_reaper),
    Check("capacity.held_streams", checks_capacity.check_held_streams),
    Check("auth.token", checks_extras.check_token, needs_spec=False),
    Check("health", checks_extras.check_health, Level.RECOMMENDED, needs_spec=False),
    Check("reflection", checks_extras.check_reflection, Level.RECOMMENDED, needs_spec=False),
)

NAMES = tuple(check.name for check in CHECKS)


def select(only: Sequence[str]) -> list[Check]:
    """The checks named in ``only`` (a name or a group prefix like "errors"); all when empty."""
    if not only:
        return list(CHECKS)
    unknown = [n for n in only if not any(_matches(check.name, n) for check in CHECKS)]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; the checks are: {', '.join(NAMES)}")
    return [check for check in CHECKS if any(_matches(check.name, n) for n in only)]


def _matches(name: str, wanted: str) -> bool:
    return name == wanted or name.startswith(wanted + ".")
