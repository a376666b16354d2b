"""visact.rpc's Workers: quick work runs on the event loop, slow work on threads, errors come back."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from visact.rpc import Workers, run_async


def where() -> str:
    return threading.current_thread().name


def nap(seconds: float) -> str:
    time.sleep(seconds)
    return where()


def fail() -> None:
    raise KeyError("no such thing")


def test_a_kind_of_work_starts_on_a_thread_and_moves_to_the_loop_once_it_is_seen_to_be_quick() -> None:
    workers = Workers(2, "test-work", inline_seconds=0.01)

    async def twice() -> tuple[str, str, str]:
        return await workers.run(where), await workers.run(where), where()

    try:
        first, second, loop = run_async(twice())
    finally:
        workers.shutdown()
    assert first.startswith("test-work")
    assert second == loop != first


def test_slow_work_stays_on_threads_and_the_loop_keeps_answering_meanwhile() -> None:
    workers = Workers(2, "test-work", inline_seconds=0.01)

    async def scenario() -> tuple[list[str], float]:
        slow = [asyncio.ensure_future(workers.run(nap, 0.3)) for _ in range(2)]
        started = time.perf_counter()
        await asyncio.sleep(0)  # the loop is free while both naps run
        answered = time.perf_counter() - started
        threads = list(await asyncio.gather(*slow))
        threads.append(await workers.run(nap, 0.3))  # seen slow: still on a thread
        return threads, answered

    try:
        threads, answered = run_async(scenario())
    finally:
        workers.shutdown()
    assert all(name.startswith("test-work") for name in threads), threads
    assert answered < 0.1


def test_one_slow_call_moves_a_quick_kind_back_to_the_threads() -> None:
    workers = Workers(1, "test-work", inline_seconds=0.01)

    async def scenario() -> list[str]:
        seen = [await workers.run(nap, 0.0) for _ in range(3)]  # thread, then the loop
        seen.append(await workers.run(nap, 0.2))  # on the loop (it was quick), and slow
        seen.append(await workers.run(nap, 0.0))  # back on a thread
        return seen

    try:
        seen = run_async(scenario())
    finally:
        workers.shutdown()
    assert seen[0].startswith("test-work") and seen[1] == seen[2] == seen[3] == "grpc-aio-loop"
    assert seen[4].startswith("test-work")


def test_errors_come_back_from_the_threads_and_from_the_loop() -> None:
    workers = Workers(1, "test-work", inline_seconds=0.01)
    try:
        for _ in range(3):  # a thread first, then the loop
            with pytest.raises(KeyError, match="no such thing"):
                run_async(workers.run(fail))
    finally:
        workers.shutdown()


def test_off_loop_work_always_runs_on_a_thread() -> None:
    workers = Workers(1, "test-work", inline_seconds=0.01)

    async def thrice() -> list[str]:
        return [await workers.off_loop(where) for _ in range(3)]

    try:
        assert all(name.startswith("test-work") for name in run_async(thrice()))
    finally:
        workers.shutdown()
