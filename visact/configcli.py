"""Derive a command line from a dataclass config: one config per process, the CLI follows it.

Each field becomes ``--field-name`` (plus ``metadata={"short": "-o"}`` when given); its help text is ``field(metadata={"help": ...})``;
bools become ``--flag/--no-flag``; ``list[...]`` fields may be repeated; fields typed
``X | None`` default to None; a ``Literal[...]`` field takes one of its values (the choices). Validation lives in the dataclass's ``__post_init__``,
whose ValueError is reported as a usage error. ``to_argv`` is the inverse: the command line
that parses back into a given config, so a process that starts another builds its config
(typed, checked) instead of spelling flags. Stdlib only (the env side uses it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")

_SCALARS: dict[Any, Any] = {int: int, float: float, str: str, Path: Path}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_optional) for ``X | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _options(config_cls: type) -> list[tuple[dataclasses.Field[Any], Any, str]]:
    """(field, type without ``| None``, ``--flag``) of every field that is a command-line option."""
    hints = typing.get_type_hints(config_cls)
    return [
        (f, _unwrap_optional(hints[f.name])[0], "--" + f.name.replace("_", "-"))
        for f in dataclasses.fields(config_cls)
        if f.init and f.metadata.get("cli") is not False
    ]


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default if f.default is not dataclasses.MISSING else None


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add one option per field of ``config_cls`` to ``parser``."""
    for f, tp, flag in _options(config_cls):
        flags = [flag]
        if short := f.metadata.get("short"):  # e.g. "-o"
            flags.append(short)
        help_text = f.metadata.get("help", "")
        default = _default(f)
        kwargs: dict[str, Any] = {"dest": f.name, "help": f"{help_text} (default: {default!r})"}
        if typing.get_origin(tp) is typing.Literal:
            choices = list(typing.get_args(tp))
            kwargs["choices"] = choices
            tp = type(choices[0])
        if tp is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default, **kwargs)
        elif typing.get_origin(tp) in (list, tuple):
            (item,) = typing.get_args(tp)[:1]
            parser.add_argument(*flags, action="append", type=_SCALARS.get(item, str), default=None, **kwargs)
        elif tp in _SCALARS:
            parser.add_argument(*flags, type=_SCALARS[tp], default=default, **kwargs)
        else:
            raise TypeError(f"configcli: field {f.name!r} has unsupported type {tp!r}")


def to_argv(config: object) -> list[str]:
    """The options that ``parse_config(type(config), ...)`` turns back into ``config``.

    One option per field that differs from its default, spelled as the parser takes it
    (``--flag=value``; ``--flag``/``--no-flag`` for booleans; a list option once per item). A field whose metadata
    names an environment variable (``"env": "VISACT_TOKEN"``) is left out when it holds that
    variable's value: the child reads it there, and a secret stays off the command line (which
    every user of the machine can read). Raises ValueError for a value no option can say.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"to_argv takes a dataclass config, got {config!r}")
    argv: list[str] = []
    for f, tp, flag in _options(type(config)):
        value = getattr(config, f.name)
        if value == _default(f):
            continue
        if (variable := f.metadata.get("env")) and value == (os.environ.get(variable) or None):
            continue
        if value is None or (isinstance(value, (list, tuple)) and not value):
            raise ValueError(
                f"{type(config).__name__}.{f.name} = {value!r} has no command-line spelling (its "
                f"default is {_default(f)!r}); leave it at the default or give it a value"
            )
        if tp is bool:
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            items = value if isinstance(value, (list, tuple)) else [value]
            argv += [f"{flag}={item}" for item in items]  # one word: a value may start with '-'
    return argv


def config_from_args(config_cls: type[C], args: argparse.Namespace) -> C:
    """Build the config from parsed args (repeated options replace list defaults)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):  # type: ignore[arg-type]
        if not f.init or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if value is None and f.default_factory is not dataclasses.MISSING:
            continue  # list option not given: keep the default
        values[f.name] = value
    return config_cls(**values)


def parse_config(
    config_cls: type[C], argv: Sequence[str] | None = None, *, prog: str | None = None, description: str = ""
) -> C:
    """Parse ``argv`` into a ``config_cls``; validation errors become usage errors (exit 2)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_dataclass_arguments(parser, config_cls)
    args = parser.parse_args(argv)
    try:
        return config_from_args(config_cls, args)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
