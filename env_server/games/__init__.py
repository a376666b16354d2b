"""The built-in games: the four of RL4VLM, each a small Env with an oracle, and ALFWorld.

``make(name)`` builds one by name; ``GAMES`` lists them. A game that needs an optional extra
(``alfworld``: ``pip install 'visact[alfworld]'``) is registered when the extra is installed,
and listed by ``missing()`` with its install command when it is not. A name of the form ``module:attribute``
(``my_games.coin:Coin``) is an environment of your own instead: an ``Env`` subclass, or a
function returning an ``Env``, in any importable module. Importing this package also registers
each built-in game with Gymnasium as ``visact/<ClassName>-v0``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from visact.env_server.core import Env
from visact.env_server.games.gym_registration import register_gym_envs

GAMES: dict[str, Callable[[], Env]] = {}
#: Games whose extra is not installed: name -> how to install it.
MISSING: dict[str, str] = {}


def register(name: str, factory: Callable[[], Env]) -> None:
    """Add a game under ``name`` (lower case, as given to ``env-server --env``)."""
    GAMES[name] = factory


def register_missing(name: str, install: str) -> None:
    """Note a game that needs an extra that is not installed (``install``: the command that adds it)."""
    MISSING[name] = install


def make(name: str) -> Env:
    """A new instance of the game called ``name`` (a built-in name, or ``module:attribute``)."""
    if ":" in name:
        return _make_imported(name)
    _load_builtin()
    try:
        factory = GAMES[name]
    except KeyError:
        if name in MISSING:
            raise ValueError(
                f"game {name!r} needs an optional extra that is not installed: {MISSING[name]}"
            ) from None
        known = ", ".join(sorted(GAMES)) or "(none)"
        raise ValueError(
            f"unknown game {name!r}; expected one of: {known}, or module:Class for an Env of your own"
        ) from None
    return factory()


def _make_imported(name: str) -> Env:
    """``module:attribute``: import the module, call the attribute, check it made an ``Env``."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{name!r}: expected module:Class, e.g. my_games.coin:Coin")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"{name!r}: cannot import {module_name!r} ({exc}); install the package that has it, or put "
            "its folder on PYTHONPATH"
        ) from exc
    factory: object = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"{name!r}: module {module_name!r} has no {attribute!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(
            f"{name!r}: {attribute!r} is a {type(factory).__name__}, not an Env class or factory"
        )
    env = factory()
    if not isinstance(env, Env):
        raise ValueError(
            f"{name!r} made a {type(env).__name__}, not an env_server.core.Env: subclass Env "
            "(docs/protocol.md, 'Adding an environment in Python')"
        )
    return env


def names() -> list[str]:
    """Names of every registered game (optional ones only when their extra is installed)."""
    _load_builtin()
    return sorted(GAMES)


def missing() -> dict[str, str]:
    """Games whose optional extra is not installed, with the command that installs it."""
    _load_builtin()
    return dict(sorted(MISSING.items()))


def _load_builtin() -> None:
    """Import the built-in game modules (each registers itself)."""
    from visact.env_server.games import builtin  # noqa: F401


register_gym_envs()
