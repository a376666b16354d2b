"""An environment of one's own, named by import path: the Coin of docs/protocol.md, taken from
the page as written, served by `env-server --env my_games.coin:Coin`, passes env-conformance and
gives expert demonstrations; every way of naming it wrongly says what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.own_env import write_my_games
from tests.processes import command, run_conformance, start_env
from visact.env_server import games
from visact.env_server.core import Env


@pytest.fixture
def games_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path/my_games`` (coin.py from the docs, extras.py), importable here and in children."""
    write_my_games(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.usefixtures("games_root")
@pytest.mark.parametrize("name", ["my_games.coin:Coin", "my_games.extras:make_coin"])
def test_a_class_or_a_factory_by_import_path_makes_the_env(name: str) -> None:
    env = games.make(name)
    assert isinstance(env, Env) and env.name == "coin"
    env.reset(seed=3)
    assert env.render().shape == (64, 64, 3)


@pytest.mark.usefixtures("games_root")
@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("no_such_module:Coin", r"cannot import 'no_such_module'.*PYTHONPATH"),
        ("my_games.coin:Nope", r"module 'my_games.coin' has no 'Nope'"),
        ("my_games.extras:NOT_AN_ENV", r"'NOT_AN_ENV' is a int, not an Env class or factory"),
        ("my_games.extras:make_a_string", r"made a str, not an env_server.core.Env"),
        (":Coin", r"expected module:Class"),
        ("no_such_game", r"expected one of: .*numberline.*, or module:Class"),
    ],
)
def test_a_wrong_name_says_what_is_wrong(name: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        games.make(name)


def test_env_server_serves_it_conformantly_and_demos_come_from_its_expert(
    games_root: Path, tmp_path: Path
) -> None:
    pythonpath = {"PYTHONPATH": str(games_root)}
    server = start_env(
        tmp_path, "coin", 0, "--idle-timeout", "2", game=("--env", "my_games.coin:Coin"), env=pythonpath
    )
    try:
        result = run_conformance(server.address)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1].endswith(f"'coin' at {server.address} is CONFORMANT")
    finally:
        assert server.stop(timeout=30) == 0
    demos = tmp_path / "coin.jsonl"
    written = subprocess.run(
        [*command("visact"), "demos", "--env", "my_games.coin:Coin", "--episodes", "6", "-o", str(demos)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, **pythonpath},
    )
    assert written.returncode == 0, written.stdout + written.stderr
    rows = [json.loads(line) for line in demos.read_text().splitlines()]
    assert len(rows) == 6 and all(row["env"] == "coin" for row in rows)
    assert {row["facts"]["coin"] for row in rows} <= {"heads", "tails"}


def test_env_server_refuses_to_start_on_a_name_it_cannot_import(tmp_path: Path) -> None:
    result = subprocess.run(
        [*command("env-server"), "--env", "no_such_module:Coin", "--port", "0", "--log-format", "text"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "cannot import 'no_such_module'" in result.stdout + result.stderr
