"""Probe a server's gRPC health (grpc.health.v1): ``python -m visact.env_server.healthcheck``.

Exits 0 when the service answers SERVING, 1 otherwise (NOT_SERVING, unreachable, timeout),
printing one line either way; for a container HEALTHCHECK or a Kubernetes exec probe.
Imports only grpc (no torch), so it runs in the slim env-server image.

The address is ``--address``, else ``$VISACT_HEALTH_ADDRESS``, else ``127.0.0.1:PORT`` where
PORT is the ``--port`` of the env-server running as PID 1 in this container (so a
HEALTHCHECK follows ``podman run IMAGE --env cards --port 6000``), else ``$VISACT_PORT``,
else 50051. The health service is exempt from the bearer token; a TLS server needs
``--tls-ca`` (and ``--tls-cert``/``--tls-key`` under mutual TLS), also from
``$VISACT_HEALTH_TLS_CA``, ``$VISACT_HEALTH_TLS_CERT`` and ``$VISACT_HEALTH_TLS_KEY``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from visact import rpc
from visact.configcli import parse_config

DEFAULT_PORT = 50051


def port_of_pid1(cmdline: Path = Path("/proc/1/cmdline")) -> int | None:
    """The ``--port`` of the env-server that is PID 1 (in a container), if it is one."""
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return None
    argv = [a.decode(errors="replace") for a in args if a]
    if not any(Path(a).name == "env-server" or a.endswith("env_server.server") for a in argv[:3]):
        return None
    for i, arg in enumerate(argv):
        value = None
        if arg == "--port" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--port="):
            value = arg.split("=", 1)[1]
        if value is not None and value.isdigit() and int(value) > 0:
            return int(value)
    return DEFAULT_PORT  # env-server's own default


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


@dataclass
class HealthcheckConfig:
    """What to probe; every field is a command-line option."""

    address: str | None = field(
        default=None, metadata={"help": "host:port to probe (see the module doc for the default)"}
    )
    service: str = field(default="", metadata={"help": "service name to ask about ('' is the whole server)"})
    timeout: float = field(default=3.0, metadata={"help": "seconds to wait for the answer"})
    tls_ca: Path | None = field(default=None, metadata={"help": "PEM CA bundle: the server serves TLS"})
    tls_cert: Path | None = field(default=None, metadata={"help": "PEM client certificate (mutual TLS)"})
    tls_key: Path | None = field(default=None, metadata={"help": "PEM client key (mutual TLS)"})
    server_name: str | None = field(
        default=None, metadata={"help": "TLS name to expect in the server's certificate"}
    )

    def __post_init__(self) -> None:
        if self.address is None:
            self.address = os.environ.get("VISACT_HEALTH_ADDRESS") or None
        if self.address is None:
            port = port_of_pid1() or int(os.environ.get("VISACT_PORT") or DEFAULT_PORT)
            self.address = f"127.0.0.1:{port}"
        self.tls_ca = self.tls_ca or _env_path("VISACT_HEALTH_TLS_CA")
        self.tls_cert = self.tls_cert or _env_path("VISACT_HEALTH_TLS_CERT")
        self.tls_key = self.tls_key or _env_path("VISACT_HEALTH_TLS_KEY")
        if self.timeout <= 0:
            raise ValueError(f"--timeout must be positive, got {self.timeout}")


def check(config: HealthcheckConfig) -> tuple[bool, str]:
    """(serving, a one-line description) of one health call."""
    assert config.address is not None
    how = rpc.Dial(
        tls_ca=config.tls_ca, tls_cert=config.tls_cert, tls_key=config.tls_key, server_name=config.server_name
    )
    channel = rpc.dial(config.address, how)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=config.service)
        response = stub.Check(request, timeout=config.timeout)
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
        return False, f"{config.address}: {code}"
    finally:
        channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, f"{config.address}: {status}"


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(
        HealthcheckConfig,
        argv,
        prog="python -m visact.env_server.healthcheck",
        description=__doc__.splitlines()[0],
    )
    serving, line = check(config)
    print(line, file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
