"""Validation of reset options, shared by the games.

Options arrive from gRPC as a JSON Struct, so numbers may come as floats (``3.0``);
these helpers accept integral floats and reject everything else with a message that
names the option, what came, and what is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from visact.env_server.errors import InvalidRequest


def check_names(game: str, options: Mapping[str, Any] | None, accepted: tuple[str, ...]) -> dict[str, Any]:
    """The options as a dict; raises :class:`InvalidRequest` naming any unknown option."""
    given = dict(options or {})
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        names = ", ".join(repr(name) for name in accepted) or "(none)"
        raise InvalidRequest(f"{game}: unknown reset option(s) {unknown}; accepted options: {names}")
    return given


def int_option(options: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    """The integer option ``name`` in ``low..high``, or None when absent."""
    if name not in options:
        return None
    value = options[name]
    integral = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if not integral or not low <= int(value) <= high:
        raise InvalidRequest(f"reset option {name!r} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def bool_option(options: Mapping[str, Any], name: str) -> bool | None:
    """The boolean option ``name``, or None when absent."""
    if name not in options:
        return None
    value = options[name]
    if not isinstance(value, bool):
        raise InvalidRequest(f"reset option {name!r} must be true or false, got {value!r}")
    return value
