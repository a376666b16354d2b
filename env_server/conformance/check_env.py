"""``check_env``: the conformance suite for an ``Env`` class in process, as Gymnasium's env checker
is for a Gymnasium env: the class is served by the generic server on a free loopback port (real
gRPC, the same code ``env-server`` runs) and every check runs against it by address.

    from visact.env_server.conformance import check_env
    report = check_env(MyGame)
    assert report.ok, report.to_text()
"""

from __future__ import annotations

from collections.abc import Callable

from visact.env_server.conformance.context import Options
from visact.env_server.conformance.report import Report
from visact.env_server.conformance.runner import run_conformance
from visact.env_server.core import Env
from visact.env_server.server import ServerConfig, start_server

#: sessions the served class may hold (the capacity check fills them) and their idle timeout
#: (the reaper check waits it out): small, so that the check is quick
SESSIONS = 16
IDLE_TIMEOUT = 1.0


def check_env(env_factory: Callable[[], Env], options: Options | None = None) -> Report:
    """Run the conformance suite (``options``: which checks, how many episodes...) against
    ``env_factory`` (an ``Env`` subclass, or a function that makes one) served in this process."""
    config = ServerConfig(
        host="127.0.0.1", port=0, max_sessions=SESSIONS, idle_timeout=IDLE_TIMEOUT, log_format="text"
    )
    running = start_server(config, env_factory=env_factory)
    try:
        return run_conformance(f"127.0.0.1:{running.port}", options or Options())
    finally:
        running.drain(grace=0)
