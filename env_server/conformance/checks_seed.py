"""Checks of seeding: the same seed and actions replay the same episode; different seeds differ."""

from __future__ import annotations

import random

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import Context
from visact.env_server.conformance.observe import observation_difference, step_difference
from visact.env_server.conformance.play import Episode, episode_difference, play
from visact.env_server.conformance.wire import CheckFailed, CheckSkipped, CheckWarning

DETERMINISM_SEEDS = 3
VARIETY_SEEDS = 5
EXTREME_SEEDS = (0, -1, 2**63 - 1, -(2**63))  # ResetRequest.seed is an int64


def check_determinism(ctx: Context) -> str:
    """Two sessions reset with one seed and stepped with the same actions see the same episode."""
    if not ctx.seeded:
        raise CheckSkipped("the server does not declare the 'seeded_reset' capability")
    rng = ctx.policy(3)
    steps = 0
    with ctx.session() as first, ctx.session() as second:
        for offset in range(DETERMINISM_SEEDS):
            original = play(ctx, first, ctx.seed(300 + offset), rng=rng)
            for session_id, which in ((second, "another session"), (first, "the same session again")):
                replay = play(ctx, session_id, original.seed, actions=original.actions)
                if (diff := episode_difference(original, replay)) is not None:
                    raise CheckFailed(
                        f"the same seed and actions replayed in {which} gave a different episode: {diff}"
                    )
            steps += len(original.steps)
        picked = ctx.reset(first, None)
        again = ctx.reset(second, picked.seed)
        if (diff := observation_difference(picked.observation, again.observation)) is not None:
            raise CheckFailed(
                f"Reset without a seed reported seed {picked.seed}, but Reset with that seed gave a different "
                f"first observation: {diff}"
            )
    return (
        f"{DETERMINISM_SEEDS} seeds, {steps} steps replayed identically in a second session and in the same "
        "session; a server-picked seed replays too"
    )


def check_variety(ctx: Context) -> str:
    """Different seeds give different episodes (a warning only: an env may have one start state)."""
    if not ctx.seeded:
        raise CheckSkipped("the server does not declare the 'seeded_reset' capability")
    seeds = [ctx.seed(400 + i) for i in range(VARIETY_SEEDS)]
    episodes = []
    with ctx.session() as session_id:
        for seed in seeds:
            episodes.append(play(ctx, session_id, seed, rng=random.Random(0), cap=min(ctx.step_cap, 3)))
    firsts = {(e.reset.observation.image.data, e.reset.observation.task) for e in episodes}
    if len(firsts) > 1:
        return f"{len(firsts)} different first observations from {len(seeds)} seeds"
    if not all(_same_play(episodes[0], e) for e in episodes[1:]):
        return f"one start state, but the {len(seeds)} seeds' episodes differ in their first steps"
    raise CheckWarning(
        f"seeds {seeds} all gave the same episode (first observation and first steps); fine if the environment "
        "has a single start state and deterministic dynamics, otherwise the seed is ignored"
    )


def _same_play(a: Episode, b: Episode) -> bool:
    """Whether two episodes (of different seeds) show the same observations, actions and rewards."""
    if observation_difference(a.reset.observation, b.reset.observation) is not None or a.actions != b.actions:
        return False
    return all(step_difference(x, y) is None for x, y in zip(a.steps, b.steps, strict=True))


def check_seed_range(ctx: Context) -> str:
    """Every int64 seed, negatives included, starts an episode and is echoed; the same one replays it."""
    with ctx.session() as first, ctx.session() as second:
        for seed in EXTREME_SEEDS:
            response, status = ctx.wire.attempt("Reset", pb.ResetRequest(session_id=first, seed=seed))
            if response is None:
                raise CheckFailed(f"Reset(seed={seed}) got {status}; expected OK (any int64 is a valid seed)")
            if response.seed != seed:
                raise CheckFailed(
                    f"Reset(seed={seed}) returned seed {response.seed}; expected the given seed"
                )
            if ctx.seeded:
                again = ctx.reset(second, seed)
                if (diff := observation_difference(response.observation, again.observation)) is not None:
                    raise CheckFailed(
                        f"Reset(seed={seed}) in two sessions gave different observations: {diff}"
                    )
    return f"seeds {list(EXTREME_SEEDS)} each started an episode, echoed and reproducible"
