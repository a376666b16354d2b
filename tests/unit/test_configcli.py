"""The CLI derived from a config dataclass: long options, short aliases, booleans, lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from visact.configcli import parse_config
from visact.orchestration.demos import DemosConfig


@dataclass
class Example:
    out: Path = field(default=Path("a.jsonl"), metadata={"help": "where", "short": "-o"})
    episodes: int = field(default=3, metadata={"help": "how many"})
    cot: bool = field(default=True, metadata={"help": "chain of thought"})
    server: list[str] = field(default_factory=list, metadata={"help": "repeatable"})


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


def test_visact_demos_takes_dash_o_as_the_readme_shows() -> None:
    assert parse_config(DemosConfig, ["--env", "blackjack", "-o", "d/x.jsonl"]).out == Path("d/x.jsonl")
