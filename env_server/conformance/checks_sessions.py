"""Checks of the server's session bookkeeping: the bound, concurrent sessions, the idle reaper."""

from __future__ import annotations

import time

import grpc

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import Context
from visact.env_server.conformance.wire import CheckFailed, CheckSkipped, CheckWarning, invalid_action

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
SESSION_IDS = 16
MIN_ID_CHARACTERS = 11  # 64 bits in base64 (hex needs 16)


def check_capacity(ctx: Context) -> str:
    """CreateSession is RESOURCE_EXHAUSTED at max_sessions; closing sessions frees slots."""
    limit = ctx.spec.max_sessions
    if limit == 0:
        raise CheckSkipped("max_sessions is 0 (no limit declared)")
    if limit > ctx.options.max_capacity:
        raise CheckSkipped(f"max_sessions={limit} is more than --max-capacity {ctx.options.max_capacity}")
    opened = _fill(ctx, limit)
    refused_at = len(opened) + 1
    for session_id in opened:
        ctx.wire.call("CloseSession", pb.CloseSessionRequest(session_id=session_id), what="freeing the slots")
    with ctx.session():
        pass
    others = f" ({limit - len(opened)} presumably held by other clients)" if len(opened) < limit else ""
    return (
        f"RESOURCE_EXHAUSTED at session {refused_at} with max_sessions={limit}{others}; "
        "after closing them a new session opened"
    )


def _fill(ctx: Context, limit: int) -> list[str]:
    """Open sessions until RESOURCE_EXHAUSTED (at most limit + 1 tries); returns the opened ids."""
    opened: list[str] = []
    request = pb.CreateSessionRequest(client_label="env-conformance capacity")
    for _ in range(limit + 1):
        response, status = ctx.wire.attempt("CreateSession", request)
        if response is not None:
            opened.append(response.session_id)
            continue
        if status.code is EXHAUSTED and status.details.strip():
            return opened
        for session_id in opened:
            ctx.close_quietly(session_id)
        expected = (
            "RESOURCE_EXHAUSTED with a message" if status.code is EXHAUSTED else "OK or RESOURCE_EXHAUSTED"
        )
        raise CheckFailed(f"CreateSession number {len(opened) + 1} got {status}; expected {expected}")
    for session_id in opened:
        ctx.close_quietly(session_id)
    raise CheckFailed(
        f"opened {limit + 1} sessions with max_sessions={limit}; expected RESOURCE_EXHAUSTED "
        f"at session {limit + 1} at the latest"
    )


def check_idle_reaper(ctx: Context) -> str:
    """Sessions idle past session_idle_timeout_seconds are closed and their slots freed; refused calls are use."""
    timeout, limit = ctx.spec.session_idle_timeout_seconds, ctx.spec.max_sessions
    if timeout <= 0:
        raise CheckSkipped("session_idle_timeout_seconds is 0 (the server never reaps idle sessions)")
    if timeout > ctx.options.max_wait:
        raise CheckSkipped(
            f"session_idle_timeout_seconds={timeout:g} is more than --max-wait {ctx.options.max_wait:g}; run the "
            "server with a short idle timeout (e.g. `env-server --idle-timeout 2`) or pass a larger --max-wait"
        )
    if limit == 1:
        raise CheckSkipped("max_sessions is 1; this check needs two sessions")
    fill = 0 < limit <= ctx.options.max_capacity
    idle, kept = ctx.create_session(), ctx.create_session()
    ctx.reset(idle, ctx.seed(900))
    ctx.reset(kept, ctx.seed(900))
    fillers = _open_up_to(ctx, limit - 2) if fill else []
    waited = timeout + max(1.0, 0.5 * timeout)
    _keep_alive_with_refused_calls(ctx, kept, seconds=waited, every=timeout / 3)
    fresh, created = ctx.wire.attempt(
        "CreateSession", pb.CreateSessionRequest(client_label="env-conformance")
    )
    if fresh is not None:
        ctx.close_quietly(fresh.session_id)
    status = ctx.wire.attempt("Reset", pb.ResetRequest(session_id=idle, seed=ctx.seed(900)))[1]
    kept_status = ctx.wire.attempt("Reset", pb.ResetRequest(session_id=kept, seed=ctx.seed(900)))[1]
    closes = [
        ctx.wire.attempt("CloseSession", pb.CloseSessionRequest(session_id=s))[1] for s in (kept, *fillers)
    ]
    if status.code is not grpc.StatusCode.NOT_FOUND:
        ctx.close_quietly(idle)
        raise CheckFailed(
            f"Reset of a session idle for {waited:g} s got {status}; expected NOT_FOUND "
            f"(session_idle_timeout_seconds={timeout:g})"
        )
    if kept_status.code is not grpc.StatusCode.OK:
        raise CheckFailed(
            f"a session that got a refused Step every {timeout / 3:g} s was reaped (Reset got {kept_status}); "
            "refused calls count as use"
        )
    alive = sum(close.code is grpc.StatusCode.OK for close in closes[1:])
    if alive:
        raise CheckFailed(f"{alive} of {len(fillers)} other sessions idle for {waited:g} s were still open")
    if fresh is None:
        raise CheckFailed(f"CreateSession after the idle sessions were reaped got {created}; expected OK")
    freed = f"; reaping freed the full server ({len(fillers) + 2} sessions)" if fill else ""
    return f"a session idle for {waited:g} s was NOT_FOUND, one kept busy by refused Steps was not{freed}"


def _keep_alive_with_refused_calls(ctx: Context, session_id: str, *, seconds: float, every: float) -> None:
    """Send a refused Step (an invalid action) to the session every ``every`` seconds for ``seconds``."""
    deadline = time.monotonic() + seconds
    request = pb.StepRequest(session_id=session_id, action=invalid_action())
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(remaining, every))
        if time.monotonic() < deadline:
            ctx.wire.attempt("Step", request)


def check_session_ids(ctx: Context) -> str:
    """Session ids are distinct and long enough to hold 64 random bits (a warning when shorter)."""
    count = min(SESSION_IDS, ctx.spec.max_sessions or SESSION_IDS)
    ids: list[str] = []
    try:
        for _ in range(count):
            ids.append(ctx.create_session())
    finally:
        for session_id in ids:
            ctx.close_quietly(session_id)
    if len(set(ids)) != len(ids):
        raise CheckFailed(f"CreateSession returned the same id twice among {count}: {sorted(ids)}")
    shortest = min(ids, key=len)
    if len(shortest) < MIN_ID_CHARACTERS:
        raise CheckWarning(
            f"session id {shortest!r} has {len(shortest)} characters; an unguessable id (>= 64 random bits, "
            f"the only guard of a session) needs at least {MIN_ID_CHARACTERS} printable characters"
        )
    return f"{count} distinct ids of {len(shortest)}-{max(len(i) for i in ids)} characters"


def _open_up_to(ctx: Context, count: int) -> list[str]:
    """Open up to ``count`` sessions, stopping early at RESOURCE_EXHAUSTED."""
    opened: list[str] = []
    for _ in range(count):
        response, status = ctx.wire.attempt(
            "CreateSession", pb.CreateSessionRequest(client_label="env-conformance")
        )
        if response is None:
            if status.code is EXHAUSTED:
                break
            raise CheckFailed(f"CreateSession got {status}; expected OK or RESOURCE_EXHAUSTED")
        opened.append(response.session_id)
    return opened
