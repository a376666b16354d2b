"""Checks of BatchStep: one result per item, in order, errors in-band, the same as unary calls."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import Context
from visact.env_server.conformance.observe import reset_difference, step_difference
from visact.env_server.conformance.wire import (
    CheckFailed,
    CheckSkipped,
    Status,
    invalid_action,
    unknown_session_id,
)

MAX_ITEMS_TRIED = 100_000


@dataclass(frozen=True)
class Expected:
    """What one batch item should give: a response of the unary call, or an error code."""

    what: str
    response: pb.ResetResponse | pb.StepResponse | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK


def check_batch_step(ctx: Context) -> str:
    """Resets, steps and failing items mixed in one BatchStep match the same calls made one by one."""
    if "batch_step" not in ctx.spec.capabilities:
        raise CheckSkipped("the server does not declare the 'batch_step' capability")
    empty = ctx.wire.call("BatchStep", pb.BatchStepRequest(), what="with no items")
    if len(empty.results):
        raise CheckFailed(f"BatchStep with no items returned {len(empty.results)} results; expected 0")
    with ctx.session() as ref1, ctx.session() as ref2, ctx.session() as s1, ctx.session() as s2:
        items, expected = _plan(ctx, (ref1, ref2), (s1, s2))
        response = ctx.wire.call(
            "BatchStep", pb.BatchStepRequest(items=items), what=f"with {len(items)} items"
        )
        results = list(response.results)
        if len(results) != len(items):
            raise CheckFailed(
                f"BatchStep with {len(items)} items returned {len(results)} results; expected one per item"
            )
        for number, (result, want) in enumerate(zip(results, expected, strict=True), start=1):
            _compare(ctx, result, want, f"item {number} ({want.what})")
    bound = _check_item_bound(ctx, items[2].step.action)
    compared = "compared with unary calls" if ctx.seeded else "kinds and codes only (no seeded_reset)"
    return f"{len(items)} mixed items (resets, steps, item errors) in order, {compared}; {bound}"


def check_batch_step_stream(ctx: Context) -> str:
    """BatchStepStream answers each request with one response, in order, like BatchStep."""
    if "batch_step_stream" not in ctx.spec.capabilities:
        raise CheckSkipped("the server does not declare the 'batch_step_stream' capability (optional)")
    with ctx.session() as ref1, ctx.session() as ref2, ctx.session() as s1, ctx.session() as s2:
        items, expected = _plan(ctx, (ref1, ref2), (s1, s2))
        requests = [pb.BatchStepRequest(items=[item]) for item in items]  # one request per item
        try:
            responses = list(
                ctx.wire.stub.BatchStepStream(
                    iter(requests), timeout=ctx.wire.timeout, metadata=ctx.wire.metadata
                )
            )
        except grpc.RpcError as exc:
            raise CheckFailed(f"BatchStepStream failed with {exc.code().name}: {exc.details()}") from None
        if len(responses) != len(requests):
            raise CheckFailed(
                f"{len(requests)} requests on the stream got {len(responses)} responses; expected one each"
            )
        for number, (response, want) in enumerate(zip(responses, expected, strict=True), start=1):
            if len(response.results) != 1:
                raise CheckFailed(
                    f"response {number} holds {len(response.results)} results; its request had 1 item"
                )
            _compare(ctx, response.results[0], want, f"stream request {number} ({want.what})")
    return f"{len(requests)} requests on one stream answered in order, matching unary calls"


def _check_item_bound(ctx: Context, action: str) -> str:
    """max_batch_items items are served (here all NOT_FOUND items); one more fails the call."""
    limit = ctx.spec.max_batch_items
    if limit == 0:
        return "no max_batch_items declared"
    if limit > MAX_ITEMS_TRIED:
        return f"max_batch_items={limit} not tried (more than {MAX_ITEMS_TRIED})"
    item = pb.BatchItem(step=pb.StepRequest(session_id=unknown_session_id(), action=action))
    full = ctx.wire.call("BatchStep", pb.BatchStepRequest(items=[item] * limit), what=f"with {limit} items")
    if len(full.results) != limit:
        raise CheckFailed(
            f"BatchStep with max_batch_items={limit} items returned {len(full.results)} results"
        )
    ctx.wire.expect_error(
        "BatchStep",
        pb.BatchStepRequest(items=[item] * (limit + 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        what=f"with max_batch_items + 1 = {limit + 1} items",
    )
    return f"{limit} items served, {limit + 1} refused with INVALID_ARGUMENT"


def _plan(
    ctx: Context, refs: tuple[str, str], targets: tuple[str, str]
) -> tuple[list[pb.BatchItem], list[Expected]]:
    """Play two short episodes unary on ``refs``; the same calls on ``targets`` as batch items, interleaved."""
    (ref1, ref2), (s1, s2) = refs, targets
    seed1, seed2 = ctx.seed(600), ctx.seed(601)
    reset1, reset2 = ctx.reset(ref1, seed1), ctx.reset(ref2, seed2)
    a1 = reset1.observation.legal_actions[0]
    step1 = ctx.step(ref1, a1)
    b1 = reset2.observation.legal_actions[-1]
    step2 = ctx.step(ref2, b1)
    a2 = step1.observation.legal_actions[0] if step1.observation.legal_actions else a1
    second, status = ctx.wire.attempt("Step", pb.StepRequest(session_id=ref1, action=a2))
    bad = invalid_action()
    items = [
        pb.BatchItem(reset=pb.ResetRequest(session_id=s1, seed=seed1)),
        pb.BatchItem(reset=pb.ResetRequest(session_id=s2, seed=seed2)),
        pb.BatchItem(step=pb.StepRequest(session_id=s1, action=a1)),
        pb.BatchItem(step=pb.StepRequest(session_id=unknown_session_id(), action=a1)),
        pb.BatchItem(step=pb.StepRequest(session_id=s2, action=bad)),
        pb.BatchItem(step=pb.StepRequest(session_id=s2, action=b1)),
        pb.BatchItem(),
        pb.BatchItem(step=pb.StepRequest(session_id=s1, action=a2)),
    ]
    expected = [
        Expected(f"reset seed {seed1}", reset1),
        Expected(f"reset seed {seed2}", reset2),
        Expected(f"step {a1!r}", step1),
        Expected("step of an unknown session", code=grpc.StatusCode.NOT_FOUND),
        Expected(f"step {bad!r}", code=grpc.StatusCode.INVALID_ARGUMENT),
        Expected(f"step {b1!r} after the failed item", step2),
        Expected("an item with neither reset nor step", code=grpc.StatusCode.INVALID_ARGUMENT),
        _expected_second_step(a2, second, status),
    ]
    return items, expected


def _expected_second_step(action: str, response: pb.StepResponse | None, status: Status) -> Expected:
    if response is not None:
        return Expected(f"step {action!r}", response)
    if status.code is not grpc.StatusCode.FAILED_PRECONDITION:
        raise CheckFailed(
            f"a unary Step {action!r} got {status}; expected OK or FAILED_PRECONDITION (episode over)"
        )
    return Expected(f"step {action!r} after the end", code=status.code)


def _compare(ctx: Context, result: pb.BatchResult, want: Expected, where: str) -> None:
    kind = result.WhichOneof("result")
    if want.response is None:
        if kind != "error":
            raise CheckFailed(
                f"{where}: got a {kind or 'empty'} result; expected an error with {want.code.name}"
            )
        if result.error.code != want.code.value[0]:
            raise CheckFailed(
                f"{where}: error code {result.error.code}; expected {want.code.value[0]} ({want.code.name})"
            )
        if not result.error.message.strip():
            raise CheckFailed(
                f"{where}: the error has an empty message; expected what was expected and what came"
            )
        return
    expected_kind = "reset" if isinstance(want.response, pb.ResetResponse) else "step"
    if kind != expected_kind:
        got = (
            f"an error {result.error.code}: {result.error.message!r}"
            if kind == "error"
            else f"a {kind} result"
        )
        raise CheckFailed(f"{where}: got {got}; expected a {expected_kind} result")
    if not ctx.seeded:
        return
    if isinstance(want.response, pb.ResetResponse):
        diff = reset_difference(result.reset, want.response)
    else:
        diff = step_difference(result.step, want.response)
    if diff is not None:
        raise CheckFailed(f"{where}: differs from the same call made alone: {diff}")
