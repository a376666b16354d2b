"""Playing episodes with random legal actions (or a given action list), judging every step."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf import struct_pb2

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import RAW, Context
from visact.env_server.conformance.observe import check_observation, reset_difference, step_difference
from visact.env_server.conformance.wire import CheckFailed


@dataclass
class Episode:
    """One played episode: its reset, the actions taken and the step responses."""

    seed: int
    reset: pb.ResetResponse
    actions: list[str] = field(default_factory=list)
    steps: list[pb.StepResponse] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return bool(self.steps) and (self.steps[-1].terminated or self.steps[-1].truncated)

    @property
    def truncated(self) -> bool:
        return bool(self.steps) and self.steps[-1].truncated

    @property
    def last_observation(self) -> pb.Observation:
        return self.steps[-1].observation if self.steps else self.reset.observation

    def describe_end(self) -> str:
        if not self.ended:
            return f"still running after {len(self.steps)} steps"
        how = "truncated" if self.truncated else "terminated"
        return f"{how} at step {len(self.steps)}"


def play(
    ctx: Context,
    session_id: str,
    seed: int,
    *,
    rng: random.Random | None = None,
    actions: Sequence[str] | None = None,
    cap: int | None = None,
    encoding: pb.ImageEncoding = RAW,
) -> Episode:
    """Reset with ``seed`` and step until the episode ends or ``cap`` steps, judging each response.

    Actions come from ``actions`` when given (a replay; stops when they run out), else
    uniformly from the current legal actions using ``rng``.
    """
    spec, limit = ctx.spec, ctx.step_cap if cap is None else cap
    reset = ctx.reset(session_id, seed)
    where = f"Reset(seed={seed})"
    check_observation(reset.observation, spec, where, encoding=encoding)
    if reset.seed != seed:
        raise CheckFailed(f"{where}: ResetResponse.seed is {reset.seed}; expected the given seed {seed}")
    if not reset.observation.task.strip():
        raise CheckFailed(f"{where}: observation.task is empty; expected the task as text")
    episode = Episode(seed, reset)
    chooser = rng or random.Random(seed)
    for index in range(limit):
        if actions is not None:
            if index >= len(actions):
                break
            action = actions[index]
        else:
            action = chooser.choice(list(episode.last_observation.legal_actions))
        step = ctx.step(session_id, action)
        episode.actions.append(action)
        episode.steps.append(step)
        check_step(step, spec, f"seed {seed}, step {index + 1} (action {action!r})", index + 1, encoding)
        if episode.ended:
            break
    return episode


def play_until_ended(ctx: Context, session_id: str, rng: random.Random) -> Episode | None:
    """The first of ``options.episodes`` episodes that ends within the step cap, or None."""
    for attempt in range(ctx.options.episodes):
        episode = play(ctx, session_id, ctx.seed(100 + attempt), rng=rng)
        if episode.ended:
            return episode
    return None


def check_step(
    step: pb.StepResponse, spec: pb.EnvironmentSpec, where: str, number: int, encoding: pb.ImageEncoding
) -> None:
    """Judge one step response: reward, flags, episode_step, info, observation."""
    if not math.isfinite(step.reward):
        raise CheckFailed(f"{where}: reward is {step.reward}; expected a finite number")
    if step.terminated and step.truncated:
        raise CheckFailed(f"{where}: terminated and truncated are both true; at most one may be")
    if step.episode_step != number:
        raise CheckFailed(
            f"{where}: episode_step is {step.episode_step}; expected {number} (steps since reset)"
        )
    check_success(step, where)
    ended = step.terminated or step.truncated
    check_observation(step.observation, spec, where, encoding=encoding, episode_over=ended)


def check_success(step: pb.StepResponse, where: str) -> None:
    """info["success"] is a bool on the last step (false when truncated) and absent on the others."""
    success = step.info.fields.get("success")
    if not (step.terminated or step.truncated):
        if success is not None:
            raise CheckFailed(
                f"{where}: info['success'] is set on a step that does not end the episode; expected it "
                "only on the last step"
            )
        return
    if success is None:
        raise CheckFailed(
            f"{where}: the episode ended but info has no 'success'; expected a bool telling whether it was won "
            f"(info keys: {sorted(step.info.fields)})"
        )
    if success.WhichOneof("kind") != "bool_value":
        raise CheckFailed(f"{where}: info['success'] is {_kind(success)}; expected a bool")
    if step.truncated and success.bool_value:
        raise CheckFailed(
            f"{where}: info['success'] is true on a truncated step; expected false when truncated"
        )


def episode_difference(a: Episode, b: Episode) -> str | None:
    """Where two episodes played with the same seed and actions first differ, or None."""
    if (diff := reset_difference(a.reset, b.reset)) is not None:
        return f"after Reset(seed={a.seed}): {diff}"
    for number, (x, y) in enumerate(zip(a.steps, b.steps, strict=False), start=1):
        if (diff := step_difference(x, y)) is not None:
            return f"seed {a.seed}, step {number} (action {a.actions[number - 1]!r}): {diff}"
    if len(a.steps) != len(b.steps):
        return f"seed {a.seed}: one episode {a.describe_end()}, the other {b.describe_end()}"
    return None


def _kind(value: struct_pb2.Value) -> str:
    kind = value.WhichOneof("kind") or "unset"
    return kind.removesuffix("_value")
