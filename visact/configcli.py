"""Derive a command line from a dataclass config: one config per process, the CLI follows it.

Each field becomes ``--field-name`` (plus ``metadata={"short": "-o"}`` when given); its help text is ``field(metadata={"help": ...})``;
bools become ``--flag/--no-flag``; ``list[...]`` fields may be repeated; fields typed
``X | None`` default to None; a ``Literal[...]`` field takes one of its values (the choices);
``metadata={"cli": False}`` keeps a field off the command line. A field whose type is a dataclass
(``ppo: PPOConfig = field(default_factory=PPOConfig)``) is a *group*: its fields are options of the
same command line, flattened (``--lr``, not ``--ppo.lr``; ``metadata={"prefix": "lora_"}`` spells
``lora.r`` as ``--lora-r``), listed in the help under the group's name and description (its
metadata help, else the first paragraph of its docstring); two options of one name are a TypeError.
Validation lives in each dataclass's ``__post_init__``, whose ValueError is reported as a usage
error. ``to_argv`` is the inverse: the command line that parses back into a given config, so a
process that starts another builds its config (typed, checked) instead of spelling flags. Stdlib
only (the env side uses it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

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


class _Option(NamedTuple):
    path: tuple[str, ...]  # attributes from the config to the value: ("ppo", "lr")
    field: dataclasses.Field[Any]
    type: Any  # without ``| None``
    dest: str  # the flag's name: "lr" for --lr, "lora_r" for --lora-r
    group: tuple[str, str] | None  # (title, description) of its group in the help


def _fields(config_cls: type) -> Iterator[tuple[dataclasses.Field[Any], Any, bool]]:
    """(field, type, is_group) of every field that is on the command line."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.init and f.metadata.get("cli") is not False:
            tp = hints[f.name]
            yield f, tp, isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _description(f: dataclasses.Field[Any], group_cls: type) -> str:
    doc = group_cls.__doc__ or ""
    if doc.startswith(group_cls.__name__ + "("):
        doc = ""  # the signature dataclass() writes when there is no docstring
    return f.metadata.get("help") or " ".join(doc.strip().split("\n\n")[0].split())  # its first paragraph


def _options(
    config_cls: type, path: tuple[str, ...] = (), prefix: str = "", group: tuple[str, str] | None = None
) -> Iterator[_Option]:
    """Every command-line option of ``config_cls``, the fields of its groups flattened."""
    for f, tp, is_group in _fields(config_cls):
        if is_group:
            title = ".".join((*path, f.name))
            yield from _options(
                tp, (*path, f.name), prefix + f.metadata.get("prefix", ""), (title, _description(f, tp))
            )
        else:
            yield _Option((*path, f.name), f, _unwrap_optional(tp)[0], prefix + f.name, group)


def _flag(option: _Option) -> str:
    return "--" + option.dest.replace("_", "-")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default if f.default is not dataclasses.MISSING else None


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add one option per field of ``config_cls`` (and of its groups) to ``parser``."""
    groups: dict[tuple[str, str], argparse._ArgumentGroup] = {}
    owners: dict[str, str] = {}  # option string -> the field that has it
    for option in _options(config_cls):
        f, tp = option.field, option.type
        flags = [_flag(option)]
        if short := f.metadata.get("short"):  # e.g. "-o"
            flags.append(short)
        for flag in [*flags, "--no-" + flags[0][2:]] if tp is bool else flags:
            if flag in owners:
                raise TypeError(
                    f"configcli: {config_cls.__name__} has two options {flag}: {owners[flag]} and "
                    f"{'.'.join(option.path)}"
                )
            owners[flag] = ".".join(option.path)
        target: argparse._ActionsContainer = parser
        if option.group is not None:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(*option.group)
            target = groups[option.group]
        default = _default(f)
        help_text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": option.dest, "help": f"{help_text} (default: {default!r})"}
        if typing.get_origin(tp) is typing.Literal:
            choices = list(typing.get_args(tp))
            kwargs["choices"] = choices
            tp = type(choices[0])
        if tp is bool:
            target.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default, **kwargs)
        elif typing.get_origin(tp) in (list, tuple):
            (item,) = typing.get_args(tp)[:1]
            target.add_argument(*flags, action="append", type=_SCALARS.get(item, str), default=None, **kwargs)
        elif tp in _SCALARS:
            target.add_argument(*flags, type=_SCALARS[tp], default=default, **kwargs)
        else:
            raise TypeError(f"configcli: field {'.'.join(option.path)!r} has unsupported type {tp!r}")


def _value(config: object, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def to_argv(config: object) -> list[str]:
    """The options that ``parse_config(type(config), ...)`` turns back into ``config``.

    One option per field (of the config or of its groups) that differs from its default, spelled
    as the parser takes it (``--flag=value``; ``--flag``/``--no-flag`` for booleans; a list option
    once per item). A field whose metadata names an environment variable (``"env": "VISACT_TOKEN"``)
    is left out when it holds that variable's value: the child reads it there, and a secret stays
    off the command line (which every user of the machine can read). Raises ValueError for a value
    no option can say.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"to_argv takes a dataclass config, got {config!r}")
    argv: list[str] = []
    for option in _options(type(config)):
        f, flag, value = option.field, _flag(option), _value(config, option.path)
        if value == _default(f):
            continue
        if (variable := f.metadata.get("env")) and value == (os.environ.get(variable) or None):
            continue
        if value is None or (isinstance(value, (list, tuple)) and not value):
            raise ValueError(
                f"{type(config).__name__}.{'.'.join(option.path)} = {value!r} has no command-line "
                f"spelling (its default is {_default(f)!r}); leave it at the default or give it a value"
            )
        if option.type is bool:
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            items = value if isinstance(value, (list, tuple)) else [value]
            argv += [f"{flag}={item}" for item in items]  # one word: a value may start with '-'
    return argv


def config_from_args(config_cls: type[C], args: argparse.Namespace, prefix: str = "") -> C:
    """Build the config, and the configs of its groups, from parsed args (repeated options
    replace list defaults)."""
    values: dict[str, Any] = {}
    for f, tp, is_group in _fields(config_cls):
        if is_group:
            values[f.name] = config_from_args(tp, args, prefix + f.metadata.get("prefix", ""))
            continue
        dest = prefix + f.name
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if value is None and f.default_factory is not dataclasses.MISSING:
            continue  # list option not given: keep the default
        values[f.name] = value
    return config_cls(**values)


#: what ``as_options`` writes for a secret that is set
MASKED = "<set>"


def as_options(config: object) -> dict[str, Any]:
    """Every option's value by the option's name (``{"lr": 1e-05, "lora_r": 128, ...}``): the
    config flat, as its command line spells it, fit to be written down (a run's config in a
    checkpoint, experiment tracking): a secret, a field whose metadata names its environment
    variable (the bearer token), is only said to be set."""
    options = {}
    for option in _options(type(config)):
        value = _value(config, option.path)
        if option.field.metadata.get("env") and value is not None:
            value = MASKED
        options[option.dest] = value
    return options


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
