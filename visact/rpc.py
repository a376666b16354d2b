"""Every visact gRPC server and channel is built here: options, access, health, reflection.

Servers are ``grpc.aio``: a call is a coroutine on one event loop, so an open stream costs
memory, not a thread, and a thousand agents holding ``WatchVersions`` or ``BatchStepStream``
leave every unary call served. CPU work (a game step, PNG encoding, decoding an episode) runs off
the loop on the server's :class:`Workers`, whose number bounds the CPU work done at once, never
the calls held open.

The loop is one per process, on a daemon thread (:func:`event_loop`): the processes' own code
stays synchronous (the learner, tests, the CLI's main thread) and talks to it through
:func:`run_async`. Every server of the process shares it.

Each service is registered through :func:`_handler`, which gives every method the same checks,
in this order: the bearer token (health is exempt, so that load balancers and probes, which
send no metadata, can check liveness), then request bytes that do not parse (INVALID_ARGUMENT
naming the expected message, not grpc's INTERNAL "Exception deserializing request!").

Channels (:func:`dial`) carry the same message limits and keepalive as the servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection_pb2

from visact.auth import channel_credentials, server_credentials
from visact.status import bounded

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the codes after which a call may be tried again (the server was away or slow, not wrong)
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION_SERVICE = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
#: Health/Watch streams a server holds at once by default (each costs a few KiB, no thread)
DEFAULT_MAX_WATCHERS = 4096


# ---------------------------------------------------------------------------------------------
# the process's event loop
# ---------------------------------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's grpc.aio event loop, running on a daemon thread (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="grpc-aio-loop", daemon=True).start()
            _loop = loop
        return _loop


def run_async(awaitable: Awaitable[T], timeout: float | None = None) -> T:
    """Await ``awaitable`` (a coroutine, or a grpc.aio call made on the loop) on the process's event
    loop and wait for its result, from any other thread."""
    return asyncio.run_coroutine_threadsafe(_awaited(awaitable), event_loop()).result(timeout)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


# ---------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------


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


class Workers:
    """Threads that do a server's CPU work off the event loop; their number bounds the work done
    at once, never the calls or streams held open.

    Handing work to a thread and back costs the loop more than short work itself (measured on a
    NumberLine step with a 270 KB frame: the server spent ~2x the CPU per call with every step
    handed over). So each kind of work (the function) is timed, and a kind whose recent calls
    took under ``inline_seconds`` on average runs on the loop; a kind that takes longer (a slow
    game, PNG encoding of a batch, decoding an episode) runs on the threads. A kind starts on the
    threads; one slow call moves it there again.
    """

    #: weight of the newest call in a kind's running mean of seconds
    SMOOTHING = 0.2

    def __init__(self, count: int, name: str = "rpc-work", inline_seconds: float = 0.002) -> None:
        self.executor = futures.ThreadPoolExecutor(max_workers=count, thread_name_prefix=name)
        self.inline_seconds = inline_seconds
        self._seconds: dict[Any, float] = {}  # kind of work -> running mean of its seconds

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``, on the loop when its kind is quick, else on a worker thread."""
        kind = getattr(function, "__func__", function)  # a bound method: its function
        if self._seconds.get(kind, math.inf) < self.inline_seconds:
            started = time.perf_counter()
            try:
                return function(*args)
            finally:
                self._record(kind, time.perf_counter() - started)
        result, seconds = await asyncio.get_running_loop().run_in_executor(
            self.executor, _timed, function, args
        )
        self._record(kind, seconds)
        if isinstance(result, _Raised):
            raise result.error
        return result

    async def off_loop(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on a worker thread, however quick it was before: for work whose cost
        follows its input (decoding what a client sent), which one call's time does not predict."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def _record(self, kind: Any, seconds: float) -> None:
        mean = self._seconds.get(kind)
        self._seconds[kind] = seconds if mean is None else mean + self.SMOOTHING * (seconds - mean)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


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
                method.name: _handler(
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


class _Raised:
    """An exception raised on a worker thread, carried back with the call's time."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _timed(function: Callable[..., T], args: tuple[Any, ...]) -> tuple[T | _Raised, float]:
    started = time.perf_counter()
    try:
        result: T | _Raised = function(*args)
    except Exception as exc:
        result = _Raised(exc)
    return result, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# handlers: token, then request bytes, then the servicer
# ---------------------------------------------------------------------------------------------


class _Undecodable:
    """Stands for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """``context.abort`` with a bounded message (visact.status says why)."""
    await context.abort(code, bounded(message))
    raise AssertionError("unreachable: context.abort raises")


def _token_check(token: str | None) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]] | None:
    if token is None:
        return None
    if not token:
        raise ValueError("an empty token would accept anyone; pass a non-empty token")
    expected = f"Bearer {token}".encode()

    async def check(context: grpc.aio.ServicerContext) -> None:
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else given
        if not hmac.compare_digest(given_bytes, expected):
            reason = "no 'authorization' metadata" if not given else "a wrong token"
            await abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                f"this server requires a bearer token and the call carried {reason}; "
                "pass the server's token (e.g. --token or $VISACT_TOKEN)",
            )

    return check


def _handler(
    method: MethodDescriptor, behavior: Callable[..., Any], token: str | None
) -> grpc.RpcMethodHandler:
    """``behavior`` (a coroutine function, or an async generator function for a streaming response)
    behind the token check and a deserializer that never raises."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    check_token = _token_check(token)
    full_name = f"/{method.containing_service.full_name}/{method.name}"

    def deserialize(data: bytes) -> Any:
        try:
            return request_class.FromString(data)
        except Exception as exc:  # protobuf raises DecodeError, and others on odd input
            return _Undecodable(f"{type(exc).__name__}: {exc}")

    async def refuse(request: _Undecodable, context: grpc.aio.ServicerContext) -> NoReturn:
        await abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request bytes of {full_name} do not parse as {method.input_type.full_name} ({request.error}); "
            "send a serialized message of that type, built with stubs generated from the .proto",
        )

    async def admitted(request: Any, context: grpc.aio.ServicerContext) -> None:
        if check_token is not None:
            await check_token(context)
        if isinstance(request, _Undecodable):
            await refuse(request, context)

    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Undecodable):
                await refuse(request, context)
            yield request

    kwargs = {"request_deserializer": deserialize, "response_serializer": response_class.SerializeToString}
    if not method.client_streaming and not method.server_streaming:

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admitted(request, context)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
    if not method.client_streaming:
        if not inspect.isasyncgenfunction(behavior):  # it writes with context.write (grpc's health)

            async def unary_write(request: Any, context: grpc.aio.ServicerContext) -> None:
                await admitted(request, context)
                await behavior(request, context)

            return grpc.unary_stream_rpc_method_handler(unary_write, **kwargs)

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await admitted(request, context)
            async for response in behavior(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
    if not method.server_streaming:

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            await admitted(None, context)
            return await behavior(checked(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)

    async def stream_stream(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        await admitted(None, context)
        async for response in behavior(checked(requests, context), context):
            yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)


# ---------------------------------------------------------------------------------------------
# channels
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dial:
    """How a client reaches a server: TLS material and limits (every field optional)."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    server_name: str | None = None
    max_message_bytes: int = 256 * 1024 * 1024
    keepalive_seconds: float = 30.0
    options: tuple[tuple[str, Any], ...] = field(default=())


def dial(address: str, how: Dial | None = None) -> grpc.Channel:
    """A channel to ``address`` with message limits that fit images, keepalive and reconnect backoff;
    TLS when a CA or a client certificate is given."""
    how = how or Dial()
    options = _channel_options(how)
    if how.tls_ca is not None or how.tls_cert is not None:
        credentials = channel_credentials(how.tls_ca, how.tls_cert, how.tls_key)
        return grpc.secure_channel(address, credentials, options=options)
    return grpc.insecure_channel(address, options=options)


def dial_async(address: str, how: Dial | None = None, *, own_connection: bool = False) -> grpc.aio.Channel:
    """:func:`dial` for grpc.aio (call it on the loop); ``own_connection``: not shared with other
    channels to the same address (as separate processes would connect)."""
    how = how or Dial()
    options = _channel_options(how)
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if how.tls_ca is not None or how.tls_cert is not None:
        credentials = channel_credentials(how.tls_ca, how.tls_cert, how.tls_key)
        return grpc.aio.secure_channel(address, credentials, options=options)
    return grpc.aio.insecure_channel(address, options=options)


def _channel_options(how: Dial) -> list[tuple[str, Any]]:
    options = [
        ("grpc.max_receive_message_length", how.max_message_bytes),
        ("grpc.max_send_message_length", how.max_message_bytes),
        ("grpc.keepalive_time_ms", int(how.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5000),
        *how.options,
    ]
    if how.server_name:
        options.append(("grpc.ssl_target_name_override", how.server_name))
    return options
