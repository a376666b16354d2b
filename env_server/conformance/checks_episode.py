"""Checks of Reset and Step: observations, whole episodes, the end of an episode, the step limit."""

from __future__ import annotations

from collections import Counter

import grpc
import numpy as np

from visact.env.v1 import env_pb2 as pb
from visact.env_server.conformance.context import PNG, Context
from visact.env_server.conformance.observe import check_observation, image_pixels
from visact.env_server.conformance.play import play, play_until_ended
from visact.env_server.conformance.wire import CheckFailed, CheckSkipped


def check_reset_observation(ctx: Context) -> str:
    """The first observation: image of the declared shape, task text, legal actions in the vocabulary."""
    spec = ctx.spec
    with ctx.session() as session_id:
        first = play(ctx, session_id, ctx.seed(), cap=0)
        if first.reset.episode != 1:
            raise CheckFailed(f"the first Reset returned episode {first.reset.episode}; expected 1")
        unseeded = ctx.reset(session_id, None)
        check_observation(unseeded.observation, spec, "Reset without a seed")
        if not 0 <= unseeded.seed < 2**31 - 1:
            raise CheckFailed(
                f"Reset without a seed reported seed {unseeded.seed}; expected one the server picked in [0, 2^31 - 1)"
            )
        if unseeded.episode != 2:
            raise CheckFailed(
                f"the second Reset of a session returned episode {unseeded.episode}; expected 2"
            )
    legal = list(first.reset.observation.legal_actions)
    return (
        f"RAW_RGB image of {len(first.reset.observation.image.data)} bytes, task of "
        f"{len(first.reset.observation.task)} characters, legal actions {_shorten(legal)}; "
        f"episode counts 1, 2; without a seed the server picked {unseeded.seed}"
    )


def check_png(ctx: Context) -> str:
    """A PNG session's images decode to the same pixels as a RAW session's under the same seed."""
    if not ctx.offers_png:
        raise CheckSkipped("the server does not offer IMAGE_ENCODING_PNG")
    spec, seed = ctx.spec, ctx.seed(1)
    with ctx.session() as raw_id, ctx.session(PNG) as png_id:
        raw = ctx.reset(raw_id, seed).observation
        png = ctx.reset(png_id, seed).observation
        compared = 0
        for step in range(4):
            where = f"seed {seed}, {'after Reset' if step == 0 else f'step {step}'}"
            png_pixels = check_observation(png, spec, f"PNG session, {where}", encoding=PNG)
            raw_pixels = image_pixels(raw.image, spec, pb.IMAGE_ENCODING_RAW_RGB, f"RAW session, {where}")
            if not ctx.seeded:
                return "PNG images decode to the declared shape (no seeded_reset: pixels not compared to RAW)"
            if not np.array_equal(png_pixels, raw_pixels):
                differing = int(np.count_nonzero(np.any(png_pixels != raw_pixels, axis=-1)))
                raise CheckFailed(
                    f"{where}: the PNG image decodes to pixels that differ from the RAW_RGB image in "
                    f"{differing} of {raw_pixels.shape[0] * raw_pixels.shape[1]} pixels; expected the same picture"
                )
            compared += 1
            if not raw.legal_actions:
                break
            action = raw.legal_actions[0]
            raw_step, png_step = ctx.step(raw_id, action), ctx.step(png_id, action)
            raw, png = raw_step.observation, png_step.observation
            if raw_step.terminated or raw_step.truncated:
                break
    return f"PNG images decode to the same pixels as RAW_RGB under seed {seed} ({compared} observations)"


def check_play(ctx: Context) -> str:
    """Episodes of random legal actions: finite rewards, one end flag at most, episode_step counts, info."""
    endings: Counter[str] = Counter()
    steps = 0
    rng = ctx.policy()
    with ctx.session() as session_id:
        for number in range(1, ctx.options.episodes + 1):
            episode = play(ctx, session_id, ctx.seed(number), rng=rng)
            if episode.reset.episode != number:
                raise CheckFailed(
                    f"Reset number {number} of one session returned episode {episode.reset.episode}; "
                    f"expected {number} (episodes count from 1)"
                )
            steps += len(episode.steps)
            endings["truncated" if episode.truncated else "terminated" if episode.ended else "running"] += 1
    running = endings["running"]
    cap_note = f", {running} still running at the {ctx.step_cap}-step cap" if running else ""
    return (
        f"{ctx.options.episodes} episodes, {steps} steps: {endings['terminated']} terminated, "
        f"{endings['truncated']} truncated{cap_note}"
    )


def check_end_and_reset(ctx: Context) -> str:
    """Step after the end is FAILED_PRECONDITION; Reset starts a new episode, also mid-episode."""
    rng = ctx.policy(1)
    with ctx.session() as session_id:
        episode = play_until_ended(ctx, session_id, rng)
        if episode is None:
            raise CheckSkipped(
                f"no episode ended within {ctx.step_cap} steps in {ctx.options.episodes} tries (no "
                "max_episode_steps declared), so a step after the end could not be tried"
            )
        first_action = episode.reset.observation.legal_actions[0]
        ctx.wire.expect_error(
            "Step",
            pb.StepRequest(session_id=session_id, action=first_action),
            grpc.StatusCode.FAILED_PRECONDITION,
            what=f"after the episode {episode.describe_end()}",
        )
        again = ctx.reset(session_id, episode.seed)
        check_observation(again.observation, ctx.spec, "Reset after the end")
        if again.episode != episode.reset.episode + 1:
            raise CheckFailed(
                f"Reset after the end returned episode {again.episode}; expected {episode.reset.episode + 1}"
            )
        step = ctx.step(session_id, again.observation.legal_actions[0])
        if step.episode_step != 1:
            raise CheckFailed(
                f"the first Step after Reset returned episode_step {step.episode_step}; expected 1"
            )
        if not (step.terminated or step.truncated):
            middle = ctx.reset(session_id, episode.seed)
            step = ctx.step(session_id, middle.observation.legal_actions[0])
            if step.episode_step != 1:
                raise CheckFailed(
                    f"after a Reset mid-episode the first Step returned episode_step {step.episode_step}; expected 1"
                )
    return f"an episode {episode.describe_end()}, then Step got FAILED_PRECONDITION; Reset started episode {again.episode}"


def check_truncation(ctx: Context) -> str:
    """An episode that runs max_episode_steps steps is truncated at exactly that step."""
    limit = ctx.spec.max_episode_steps
    if limit == 0:
        raise CheckSkipped("max_episode_steps is 0 (no step limit declared)")
    tries = 3 * ctx.options.episodes
    rng = ctx.policy(2)
    early: Counter[str] = Counter()
    with ctx.session() as session_id:
        for attempt in range(tries):
            episode = play(ctx, session_id, ctx.seed(200 + attempt), rng=rng)
            length = len(episode.steps)
            if not episode.ended:
                raise CheckFailed(
                    f"seed {episode.seed}: the episode was still running after {length} steps with "
                    f"max_episode_steps={limit}; expected truncated=true at step {limit}"
                )
            if length > limit:
                raise CheckFailed(
                    f"seed {episode.seed}: the episode ended at step {length}, past max_episode_steps={limit}; "
                    f"expected truncated=true at step {limit}"
                )
            if episode.truncated and length == limit:
                return f"truncated at step {limit} = max_episode_steps (try {attempt + 1})"
            early[episode.describe_end()] += 1
    seen = ", ".join(f"{what} x{n}" for what, n in early.most_common(3))
    raise CheckSkipped(
        f"all {tries} episodes of random legal actions ended before step {limit} ({seen}); "
        "the step limit could not be reached"
    )


def _shorten(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"
