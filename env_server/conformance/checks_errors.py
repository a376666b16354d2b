"""Checks of bad requests: the right status code, a message, and the session left as it was."""

from __future__ import annotations

import secrets
from typing import cast

import grpc

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import PNG, Context
from visact.env_server.conformance.observe import step_difference
from visact.env_server.conformance.play import play_until_ended
from visact.env_server.conformance.wire import CheckFailed, invalid_action, unknown_session_id

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def check_step_before_reset(ctx: Context) -> str:
    """Step on a session that was never reset is FAILED_PRECONDITION."""
    action = ctx.a_legal_action()
    with ctx.session() as session_id:
        status = ctx.wire.expect_error(
            "Step",
            pb.StepRequest(session_id=session_id, action=action),
            grpc.StatusCode.FAILED_PRECONDITION,
            what="before the first Reset",
        )
    return f"Step before Reset: {status}"


def check_invalid_action(ctx: Context) -> str:
    """Actions outside the legal ones are INVALID_ARGUMENT and leave the session as it was."""
    seed = ctx.seed(500)
    with ctx.session() as session_id, ctx.session() as control_id:
        legal = list(ctx.reset(session_id, seed).observation.legal_actions)
        ctx.reset(control_id, seed)
        action = legal[0]
        bad_actions = [a for a in (invalid_action(), "", f" {action} ", action.swapcase()) if a not in legal]
        for bad in bad_actions:
            ctx.wire.expect_error(
                "Step",
                pb.StepRequest(session_id=session_id, action=bad),
                INVALID,
                what=f"with action {bad!r}",
            )
        _expect_unchanged(ctx, session_id, control_id, action, f"{len(bad_actions)} invalid actions")
    shown = ", ".join(repr(a) for a in bad_actions)
    return f"invalid actions {shown} got INVALID_ARGUMENT; the session went on as if they were never sent"


def check_invalid_reset_option(ctx: Context) -> str:
    """A Reset with an unknown option key is INVALID_ARGUMENT and does not reset the session."""
    seed = ctx.seed(510)
    with ctx.session() as session_id, ctx.session() as control_id:
        first = ctx.reset(session_id, seed)
        ctx.reset(control_id, seed)
        bad = pb.ResetRequest(session_id=session_id, seed=seed + 1)
        key = f"conformance_unknown_option_{secrets.token_hex(4)}"
        bad.options.update({key: 1})
        ctx.wire.expect_error("Reset", bad, INVALID, what=f"with unknown option {key!r}")
        _expect_unchanged(
            ctx, session_id, control_id, first.observation.legal_actions[0], "the refused Reset"
        )
        again = ctx.reset(session_id, seed)
        if again.episode != first.episode + 1:
            raise CheckFailed(
                f"after a refused Reset, the next Reset returned episode {again.episode}; expected "
                f"{first.episode + 1} (a refused Reset starts no episode)"
            )
    return f"unknown reset option {key!r} got INVALID_ARGUMENT; the episode went on"


def _expect_unchanged(ctx: Context, session_id: str, control_id: str, action: str, after: str) -> None:
    """Step both sessions with ``action``: the first step of the episode, and (when seeded) the same result."""
    step = ctx.step(session_id, action)
    if step.episode_step != 1:
        raise CheckFailed(
            f"after {after}, the first valid Step returned episode_step {step.episode_step}; expected 1 "
            "(a refused request must leave the session exactly as it was)"
        )
    control = ctx.step(control_id, action)
    if ctx.seeded and (diff := step_difference(step, control)) is not None:
        raise CheckFailed(
            f"after {after}, the session differs from an untouched one with the same seed: {diff}; "
            "a refused request must leave the session exactly as it was"
        )


def check_unknown_session(ctx: Context) -> str:
    """Reset, Step and CloseSession of an unknown or closed session id are NOT_FOUND."""
    action = ctx.a_legal_action()
    closed = ctx.create_session()
    ctx.wire.call("CloseSession", pb.CloseSessionRequest(session_id=closed))
    for session_id, kind in ((unknown_session_id(), "an unknown"), (closed, "a closed")):
        what = f"of {kind} session {session_id!r}"
        ctx.wire.expect_error("Reset", pb.ResetRequest(session_id=session_id, seed=1), NOT_FOUND, what=what)
        ctx.wire.expect_error(
            "Step", pb.StepRequest(session_id=session_id, action=action), NOT_FOUND, what=what
        )
        ctx.wire.expect_error(
            "CloseSession", pb.CloseSessionRequest(session_id=session_id), NOT_FOUND, what=what
        )
    return "Reset, Step and CloseSession of unknown and closed sessions got NOT_FOUND"


def check_error_precedence(ctx: Context) -> str:
    """When several errors apply, NOT_FOUND beats FAILED_PRECONDITION beats INVALID_ARGUMENT; "" is NOT_FOUND."""
    bad, unknown = invalid_action(), unknown_session_id()
    bad_options = pb.ResetRequest(seed=1)
    bad_options.options.update({f"conformance_unknown_option_{secrets.token_hex(4)}": 1})
    for session_id, kind in (("", "an empty session_id"), (unknown, "an unknown session")):
        bad_options.session_id = session_id
        ctx.wire.expect_error(
            "Step",
            pb.StepRequest(session_id=session_id, action=bad),
            NOT_FOUND,
            what=f"of {kind}, invalid action",
        )
        ctx.wire.expect_error("Reset", bad_options, NOT_FOUND, what=f"of {kind}, unknown option")
        ctx.wire.expect_error(
            "CloseSession", pb.CloseSessionRequest(session_id=session_id), NOT_FOUND, what=f"of {kind}"
        )
    with ctx.session() as session_id:
        step = pb.StepRequest(session_id=session_id, action=bad)
        ctx.wire.expect_error(
            "Step", step, PRECONDITION, what="before the first Reset, with an invalid action"
        )
        episode = play_until_ended(ctx, session_id, ctx.policy(4))
        if episode is not None:
            ctx.wire.expect_error("Step", step, PRECONDITION, what="after the end, with an invalid action")
    after_end = (
        " and after the end" if episode is not None else " (no episode ended: after-end case not tried)"
    )
    return (
        "NOT_FOUND for empty and unknown sessions with bad actions and options; FAILED_PRECONDITION for an "
        f"invalid action before the first Reset{after_end}"
    )


def check_create_session_errors(ctx: Context) -> str:
    """CreateSession with an encoding or expert the server does not offer is INVALID_ARGUMENT."""
    refused = ["an unknown encoding (99)"]
    ctx.wire.expect_error(
        "CreateSession",
        pb.CreateSessionRequest(image_encoding=cast(pb.ImageEncoding, 99)),
        INVALID,
        what="with image_encoding 99",
    )
    if not ctx.offers_png:
        ctx.wire.expect_error(
            "CreateSession",
            pb.CreateSessionRequest(image_encoding=PNG),
            INVALID,
            what="with PNG (not offered)",
        )
        refused.append("PNG (not offered)")
    if "expert" not in ctx.spec.capabilities:
        ctx.wire.expect_error(
            "CreateSession",
            pb.CreateSessionRequest(want_expert=True),
            INVALID,
            what="with want_expert (no expert)",
        )
        refused.append("want_expert (no 'expert' capability)")
    return f"INVALID_ARGUMENT for {', '.join(refused)}"
