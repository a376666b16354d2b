"""Threads that do a server's CPU work off the event loop."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

T = TypeVar("T")


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
