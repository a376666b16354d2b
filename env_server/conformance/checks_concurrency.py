"""Checks of concurrency: sessions played at once do not interfere; calls on one session are serialized."""

from __future__ import annotations

import threading

import grpc

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import Context
from visact.env_server.conformance.play import Episode, episode_difference, play
from visact.env_server.conformance.wire import CheckFailed, Status


def check_concurrency(ctx: Context) -> str:
    """Sessions played at once in threads each see what a sequential replay of the same seed sees."""
    threads = ctx.options.threads
    if ctx.spec.max_sessions:
        threads = min(threads, ctx.spec.max_sessions)
    episodes: list[Episode | None] = [None] * threads
    errors: list[str] = []
    barrier = threading.Barrier(threads, timeout=ctx.options.timeout)

    def run(index: int) -> None:
        try:
            with ctx.session() as session_id:
                barrier.wait()
                episodes[index] = play(ctx, session_id, ctx.seed(800 + index), rng=ctx.policy(800 + index))
        except threading.BrokenBarrierError:
            errors.append(f"thread {index}: another thread failed before all started")
        except Exception as exc:  # reported, with every thread's failure
            barrier.abort()
            errors.append(f"thread {index}: {exc}")

    workers = [threading.Thread(target=run, args=(i,), name=f"conformance-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise CheckFailed(
            f"{len(errors)} of {threads} concurrent sessions failed: " + "; ".join(sorted(errors)[:3])
        )
    played = [e for e in episodes if e is not None]
    if not ctx.seeded:
        return f"{threads} sessions played at once (no seeded_reset: not compared with replays)"
    with ctx.session() as session_id:
        for episode in played:
            replay = play(ctx, session_id, episode.seed, actions=episode.actions)
            if (diff := episode_difference(episode, replay)) is not None:
                raise CheckFailed(f"a session played concurrently differs from its sequential replay: {diff}")
    steps = sum(len(e.steps) for e in played)
    return f"{threads} sessions played at once ({steps} steps) match their sequential replays"


def check_one_session(ctx: Context) -> str:
    """Steps sent at once to one session are applied one at a time: episode_step 1, 2, ... each once."""
    threads = ctx.options.threads
    responses: list[pb.StepResponse] = []
    refused: list[Status] = []
    barrier = threading.Barrier(threads, timeout=ctx.options.timeout)
    with ctx.session() as session_id:
        legal = list(ctx.reset(session_id, ctx.seed(850)).observation.legal_actions)
        action = _longest_lasting(ctx, ctx.seed(850), legal, threads)
        request = pb.StepRequest(session_id=session_id, action=action)

        def run() -> None:
            barrier.wait()
            response, status = ctx.wire.attempt("Step", request)
            if response is None:
                refused.append(status)
            else:
                responses.append(response)

        workers = [threading.Thread(target=run, name=f"conformance-one-{i}") for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    numbers = sorted(r.episode_step for r in responses)
    if numbers != list(range(1, len(numbers) + 1)):
        raise CheckFailed(
            f"{threads} Steps sent at once to one session returned episode_step {numbers}; expected 1, 2, ... each "
            "once (calls on one session are applied one at a time)"
        )
    wrong = [
        s
        for s in refused
        if s.code not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    ]
    if wrong:
        raise CheckFailed(
            f"Steps sent at once to one session got {wrong[0]}; expected OK, or FAILED_PRECONDITION once the "
            "episode ended, or INVALID_ARGUMENT once the action was no longer legal"
        )
    return f"{threads} Steps at once on one session: episode_step 1..{len(numbers)}, {len(refused)} refused (episode over or action no longer legal)"


def _longest_lasting(ctx: Context, seed: int, actions: list[str], steps: int) -> str:
    """Of (up to 8 of) ``actions``, the one that, repeated from Reset(seed), keeps the episode going longest."""
    best, best_length = actions[0], -1
    with ctx.session() as probe:
        for action in actions[:8]:
            ctx.reset(probe, seed)
            length = 0
            while length < steps:
                response, _ = ctx.wire.attempt("Step", pb.StepRequest(session_id=probe, action=action))
                if response is None:
                    break
                length += 1
                if response.terminated or response.truncated:
                    break
            if length > best_length:
                best, best_length = action, length
    return best
