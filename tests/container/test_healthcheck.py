"""`python -m visact.env_server.healthcheck`, the probe of the env-server image's HEALTHCHECK: exit 0 on
SERVING, 1 otherwise, and the port found from the env-server that is PID 1 in a container."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from visact.env_server.healthcheck import DEFAULT_PORT, HealthcheckConfig, check, main, port_of_pid1


def test_serving_server_exits_zero(counter_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--address", f"127.0.0.1:{counter_server.port}"]) == 0
    assert "SERVING" in capsys.readouterr().out


def test_named_service_and_not_serving(counter_server: Any) -> None:
    address = f"127.0.0.1:{counter_server.port}"
    assert check(HealthcheckConfig(address=address, service="visact.env.v1.Environment"))[0]
    counter_server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    serving, line = check(HealthcheckConfig(address=address))
    assert not serving and line.endswith("NOT_SERVING")


def test_unreachable_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: nothing answers
        assert main(["--address", f"127.0.0.1:{port}", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err


@pytest.mark.parametrize(
    ("argv", "port"),
    [
        (["/opt/venv/bin/python3", "/opt/venv/bin/env-server", "--env", "cards", "--port", "6000"], 6000),
        (["/opt/venv/bin/python3", "/opt/venv/bin/env-server", "--port=6001"], 6001),
        (["/opt/venv/bin/python3", "/opt/venv/bin/env-server", "--env", "numberline"], DEFAULT_PORT),
        (["python", "-m", "http.server", "--port", "8000"], None),
    ],
)
def test_port_of_pid1(tmp_path: Path, argv: list[str], port: int | None) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    assert port_of_pid1(cmdline) == port


def test_address_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISACT_HEALTH_ADDRESS", "env-server.invalid:7")
    assert HealthcheckConfig().address == "env-server.invalid:7"
    monkeypatch.delenv("VISACT_HEALTH_ADDRESS")
    monkeypatch.setenv("VISACT_PORT", "50099")
    if port_of_pid1() is None:  # PID 1 here is not an env-server
        assert HealthcheckConfig().address == "127.0.0.1:50099"


def test_module_runs_and_imports_no_torch() -> None:
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['healthcheck', '--address', '127.0.0.1:1', '--timeout', '0.5']\n"
        "try:\n    runpy.run_module('visact.env_server.healthcheck', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "assert not any(m.split('.')[0] in ('torch', 'transformers') for m in sys.modules)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
