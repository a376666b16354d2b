"""A fleet of protocol-level clients that open and hold streams on a visact server, by address.

What many agents do to one server, without any model: hold ``BatchStepStream`` calls open
(each after one round trip), hold unauthenticated ``grpc.health.v1.Health/Watch`` streams, hold
one ``WatchVersions`` stream per registered agent and record every version announced on it.
Meanwhile :func:`timed_unary` times the unary calls another client makes. Used by the capacity
tests and ``bench/fleet.py``. Everything is ``grpc.aio``: a held stream costs the client a
coroutine, not a thread, so one process can hold thousands.

Streams are spread over several channels, each its own connection (a local subchannel pool), as
a fleet of agent processes would arrive.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from visact import rpc
from visact.env.v1 import env_pb2, env_pb2_grpc
from visact.rpc.auth import token_metadata
from visact.trainer.v1 import trainer_pb2, trainer_pb2_grpc

#: streams per connection (well under HTTP/2's usual 100-per-connection client limits)
STREAMS_PER_CHANNEL = 64


class Channels:
    """``grpc.aio`` channels to one address, each a connection of its own, handed out in turn."""

    def __init__(self, address: str, per_channel: int = STREAMS_PER_CHANNEL) -> None:
        self.address = address
        self.per_channel = per_channel
        self._channels: list[grpc.aio.Channel] = []  # shared by streams, per_channel each
        self._own: list[grpc.aio.Channel] = []
        self._used = 0

    def next(self) -> grpc.aio.Channel:
        """A channel with room for one more stream."""
        if self._used % self.per_channel == 0:
            self._channels.append(rpc.dial_async(self.address, own_connection=True))
        self._used += 1
        return self._channels[-1]

    def fresh(self) -> grpc.aio.Channel:
        """A channel of its own, for unary calls that must not queue behind held streams."""
        channel = rpc.dial_async(self.address, own_connection=True)
        self._own.append(channel)
        return channel

    async def close(self) -> None:
        await asyncio.gather(*(channel.close(grace=None) for channel in self._channels + self._own))
        self._channels.clear()
        self._own.clear()


async def _gather_in_waves(factories: Sequence[Callable[[], Awaitable[Any]]], wave: int = 200) -> list[Any]:
    """Await ``factories`` ``wave`` at a time (thousands at once would all time out together)."""
    results: list[Any] = []
    for start in range(0, len(factories), wave):
        results += await asyncio.gather(*(make() for make in factories[start : start + wave]))
    return results


async def hold_batch_streams(
    channels: Channels, count: int, *, token: str | None = None, timeout: float = 30.0
) -> list[Any]:
    """``count`` BatchStepStream calls, each after one round trip (an empty batch), left open."""
    metadata = token_metadata(token)

    async def one() -> Any:
        call = env_pb2_grpc.EnvironmentStub(channels.next()).BatchStepStream(metadata=metadata)
        await asyncio.wait_for(call.write(env_pb2.BatchStepRequest()), timeout)
        response = await asyncio.wait_for(call.read(), timeout)
        if response is grpc.aio.EOF:
            raise AssertionError("the server ended a BatchStepStream after one round trip")
        return call

    return await _gather_in_waves([one] * count)


async def hold_health_watches(channels: Channels, count: int, *, timeout: float = 30.0) -> list[Any]:
    """``count`` Health/Watch streams with no token, each after its first status, left open."""

    async def one() -> Any:
        call = health_pb2_grpc.HealthStub(channels.next()).Watch(health_pb2.HealthCheckRequest(service=""))
        first = await asyncio.wait_for(call.read(), timeout)
        if first is grpc.aio.EOF or first.status != health_pb2.HealthCheckResponse.SERVING:
            raise AssertionError(f"a health watch's first answer was {first!r}")
        return call

    return await _gather_in_waves([one] * count)


def cancel_all(calls: Sequence[Any]) -> None:
    """Cancel held calls; on the loop that made them (else :func:`close_calls` through it)."""
    for call in calls:
        call.cancel()


@dataclass
class WatchingAgent:
    """A registered agent holding WatchVersions, recording every version announced to it."""

    agent_id: str
    call: Any
    versions: list[int] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def follow(self) -> None:
        while (announcement := await self.call.read()) is not grpc.aio.EOF:
            self.versions.append(announcement.version)


async def register_watching_agents(
    channels: Channels,
    count: int,
    *,
    fingerprint: str,
    token: str | None = None,
    name: str = "fleet",
    timeout: float = 60.0,
) -> list[WatchingAgent]:
    """``count`` agents, each registered and holding WatchVersions (its first announcement in)."""
    metadata = token_metadata(token)

    async def one(index: int) -> WatchingAgent:
        stub = trainer_pb2_grpc.TrainerStub(channels.next())
        response = await stub.Register(
            trainer_pb2.RegisterRequest(
                agent_name=f"{name}-{index}", model_name="fleet", base_fingerprint=fingerprint, sessions=1
            ),
            timeout=timeout,
            metadata=metadata,
        )
        call = stub.WatchVersions(
            trainer_pb2.WatchVersionsRequest(agent_id=response.agent_id), metadata=metadata
        )
        first = await asyncio.wait_for(call.read(), timeout)
        if first is grpc.aio.EOF:
            raise AssertionError("WatchVersions ended before its first announcement")
        agent = WatchingAgent(response.agent_id, call, [first.version])
        agent.task = asyncio.create_task(agent.follow())
        return agent

    return list(await _gather_in_waves([functools.partial(one, i) for i in range(count)]))


async def timed_unary(call: Callable[[], Awaitable[Any]], repeats: int) -> list[float]:
    """Seconds each of ``repeats`` sequential calls took (a call that fails raises)."""
    latencies = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return latencies


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def close_calls(calls: Sequence[Any]) -> None:
    """Cancel held calls (on the loop: grpc.aio calls belong to the loop that made them)."""
    cancel_all(calls)


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
