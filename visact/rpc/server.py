"""A grpc.aio server of visact: services with their checks, health and reflection, bounded streams.

A call is a coroutine on the process's event loop (``visact.rpc.loop``), so an open stream costs
memory, not a thread, and a thousand agents holding ``WatchVersions`` or ``BatchStepStream``
leave every unary call served. CPU work runs off the loop on the server's ``Workers``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection_pb2

from visact.rpc.auth import server_credentials
from visact.rpc.handlers import abort, handler
from visact.rpc.loop import run_async
from visact.rpc.workers import Workers

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION_SERVICE = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
#: Health/Watch streams a server holds at once by default (each costs a few KiB, no thread)
DEFAULT_MAX_WATCHERS = 4096


@dataclass(frozen=True)
class Listen:
    """Where and how a server listens: what every visact server's config has in common."""

    host: str
    port: int
    max_message_bytes: int
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    keepalive_seconds: float = 30.0
    max_health_watchers: int = DEFAULT_MAX_WATCHERS


@dataclass(frozen=True)
class Service:
    """One gRPC service: its descriptor and an object with an ``async`` method per RPC (a streaming
    response is an async generator)."""

    descriptor: ServiceDescriptor
    servicer: Any
    needs_token: bool = True


def server_options(max_message_bytes: int, keepalive_seconds: float) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


class StreamSlots:
    """At most ``limit`` streams of one kind at once (0: no limit); the next is RESOURCE_EXHAUSTED.

    Only touched on the event loop, so a plain counter is enough."""

    def __init__(self, limit: int, what: str, flag: str) -> None:
        self.limit = limit
        self.what = what
        self.flag = flag
        self.open = 0

    @contextlib.asynccontextmanager
    async def slot(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if self.limit and self.open >= self.limit:
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server holds its maximum of {self.limit} open {self.what}; close streams you no longer "
                f"read, or start the server with a larger {self.flag}",
            )
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


class HealthServicer(health_aio.HealthServicer):
    """grpc.health.v1 with its Watch streams counted and bounded (health needs no token)."""

    def __init__(self, max_watchers: int) -> None:
        super().__init__()
        self.watchers = StreamSlots(max_watchers, "Health/Watch streams", "--max-health-watchers")

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        async with self.watchers.slot(context):
            await super().Watch(request, context)


class Health:
    """The server's health, settable from any thread."""

    def __init__(self, servicer: HealthServicer) -> None:
        self.servicer = servicer

    def set(self, service: str, status: int) -> None:
        run_async(self.servicer.set(service, status))

    def enter_graceful_shutdown(self) -> None:
        run_async(self.servicer.enter_graceful_shutdown())


class Server:
    """A started grpc.aio server on the process's event loop, driven from synchronous code."""

    def __init__(
        self,
        listen: Listen,
        services: Sequence[Service],
        workers: Workers | None = None,
        *,
        standard_services: bool = True,
    ) -> None:
        """``standard_services``: add grpc.health.v1 (exempt from the token) and reflection; off,
        the server has ``services`` alone (as a minimal third-party server might)."""
        self.listen = listen
        self.workers = workers
        self._health_servicer = HealthServicer(listen.max_health_watchers)
        self.health = Health(self._health_servicer)
        self.services = list(services)
        if standard_services:
            self.services.append(Service(HEALTH_SERVICE, self._health_servicer, needs_token=False))
            names = [s.descriptor.full_name for s in self.services] + [REFLECTION_SERVICE.full_name]
            self.services.append(Service(REFLECTION_SERVICE, reflection_aio.ReflectionServicer(names)))
        self._server: grpc.aio.Server | None = None
        self.port = run_async(self._start())
        for service in ("", *(s.descriptor.full_name for s in services)):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def _start(self) -> int:
        listen = self.listen
        server = grpc.aio.server(options=server_options(listen.max_message_bytes, listen.keepalive_seconds))
        for service in self.services:
            handlers = {
                method.name: handler(
                    method,
                    getattr(service.servicer, method.name),
                    listen.token if service.needs_token else None,
                )
                for method in service.descriptor.methods
            }
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service.descriptor.full_name, handlers),)
            )
        address = f"{listen.host}:{listen.port}"
        credentials = server_credentials(listen.tls_cert, listen.tls_key, listen.tls_client_ca)
        port = (
            server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        )
        if port == 0:
            raise OSError(f"could not bind {address}; is the port in use?")
        await server.start()
        self._server = server
        return int(port)

    def stop(self, grace: float | None) -> None:
        """NOT_SERVING, refuse new calls, give running ones ``grace`` seconds, then cancel the rest."""
        self.health.enter_graceful_shutdown()
        if self._server is not None:
            run_async(self._server.stop(grace))
        if self.workers is not None:
            self.workers.shutdown()
