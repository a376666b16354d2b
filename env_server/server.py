"""The env-server process: ``env-server --env numberline --port 50051``.

Wires the generic servicer to a grpc.aio server (``visact.rpc``) with health (grpc.health.v1),
reflection (grpcurl can list and call every method), keepalive, message limits
that fit images, an optional bearer token and TLS, and a graceful drain on
SIGTERM/SIGINT (also as PID 1): health turns NOT_SERVING, new calls are
refused, running calls get ``--grace`` seconds to finish. Open streams cost
memory, not threads: ``--workers`` threads step the environments.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from visact import rpc
from visact.configcli import parse_config
from visact.env_server.core import Env
from visact.env_server.service import SERVICE, EnvironmentServicer, ServiceLimits
from visact.logs import LogFormat, setup_logging
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
    workers: int = field(
        default=16,
        metadata={
            "help": "threads stepping environments and encoding images (not a bound on calls or streams)"
        },
    )
    max_streams: int = field(
        default=4096, metadata={"help": "BatchStepStream calls held open at once (0: no limit)"}
    )
    max_health_watchers: int = field(
        default=rpc.DEFAULT_MAX_WATCHERS, metadata={"help": "grpc.health.v1 Watch streams held open at once"}
    )
    grace: float = field(default=10.0, metadata={"help": "seconds running calls get on shutdown"})
    keepalive_seconds: float = field(
        default=30.0, metadata={"help": "ping idle connections this often to find dead peers"}
    )
    token: str | None = field(
        default=None,
        metadata={
            "help": "require 'authorization: Bearer TOKEN' on every call (also $VISACT_TOKEN)",
            "env": "VISACT_TOKEN",
        },
    )
    tls_cert: Path | None = field(default=None, metadata={"help": "PEM certificate chain: serve TLS"})
    tls_key: Path | None = field(default=None, metadata={"help": "PEM private key for --tls-cert"})
    tls_client_ca: Path | None = field(
        default=None, metadata={"help": "PEM CA bundle: require client certificates (mutual TLS)"}
    )
    log_format: LogFormat = field(default="json", metadata={"help": "json or text"})
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

    server: rpc.Server
    port: int
    servicer: EnvironmentServicer
    health: rpc.Health
    config: ServerConfig

    def drain(self, grace: float | None = None) -> None:
        """Stop taking calls, let running ones finish within ``grace`` seconds, free sessions."""
        self.server.stop(self.config.grace if grace is None else grace)
        self.servicer.sessions.stop_reaper()
        self.servicer.sessions.close_all()


def env_factory_for(config: ServerConfig) -> Callable[[], Env]:
    """The factory of the environment the config names."""
    if config.gym:
        from visact.env_server.gym_adapter import gym_env_factory

        return gym_env_factory(config.gym)
    from visact.env_server import games

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
        max_streams=config.max_streams,
    )
    workers = rpc.Workers(config.workers, "env-work")
    servicer = EnvironmentServicer(factory, limits, workers)
    listen = rpc.Listen(
        host=config.host,
        port=config.port,
        max_message_bytes=config.max_message_bytes,
        token=config.token,
        tls_cert=config.tls_cert,
        tls_key=config.tls_key,
        tls_client_ca=config.tls_client_ca,
        keepalive_seconds=config.keepalive_seconds,
        max_health_watchers=config.max_health_watchers,
    )
    server = rpc.Server(listen, [rpc.Service(SERVICE, servicer)], workers)
    servicer.sessions.start_reaper()
    return RunningServer(server, server.port, servicer, server.health, config)


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
        from visact.env_server import games

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
