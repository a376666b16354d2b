"""Unit tests for visact/wire/episodes.py: what decode_episode takes and what it refuses.

Valid episodes are built the way an agent builds them: StepRecords with small random images,
encoded by agent.trainer_link.encode_episode. Each malformation is then applied to the wire
message and must be refused as a whole with an InvalidEpisode that names the problem.
"""

from __future__ import annotations

import gc
import math
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visact.env.v1 import env_pb2
from visact.trainer.v1 import trainer_pb2 as pb
from visact.wire.episodes import (
    LOG_PROB_ROUNDING,
    EpisodeData,
    InvalidEpisode,
    decode_episode,
    encode_episode,
    episode_message,
)
from visact.wire.records import Episode, StepRecord

VOCAB = 100
MAX_TOKENS = 64
SHAPE = (5, 7, 3)


def record(rng: np.random.Generator, index: int, *, last: bool, truncated: bool) -> StepRecord:
    return StepRecord(
        image=rng.integers(0, 256, SHAPE, dtype=np.uint8),
        prompt_ids=[1, 2, 3 + index],
        generated_ids=[10 + index, 11, 12],
        log_probs=[-0.25, -0.5, -1.0],
        action_start=1,
        text="think. +",
        action="+",
        parse_failure="" if index != 1 else "no_action",
        format_penalty=0.0 if index != 1 else -0.5,
        reward=1.0 if last else 0.0,
        terminated=last and not truncated,
        truncated=last and truncated,
        policy_version=index,  # 0, 1, 2, ...: allowed to rise within an episode
        temperature=0.2,
        session="127.0.0.1:5000/s1",
        seed=7,
        episode_step=index + 1,
        info={"success": True} if last and not truncated else {},
        fact_checks=(("cards", index % 2 == 0), ("formula", True)),
    )


def make_records(steps: int = 3, *, truncated: bool = False, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    records = [record(rng, i, last=i == steps - 1, truncated=truncated) for i in range(steps)]
    return Episode(
        env="counter",
        session="127.0.0.1:5000/s1",
        seed=7,
        steps=records,
        bootstrap_image=rng.integers(0, 256, SHAPE, dtype=np.uint8) if truncated else None,
        bootstrap_prompt_ids=[4, 5, 6] if truncated else None,
    )


def decode(
    message: pb.Episode,
    *,
    latest_version: int = 5,
    max_tokens: int = MAX_TOKENS,
    max_image_pixels: int = 4096**2,
) -> EpisodeData:
    return decode_episode(
        message,
        agent_id="agent-a",
        latest_version=latest_version,
        vocab_size=VOCAB,
        max_tokens=max_tokens,
        max_image_pixels=max_image_pixels,
    )


# ---------------------------------------------------------------------------------------------
# valid episodes
# ---------------------------------------------------------------------------------------------


def test_a_valid_terminated_episode_decodes_to_what_the_agent_recorded() -> None:
    records = make_records(3)

    decoded = decode(encode_episode(records))

    assert decoded.agent_id == "agent-a" and decoded.env == "counter"
    assert len(decoded.steps) == 3
    for got, want in zip(decoded.steps, records.steps, strict=True):
        np.testing.assert_array_equal(got.image.pixels(), want.image)
        assert list(got.prompt_ids) == want.prompt_ids
        assert list(got.generated_ids) == want.generated_ids
        assert list(got.behavior_log_probs) == pytest.approx(want.log_probs)
        assert got.action_start == want.action_start
        assert got.reward == pytest.approx(want.reward + want.format_penalty)
        assert got.env_reward == pytest.approx(want.reward)
        assert (got.terminated, got.truncated) == (want.terminated, want.truncated)
        assert got.version == want.policy_version
        assert got.temperature == pytest.approx(0.2)
        assert got.valid == (want.parse_failure == "")
        assert got.fact_checks == want.fact_checks
    assert [s.valid for s in decoded.steps] == [True, False, True]
    assert decoded.steps[1].reward == pytest.approx(-0.5)
    assert decoded.success and decoded.env_return == pytest.approx(1.0)
    assert decoded.min_version == 0
    assert decoded.bootstrap_image is None and list(decoded.bootstrap_prompt_ids) == []


def test_a_truncated_episode_carries_its_bootstrap_observation() -> None:
    records = make_records(2, truncated=True)

    decoded = decode(encode_episode(records))

    assert decoded.steps[-1].truncated and not decoded.steps[-1].terminated
    assert not decoded.success
    assert decoded.bootstrap_image is not None
    np.testing.assert_array_equal(decoded.bootstrap_image.pixels(), records.bootstrap_image)
    assert list(decoded.bootstrap_prompt_ids) == [4, 5, 6]


def test_a_one_step_episode_and_tiny_positive_log_prob_rounding_are_accepted() -> None:
    message = encode_episode(make_records(1))
    message.steps[0].log_probs[0] = LOG_PROB_ROUNDING / 2  # fp error above 0 is tolerated ...

    decoded = decode(message)

    assert decoded.steps[0].behavior_log_probs[0] == 0.0  # ... and clamped to 0


@pytest.mark.parametrize("log_prob", [2e-6, 1e-4, 1e-3])
def test_a_positive_log_prob_beyond_float_rounding_is_refused(log_prob: float) -> None:
    message = encode_episode(make_records(1))
    message.steps[0].log_probs[0] = log_prob  # (0, 1e-3] was accepted once

    with pytest.raises(InvalidEpisode, match=r"step 0: log-probs must be finite and <= 0, got e\.g\."):
        decode(message)


# ---------------------------------------------------------------------------------------------
# malformations: each refused with a message naming the problem
# ---------------------------------------------------------------------------------------------

Mutation = Callable[[pb.Episode], Any]


def _last_truncated_without_bootstrap(m: pb.Episode) -> None:
    m.steps[-1].terminated = False
    m.steps[-1].truncated = True


def _truncated_with_bootstrap_image_only(m: pb.Episode) -> None:
    _last_truncated_without_bootstrap(m)
    m.bootstrap_image.CopyFrom(m.steps[0].image)


def _truncated_with_broken_bootstrap_image(m: pb.Episode) -> None:
    _last_truncated_without_bootstrap(m)
    m.bootstrap_image.CopyFrom(m.steps[0].image)
    m.bootstrap_image.data = b"\x89PNG garbage"
    m.bootstrap_prompt_ids.extend([1, 2])


def _versions_backwards(m: pb.Episode) -> None:
    m.steps[0].policy_version = 3
    m.steps[1].policy_version = 2
    m.steps[2].policy_version = 4


MALFORMED: list[tuple[str, Mutation, str]] = [
    ("fewer log-probs than tokens", lambda m: m.steps[1].log_probs.pop(), "step 1: 3 generated tokens but 2 log-probs"),
    ("more log-probs than tokens", lambda m: m.steps[0].log_probs.append(-1.0), "3 generated tokens but 4 log-probs"),
    ("NaN log-prob", lambda m: m.steps[0].log_probs.__setitem__(1, math.nan), "log-probs must be finite and <= 0"),
    ("inf log-prob", lambda m: m.steps[0].log_probs.__setitem__(1, math.inf), "log-probs must be finite and <= 0"),
    ("-inf log-prob", lambda m: m.steps[0].log_probs.__setitem__(1, -math.inf), "log-probs must be finite"),
    ("positive log-prob", lambda m: m.steps[2].log_probs.__setitem__(0, 0.5), "step 2: log-probs must be finite and <= 0, got e.g. 0.5"),
    ("NaN reward", lambda m: setattr(m.steps[0], "reward", math.nan), "step 0: reward must be finite"),
    ("inf reward", lambda m: setattr(m.steps[0], "reward", math.inf), "reward must be finite"),
    ("NaN format_penalty", lambda m: setattr(m.steps[0], "format_penalty", math.nan), "format_penalty must be finite"),
    ("positive format_penalty", lambda m: setattr(m.steps[1], "format_penalty", 0.5), "step 1: format_penalty is added to the reward and must be <= 0"),
    ("bad PNG bytes", lambda m: setattr(m.steps[0].image, "data", b"not a png at all"), "step 0: image bytes are not a readable PNG"),
    ("empty PNG bytes", lambda m: setattr(m.steps[0].image, "data", b""), "not a readable PNG"),
    ("PNG taller than declared", lambda m: setattr(m.steps[1].image, "height", 4), "step 1: image declared 4x7 but decodes to 5x7"),
    ("PNG wider than declared", lambda m: setattr(m.steps[1].image, "width", 9), "image declared 5x9 but decodes to 5x7"),
    ("raw encoding", lambda m: setattr(m.steps[0].image, "encoding", env_pb2.IMAGE_ENCODING_RAW_RGB), "images must be PNG (encoding 2), got encoding 1"),
    ("unspecified encoding", lambda m: setattr(m.steps[0].image, "encoding", env_pb2.IMAGE_ENCODING_UNSPECIFIED), "images must be PNG"),
    ("done before the last step", lambda m: setattr(m.steps[0], "terminated", True), "step 0 ends the episode but 2 more steps follow"),
    ("truncated before the last step", lambda m: setattr(m.steps[1], "truncated", True), "step 1 ends the episode but 1 more steps follow"),
    ("last step not done", lambda m: setattr(m.steps[2], "terminated", False), "step 2 is the last step but is neither terminated nor truncated"),
    ("terminated and truncated", lambda m: setattr(m.steps[2], "truncated", True), "step 2: terminated and truncated may not both be true"),
    ("version newer than latest", lambda m: setattr(m.steps[2], "policy_version", 6), "step 2 claims policy version 6, newer than the newest (5)"),
    ("versions going backwards", _versions_backwards, "step 1: policy versions go backwards"),
    ("negative version", lambda m: setattr(m.steps[0], "policy_version", -1), "step 0: policy version -1 is negative"),
    ("truncated without bootstrap", _last_truncated_without_bootstrap, "truncated but carries no bootstrap_image"),
    ("truncated without bootstrap prompt", _truncated_with_bootstrap_image_only, "bootstrap_prompt_ids"),
    ("truncated with a broken bootstrap image", _truncated_with_broken_bootstrap_image, "bootstrap: image bytes are not a readable PNG"),
    ("answer token id = vocab", lambda m: m.steps[0].generated_ids.__setitem__(2, VOCAB), f"step 0 answer: token id {VOCAB} outside the vocabulary 0..{VOCAB - 1}"),
    ("negative prompt token id", lambda m: m.steps[1].prompt_ids.__setitem__(0, -1), "step 1 prompt: token id -1 outside the vocabulary"),
    ("empty prompt", lambda m: m.steps[1].ClearField("prompt_ids"), "step 1 prompt: no tokens"),
    ("empty answer", lambda m: (m.steps[1].ClearField("generated_ids"), m.steps[1].ClearField("log_probs")), "step 1 answer: no tokens"),
    ("too many tokens", lambda m: m.steps[0].prompt_ids.extend([1] * (MAX_TOKENS - 5)), f"step 0: {MAX_TOKENS + 1} tokens exceed the model's {MAX_TOKENS}"),
    ("temperature 0", lambda m: setattr(m.steps[0], "temperature", 0.0), "step 0: temperature must be > 0, got 0.0"),
    ("negative temperature", lambda m: setattr(m.steps[0], "temperature", -0.5), "temperature must be > 0, got -0.5"),
    ("NaN temperature", lambda m: setattr(m.steps[0], "temperature", math.nan), "temperature must be > 0"),
    ("empty episode", lambda m: m.ClearField("steps"), "the episode has no steps"),
    ("action_start past the answer", lambda m: setattr(m.steps[0], "action_start", 4), "step 0: action_start 4 outside 0..3"),
    ("negative action_start", lambda m: setattr(m.steps[0], "action_start", -1), "action_start -1 outside 0..3"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_a_malformed_episode_is_refused_naming_the_problem(mutate: Mutation, message: str) -> None:
    episode = encode_episode(make_records(3))
    decode(episode)  # valid before the mutation: the mutation alone is what is refused
    mutate(episode)

    with pytest.raises(InvalidEpisode) as refused:
        decode(episode)

    assert message in str(refused.value)


def test_an_episode_at_the_newest_version_is_not_too_new() -> None:
    episode = encode_episode(make_records(3))  # versions 0, 1, 2
    decode(episode, latest_version=2)
    with pytest.raises(InvalidEpisode, match=r"policy version 2, newer than the newest \(1\)"):
        decode(episode, latest_version=1)


def test_exactly_max_tokens_is_accepted() -> None:
    episode = encode_episode(make_records(1))  # 3 prompt + 3 answer tokens
    decode(episode, max_tokens=6)
    episode.steps[0].prompt_ids.append(1)
    with pytest.raises(InvalidEpisode, match="7 tokens exceed"):
        decode(episode, max_tokens=6)


def test_an_image_over_the_trainers_pixel_bound_is_refused_before_decoding() -> None:
    episode = encode_episode(make_records(2))  # 5x7 images: 35 pixels
    decode(episode, max_image_pixels=35)
    with pytest.raises(
        InvalidEpisode, match="step 0: image declared 5x7; need positive sizes and at most 34 pixels"
    ):
        decode(episode, max_image_pixels=34)


@pytest.mark.parametrize(("steps", "prompt"), [(1, 10), (20, 100), (100, 1000)])
def test_held_bytes_count_at_least_what_a_decoded_episode_allocates(steps: int, prompt: int) -> None:
    """The hub's byte budget counts ``held_bytes``: it must not undercount what stays allocated
    (PNG files, packed tokens, the objects around them) once an episode is decoded."""
    records = make_records(steps)
    for step in records.steps:
        step.prompt_ids = [1 + i % (VOCAB - 1) for i in range(prompt)]
        step.generated_ids = [10, 11, 12]
        step.policy_version = 0
    message = encode_episode(records)
    decode(message, max_tokens=10_000)  # imports and caches warmed up
    gc.collect()
    tracemalloc.start()
    try:
        decoded = decode(message, max_tokens=10_000)
        gc.collect()
        allocated = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    png = sum(len(s.image.data) for s in message.steps)
    assert allocated <= decoded.held_bytes, (allocated, decoded.held_bytes)
    assert decoded.held_bytes <= 2 * allocated + 4096, "the count is an upper bound, not a wild guess"
    assert decoded.held_bytes >= png + 4 * steps * (prompt + 6)


@pytest.mark.parametrize("truncated", [False, True])
def test_episode_message_decodes_to_the_same_episode(truncated: bool) -> None:
    """What another learner process gets (trainer.distributed) is what the main process has."""
    first = decode(encode_episode(make_records(3, truncated=truncated)))

    again = decode(episode_message(first))

    assert again == first


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    data=st.binary(max_size=200),
    height=st.integers(0, 64),
    width=st.integers(0, 64),
    encoding=st.integers(0, 3),
)
def test_garbage_image_bytes_are_refused_as_invalid_episodes_only(
    data: bytes, height: int, width: int, encoding: int
) -> None:
    episode = encode_episode(make_records(2))
    image = episode.steps[1].image
    image.data, image.height, image.width = data, height, width
    image.encoding = encoding  # type: ignore[assignment]

    with pytest.raises(InvalidEpisode, match="step 1: image"):
        decode(episode)


@FAST
@given(
    cut=st.integers(0, 10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
)
def test_damaged_png_bytes_never_raise_anything_but_invalid_episode(
    cut: int, flips: list[tuple[int, int]]
) -> None:
    episode = encode_episode(make_records(1))
    data = bytearray(episode.steps[0].image.data)
    for position, xor in flips:
        data[position % len(data)] ^= xor
    episode.steps[0].image.data = bytes(data[: len(data) - cut % (len(data) + 1)])  # cut short

    try:
        decoded = decode(episode)
    except InvalidEpisode as exc:
        assert str(exc).startswith("step 0: image")
    else:  # a flip PNG's checks do not see still decodes to an image of the declared shape
        assert decoded.steps[0].image.pixels().shape == SHAPE


@FAST
@given(log_probs=st.lists(st.floats(width=32), min_size=3, max_size=3))
def test_log_probs_are_accepted_exactly_when_finite_and_not_positive(log_probs: list[float]) -> None:
    episode = encode_episode(make_records(1))
    episode.steps[0].ClearField("log_probs")
    episode.steps[0].log_probs.extend(log_probs)
    acceptable = all(math.isfinite(x) and x <= LOG_PROB_ROUNDING for x in log_probs)

    if acceptable:
        decoded = decode(episode)
        assert all(x <= 0.0 for x in decoded.steps[0].behavior_log_probs)
    else:
        with pytest.raises(InvalidEpisode, match="log-probs must be finite and <= 0"):
            decode(episode)
