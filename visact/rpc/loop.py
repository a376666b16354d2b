"""The process's one grpc.aio event loop, on a daemon thread, and the way synchronous code uses it.

Every server of a process runs on it (and the fleet's clients): the processes' own code stays
synchronous (the learner, tests, the CLI's main thread) and awaits through :func:`run_async`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

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
