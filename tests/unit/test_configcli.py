"""The CLI derived from a config dataclass (long options, short aliases, booleans, lists) and back."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from visact.agent.config import AgentConfig, parse_reset_options
from visact.configcli import as_options, parse_config, to_argv
from visact.env_server.server import ServerConfig
from visact.orchestration.demo import DemoConfig
from visact.orchestration.demos import DemosConfig
from visact.trainer.config import NetworkConfig, TrainerConfig
from visact.trainer.sft_config import SFTConfig


@dataclass
class Example:
    out: Path = field(default=Path("a.jsonl"), metadata={"help": "where", "short": "-o"})
    episodes: int = field(default=3, metadata={"help": "how many"})
    cot: bool = field(default=True, metadata={"help": "chain of thought"})
    server: list[str] = field(default_factory=list, metadata={"help": "repeatable"})
    mode: typing.Literal["fast", "slow"] = field(default="fast", metadata={"help": "one of two"})


def test_long_short_boolean_and_repeated_options() -> None:
    config = parse_config(
        Example, ["-o", "b.jsonl", "--episodes", "7", "--no-cot", "--server", "x", "--server", "y"]
    )
    assert config == Example(out=Path("b.jsonl"), episodes=7, cot=False, server=["x", "y"])
    assert parse_config(Example, ["--out", "c.jsonl"]).out == Path("c.jsonl")
    assert parse_config(Example, []) == Example()


def test_a_bad_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse_config(Example, ["--episodes", "many"])


def test_a_literal_field_takes_its_values_and_refuses_others(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_config(Example, ["--mode", "slow"]).mode == "slow"
    with pytest.raises(SystemExit):
        parse_config(Example, ["--mode", "medium"])
    err = capsys.readouterr().err
    assert "invalid choice: 'medium'" in err and "fast" in err and "slow" in err


# -- groups: a dataclass-typed field's fields are options of the same command line, flattened


@dataclass
class Sampling:
    """How answers are sampled."""

    temperature: float = field(default=0.2, metadata={"help": "sampling temperature"})
    cot: bool = field(default=True, metadata={"help": "chain of thought"})
    stop: list[str] = field(default_factory=list, metadata={"help": "repeatable", "short": "-s"})

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")


@dataclass
class Lora:
    r: int = field(default=8, metadata={"help": "rank"})
    secret: str | None = field(
        default=None, metadata={"help": "from $CONFIGCLI_SECRET", "env": "CONFIGCLI_SECRET"}
    )
    internal: int = field(default=0, metadata={"cli": False})

    def __post_init__(self) -> None:
        if self.secret is None:
            self.secret = os.environ.get("CONFIGCLI_SECRET") or None


@dataclass
class Inner:
    """Nested twice."""

    depth: int = field(default=2, metadata={"help": "how deep"})


@dataclass
class Outer:
    """Holds a group
    of its own.

    Not this paragraph."""

    inner: Inner = field(default_factory=Inner)
    width: int = field(default=1, metadata={"help": "how wide"})


@dataclass
class Grouped:
    name: str = field(default="x", metadata={"help": "top level"})
    sampling: Sampling = field(default_factory=Sampling)
    lora: Lora = field(default_factory=Lora, metadata={"prefix": "lora_", "help": "the adapter"})
    outer: Outer = field(default_factory=Outer)
    hidden: Sampling = field(default_factory=Sampling, metadata={"cli": False})


def help_text(config_cls: type, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        parse_config(config_cls, ["--help"])
    return capsys.readouterr().out


def test_a_group_s_fields_are_flattened_options(capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config(
        Grouped,
        ["--temperature", "0.5", "--no-cot", "-s", "a", "--lora-r", "4", "--depth", "3", "--width", "5"],
    )
    assert config == Grouped(
        sampling=Sampling(temperature=0.5, cot=False, stop=["a"]),
        lora=Lora(r=4),
        outer=Outer(Inner(depth=3), width=5),
    )
    assert parse_config(Grouped, []) == Grouped()
    flags = set(re.findall(r"--[a-z][a-z-]*", help_text(Grouped, capsys)))
    assert flags == {
        "--help", "--name", "--temperature", "--cot", "--no-cot", "--stop", "--lora-r", "--lora-secret",
        "--depth", "--width",
    }  # fmt: skip
    with pytest.raises(SystemExit):
        parse_config(Grouped, ["--r", "4"])  # the prefix is part of the flag
    with pytest.raises(SystemExit):
        parse_config(Grouped, ["--lora-internal", "1"])  # cli: False inside a group too


def test_the_help_lists_each_group_under_its_name_and_description(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(Grouped, capsys)
    # a section's title is not indented, its lines are
    sections = {s.split(":\n")[0]: s for s in re.split(r"\n(?=\S)", text)}
    assert "How answers are sampled." in sections["sampling"] and "--temperature" in sections["sampling"]
    assert "the adapter" in sections["lora"] and "--lora-r" in sections["lora"]
    assert "Nested twice." in sections["outer.inner"] and "--depth" in sections["outer.inner"]
    assert "--width" in sections["outer"] and "--depth" not in sections["outer"]
    assert "Holds a group of its own.\n" in sections["outer"] and "Not this" not in text
    assert "--temperature" not in sections["options"] and "--name" in sections["options"]
    assert "sampling temperature (default: 0.2)" in sections["sampling"]


def test_a_group_s_validation_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(Grouped, ["--temperature", "0"])
    assert "--temperature must be > 0, got 0.0" in capsys.readouterr().err


def test_two_options_of_one_name_are_refused_when_the_parser_is_built() -> None:
    @dataclass
    class Clash:
        sampling: Sampling = field(default_factory=Sampling)
        temperature: float = 1.0

    @dataclass
    class NegatedClash:
        sampling: Sampling = field(default_factory=Sampling)
        no_cot: bool = False

    @dataclass
    class ShortClash:
        sampling: Sampling = field(default_factory=Sampling)
        skip: int = field(default=0, metadata={"short": "-s"})

    with pytest.raises(TypeError, match=r"two options --temperature: sampling\.temperature and temperature"):
        parse_config(Clash, [])
    with pytest.raises(TypeError, match=r"two options --no-cot: sampling\.cot and no_cot"):
        parse_config(NegatedClash, [])
    with pytest.raises(TypeError, match=r"two options -s: sampling\.stop and skip"):
        parse_config(ShortClash, [])


def test_to_argv_flattens_groups_and_parses_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIGCLI_SECRET", "s3cret")
    config = Grouped(
        name="-y",
        sampling=Sampling(temperature=0.75, cot=False, stop=["-a", "b c"]),
        lora=Lora(r=16, secret="s3cret", internal=3),
        outer=Outer(Inner(depth=9)),
    )
    argv = to_argv(config)
    assert argv == [
        "--name=-y", "--temperature=0.75", "--no-cot", "--stop=-a", "--stop=b c", "--lora-r=16", "--depth=9",
    ]  # fmt: skip
    assert parse_config(Grouped, argv) == replace(config, lora=Lora(r=16))  # internal: no option
    assert "--lora-secret=other" in to_argv(replace(config, lora=Lora(secret="other")))
    assert to_argv(Grouped()) == []
    with pytest.raises(ValueError, match=r"Grouped.outer.inner.depth = None has no command-line spelling"):
        to_argv(replace(config, outer=Outer(Inner(depth=None))))  # type: ignore[arg-type]


def test_as_options_is_the_config_flat_by_option_name() -> None:
    options = as_options(Grouped(lora=Lora(r=4)))
    assert options == {
        "name": "x", "temperature": 0.2, "cot": True, "stop": [], "lora_r": 4, "lora_secret": None,
        "depth": 2, "width": 1,
    }  # fmt: skip


def test_as_options_says_only_that_a_secret_is_set() -> None:
    """A run's options are written down (checkpoints, W&B): the token must not be."""
    options = as_options(Grouped(lora=Lora(secret="s3cret")))
    assert options["lora_secret"] == "<set>" and "s3cret" not in str(options)


def test_reset_options_are_name_equals_value_read_as_json_when_they_parse() -> None:
    argv = ["--server", "x:1", "--reset-option", "expert=search", "--reset-option", "task_type=3"]
    config = parse_config(AgentConfig, [*argv, "--reset-option", 'room="12"', "--reset-option", "a=b=c"])
    assert config.servers.reset_options == {"expert": "search", "task_type": 3, "room": "12", "a": "b=c"}
    assert parse_config(AgentConfig, to_argv(config)) == config
    assert parse_config(AgentConfig, ["--server", "x:1"]).servers.reset_options == {}
    for bad in ("search", "=search"):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            parse_reset_options([bad])


def test_visact_demos_takes_dash_o_as_the_readme_shows() -> None:
    assert parse_config(DemosConfig, ["--env", "blackjack", "-o", "d/x.jsonl"]).out == Path("d/x.jsonl")


# -- to_argv: the inverse, so a process that starts another builds its config instead of spelling flags

PROCESS_CONFIGS = [TrainerConfig, AgentConfig, ServerConfig, SFTConfig, DemosConfig, DemoConfig]
#: what a config needs besides the field tried, a group's values as a dict of their own
BASE: dict[type, dict[str, Any]] = {AgentConfig: {"servers": {"server": ["127.0.0.1:1"]}}}


def other_values(f: dataclasses.Field[Any], tp: Any, default: Any) -> list[Any]:
    """Values of ``f`` other than its default, to try one at a time."""
    if typing.get_origin(tp) is typing.Literal:
        return [c for c in typing.get_args(tp) if c != default]
    if tp is bool:
        return [not default]
    if tp is int:
        return [default + 1 if default else 7, 2 * (default or 1) + 2]
    if tp is float:
        return [default + 0.25 if default else 0.125, (default or 1.0) * 3 + 1.0]
    if tp is Path:
        return [Path("elsewhere/p q.json")]
    if typing.get_origin(tp) is list:
        return [["a:1", "-b:2"]]
    return ["x-y z", "-starts-with-a-dash"]


def leaves(config_cls: type, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """(path, field, type) of every field of ``config_cls`` and of its groups, nested ones too."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaves(hints[f.name], (*path, f.name))
        else:
            yield (*path, f.name), f, hints[f.name]


def with_value(values: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    """``values`` with ``value`` at ``path`` (a dict per group on the way)."""
    name, *rest = path
    return {**values, name: with_value(values.get(name, {}), rest, value) if rest else value}


def build(config_cls: type, values: dict[str, Any]) -> Any:
    """A ``config_cls`` of ``values``, a group's values given as a dict of their own."""
    hints = typing.get_type_hints(config_cls)
    return config_cls(**{k: build(hints[k], v) if isinstance(v, dict) else v for k, v in values.items()})


@pytest.mark.parametrize("config_cls", PROCESS_CONFIGS, ids=lambda c: c.__name__)
def test_every_field_of_every_process_config_round_trips(
    config_cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VISACT_TOKEN", raising=False)
    written = fields = 0
    for path, f, tp in leaves(config_cls):
        fields += 1
        inner = next((a for a in typing.get_args(tp) if a is not type(None)), tp) if f.default is None else tp
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for value in other_values(f, inner, default):
            try:
                config = build(config_cls, with_value(BASE.get(config_cls, {}), path, value))
            except ValueError:
                continue  # this value alone is refused (e.g. --tls-cert without --tls-key)
            argv = to_argv(config)
            assert parse_config(config_cls, argv) == config, (path, argv)
            written += 1
    assert written >= fields


def test_to_argv_writes_only_what_differs_in_the_spelling_the_parser_takes() -> None:
    config = Example(out=Path("b.jsonl"), cot=False, server=["x", "y"])
    assert to_argv(config) == ["--out=b.jsonl", "--no-cot", "--server=x", "--server=y"]
    assert to_argv(Example()) == []
    assert to_argv(replace(Example(), cot=True, episodes=3)) == []


def test_a_token_from_the_environment_stays_off_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISACT_TOKEN", "s3cret")
    config = TrainerConfig(NetworkConfig(port=0))
    assert config.network.token == "s3cret" and to_argv(config) == ["--port=0", "--buffer-steps=1024"]
    assert parse_config(TrainerConfig, to_argv(config)) == config  # the child reads it where we did
    assert "--token=other" in to_argv(
        TrainerConfig(NetworkConfig(token="other"))
    )  # one given by hand is passed on


def test_a_value_no_option_can_say_is_refused() -> None:
    with pytest.raises(ValueError, match="no command-line spelling"):
        to_argv(replace(Example(), out=None))  # type: ignore[arg-type]
