"""The env-server process: ``env-server --env numberline --port 50051``.

Wires the generic servicer to a gRPC server with health (grpc.health.v1),
reflection (grpcurl can list and call every method), keepalive, message limits
that fit images, an optional bearer token and TLS, and a graceful drain on
SIGTERM/SIGINT (also as PID 1): health turns NOT_SERVING, new calls are
refused, running calls get ``--grace`` seconds to finish.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from env_server.core import Env
from env_server.service import SERVICE_NAME, EnvironmentServicer, ServiceLimits
from visact.auth import BearerTokenInterceptor, server_credentials
from visact.configcli import parse_config
from visact.decoding import DecodeGuardInterceptor
from visact.env.v1 import env_pb2, env_pb2_grpc
from visact.logs import setup_logging
from visact.memory import tune_allocator

log = logging.getLogger("env_server")


@dataclass
class ServerConfig:
    """Configuration of one env-server process (every field is a command-line option)."""

    env: str = field(
        default="numberline",
        metadata={"help": "built-in game to serve (see --list), or module:Class for an Env of your own"},
    )
    gym: str | None = field(
        default=None, metadata={"help": "serve this installed Gymnasium env id instead of --env"}
    )
    host: str = field(default="[::]", metadata={"help": "address to bind"})
    port: int = field(default=50051, metadata={"help": "port to bind; 0 picks a free one"})
    ready_file: Path | None = field(
        default=None, metadata={"help": "write the bound port here once serving (for scripts)"}
    )
    max_sessions: int = field(default=1024, metadata={"help": "sessions held at once (0: no limit)"})
    idle_timeout: float = field(
        default=300.0, metadata={"help": "close sessions idle this many seconds (0: never)"}
    )
    max_message_mb: float = field(default=128.0, metadata={"help": "largest message in or out, MiB"})
    max_batch_items: int = field(
        default=0, metadata={"help": "items allowed in one BatchStep (0: as many as fit --max-message-mb)"}
    )
    png_cache: int = field(
        default=1024,
        metadata={
            "help": "PNGs of frozen (read-only) frames kept to send again without re-encoding (0: off)"
        },
    )
    workers: int = field(default=16, metadata={"help": "threads serving calls"})
    grace: float = field(default=10.0, metadata={"help": "seconds running calls get on shutdown"})
    keepalive_seconds: float = field(
        default=30.0, metadata={"help": "ping idle connections this often to find dead peers"}
    )
    token: str | None = field(
        default=None,
        metadata={"help": "require 'authorization: Bearer TOKEN' on every call (also $VISACT_TOKEN)"},
    )
    tls_cert: Path | None = field(default=None, metadata={"help": "PEM certificate chain: serve TLS"})
    tls_key: Path | None = field(default=None, metadata={"help": "PEM private key for --tls-cert"})
    tls_client_ca: Path | None = field(
        default=None, metadata={"help": "PEM CA bundle: require client certificates (mutual TLS)"}
    )
    log_format: str = field(default="json", metadata={"help": "json or text", "choices": ["json", "text"]})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING, ERROR"})
    list: bool = field(
        default=False,
        metadata={"help": "print the built-in games (and how to install optional ones) and exit"},
    )

    def __post_init__(self) -> None:
        if self.token is None:
            self.token = os.environ.get("VISACT_TOKEN") or None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together; give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is on top of TLS)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be 0..65535, got {self.port}")
        if self.max_message_mb <= 0:
            raise ValueError(f"--max-message-mb must be positive, got {self.max_message_mb}")

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)


@dataclass
class RunningServer:
    """A started server: the grpc server, its bound port, and its parts."""

    server: grpc.Server
    port: int
    servicer: EnvironmentServicer
    health: health.HealthServicer
    config: ServerConfig

    def drain(self, grace: float | None = None) -> None:
        """Stop taking calls, let running ones finish within ``grace`` seconds, free sessions."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.config.grace if grace is None else grace).wait()
        self.servicer.sessions.stop_reaper()
        self.servicer.sessions.close_all()


def env_factory_for(config: ServerConfig) -> Callable[[], Env]:
    """The factory of the environment the config names."""
    if config.gym:
        from env_server.gym_adapter import gym_env_factory

        return gym_env_factory(config.gym)
    from env_server import games

    games.make(config.env)  # fail early: with the list of games, or why an import failed
    return lambda: games.make(config.env)


def start_server(config: ServerConfig, env_factory: Callable[[], Env] | None = None) -> RunningServer:
    """Build and start the server; returns once it listens (port 0 gets a free port)."""
    tune_allocator()
    factory = env_factory or env_factory_for(config)
    limits = ServiceLimits(
        max_sessions=config.max_sessions,
        idle_timeout=config.idle_timeout,
        max_message_bytes=config.max_message_bytes,
        max_batch_items=config.max_batch_items,
        png_cache_entries=config.png_cache,
    )
    servicer = EnvironmentServicer(factory, limits)
    keepalive_ms = int(config.keepalive_seconds * 1000)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]
    # The token first: a call without it is UNAUTHENTICATED whatever its bytes.
    interceptors: list[grpc.ServerInterceptor] = (
        [BearerTokenInterceptor(config.token)] if config.token else []
    )
    interceptors.append(DecodeGuardInterceptor())  # unparsable request bytes: INVALID_ARGUMENT
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="env-rpc"),
        options=options,
        interceptors=interceptors,
    )
    env_pb2_grpc.add_EnvironmentServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = (
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(service_names, server)
    assert env_pb2.DESCRIPTOR.services_by_name["Environment"].full_name == SERVICE_NAME
    address = f"{config.host}:{config.port}"
    credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}; is the port in use?")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    servicer.sessions.start_reaper()
    return RunningServer(server, port, servicer, health_servicer, config)


def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT, then drain; the process's main loop."""
    running = start_server(config)
    spec = running.servicer.spec
    log.info(
        "serving",
        extra={
            "env": spec.name,
            "port": running.port,
            "max_sessions": config.max_sessions,
            "idle_timeout": config.idle_timeout,
            "tls": config.tls_cert is not None,
            "token": bool(config.token),
        },
    )
    if config.ready_file:
        config.ready_file.write_text(f"{running.port}\n")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("draining", extra={"signal": signal.Signals(signum).name, "grace": config.grace})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    running.drain()
    log.info("stopped", extra={"sessions_reaped": running.servicer.sessions.reaped_total})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(ServerConfig, argv, prog="env-server", description=__doc__.splitlines()[0])
    setup_logging(config.log_format, config.log_level)
    if config.list:
        from env_server import games

        print("\n".join(games.names()))
        for name, install in games.missing().items():
            print(f"{name} (not installed: {install})")
        return 0
    try:
        return serve(config)
    except (ValueError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
