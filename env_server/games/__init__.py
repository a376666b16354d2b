"""The built-in games: the four of RL4VLM, each a small Env with an oracle.

``make(name)`` builds one by name; ``GAMES`` lists them. Importing this package
also registers each with Gymnasium as ``visact/<ClassName>-v0``.
"""

from __future__ import annotations

from collections.abc import Callable

from env_server.core import Env
from env_server.games.gym_registration import register_gym_envs

GAMES: dict[str, Callable[[], Env]] = {}


def register(name: str, factory: Callable[[], Env]) -> None:
    """Add a game under ``name`` (lower case, as given to ``env-server --env``)."""
    GAMES[name] = factory


def make(name: str) -> Env:
    """A new instance of the game called ``name``."""
    _load_builtin()
    try:
        factory = GAMES[name]
    except KeyError:
        known = ", ".join(sorted(GAMES)) or "(none)"
        raise ValueError(f"unknown game {name!r}; expected one of: {known}") from None
    return factory()


def names() -> list[str]:
    """Names of every registered game."""
    _load_builtin()
    return sorted(GAMES)


def _load_builtin() -> None:
    """Import the built-in game modules (each registers itself)."""
    from env_server.games import builtin  # noqa: F401


register_gym_envs()
