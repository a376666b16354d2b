"""Shared fixtures: every process a test starts is stopped when it ends; an in-process CounterEnv
server on port 0. And the service folders are reachable only as visact.agent, visact.trainer and
visact.env_server: from the repository root ``import agent`` would load a second copy of them."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

import pytest

from tests.envs import CounterEnv
from tests.processes import STARTED, stop_started_since


class _InstalledNamesOnly:
    """Refuses ``import agent`` / ``trainer`` / ``env_server``: the tests import what users get."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name in ("agent", "trainer", "env_server"):
            raise ImportError(f"import visact.{name}, not {name}: only the visact namespace is installed")
        return None


sys.meta_path.insert(0, _InstalledNamesOnly())


@pytest.fixture(autouse=True)
def stop_processes_left_running() -> Iterator[None]:
    """Stop (with their process groups and children) the processes this test started through
    tests/processes.py that still run when it ends, however it ended."""
    index = len(STARTED)
    yield
    stop_started_since(index)


@pytest.fixture(autouse=True, scope="session")
def stop_processes_left_by_fixtures() -> Iterator[None]:
    """The same at the end of the session, for processes of module- and session-scoped fixtures."""
    yield
    stop_started_since(0)


@pytest.fixture
def counter_server() -> Iterator[Any]:
    """An in-process env server of CounterEnv on a free port, with a short idle timeout."""
    from visact.env_server.server import ServerConfig, start_server

    config = ServerConfig(port=0, host="127.0.0.1", max_sessions=4, idle_timeout=1.0, grace=0.5)
    running = start_server(config, env_factory=CounterEnv)
    yield running
    running.drain(grace=0)
