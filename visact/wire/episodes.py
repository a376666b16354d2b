"""The episode on the wire, both ways: the agent's finished episode (``visact.wire.records``)
encoded (:func:`encode_episode`), and decoded and checked whole into the learner's form
(:func:`decode_episode`: :class:`EpisodeData` of :class:`StepData` steps).

A malformed or inconsistent episode raises :class:`InvalidEpisode` with what was
wrong; nothing of it enters a batch. :func:`episode_message` encodes a decoded episode again,
to share a batch with other learner processes.

What an episode holds while it waits in the buffer is what came on the wire, no more: each
image stays the PNG file it arrived as (:class:`PngImage`; its pixels are decoded when a micro
batch needs them, and thrown away after), tokens and log-probs are packed 4 bytes each.
:attr:`EpisodeData.held_bytes` counts that, and the hub's byte budget is in those bytes.
A PNG is decoded once on arrival, to check it is whole, and its pixels dropped; that runs in
one of ``IMAGE_THREADS`` threads (:func:`in_image_thread`), whatever the number of server
threads: the pixels being checked come and go in those threads' memory only (glibc keeps an
allocator arena per thread, and what a thread freed stays resident in its arena).
"""

from __future__ import annotations

import io
import math
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from PIL import Image

from visact import images
from visact.env.v1 import env_pb2
from visact.trainer.v1 import trainer_pb2 as pb
from visact.wire.records import Episode

#: log-probs are <= 0; above this (float rounding of 0) they are refused, up to it they count as 0
LOG_PROB_ROUNDING = 1e-6
#: rewards and penalties beyond this (absolute) are refused: one huge finite reward would overflow
#: the learner's returns and value loss and poison the shared weights
MAX_ABS_REWARD = 1e6
#: the largest image the protocol allows (pixels); a trainer allows at most what its model's
#: processor can use (``visact.trainer.admission``); a PNG is checked against it before decoding
MAX_IMAGE_PIXELS = 4096 * 4096
#: the threads that decode images to check them, for every server thread: at most this many
#: images' pixels exist at once, in these threads' allocator arenas only
IMAGE_THREADS = 2
#: what a buffered step holds beyond its PNG bytes and its packed tokens: its Python objects
#: (measured with tracemalloc in tests/unit/test_trainer_episodes.py; rounded up)
STEP_OVERHEAD_BYTES = 1280
#: what a buffered episode holds beyond its steps: its objects and its entries in the hub
EPISODE_OVERHEAD_BYTES = 2048
#: bytes of one packed token id or log-prob
PACKED_BYTES = 4

_image_threads = ThreadPoolExecutor(max_workers=IMAGE_THREADS, thread_name_prefix="image-check")
_T = TypeVar("_T")


def in_image_thread(work: Callable[..., _T], *args: object) -> _T:
    """``work(*args)`` run in one of the image threads (waiting for one to be free); its result,
    or its exception raised here."""
    return _image_threads.submit(work, *args).result()


class InvalidEpisode(ValueError):
    """The episode cannot be trained on; the message says why."""


@dataclass(frozen=True)
class PngImage:
    """An observation as it came: a PNG file of a checked size, decoded when needed."""

    data: bytes
    height: int
    width: int

    def pixels(self) -> np.ndarray:
        """The (height, width, 3) uint8 pixels, decoded now (not kept)."""
        return _decode(self.data, "image", self.height, self.width)


@dataclass
class StepData:
    """One environment step, as the learner needs it."""

    image: PngImage
    prompt_ids: Sequence[int]
    generated_ids: Sequence[int]
    behavior_log_probs: Sequence[float]  # what the sampler recorded, per generated token
    action_start: int
    reward: float  # the env reward plus the format penalty: what PPO maximizes
    terminated: bool
    truncated: bool
    version: int
    temperature: float
    valid: bool  # the answer parsed to a legal action
    success: bool  # set on an episode's last step
    env_reward: float = 0.0
    #: (fact key, stated correctly) against the environment's truth; empty when unchecked
    fact_checks: tuple[tuple[str, bool], ...] = ()
    format_penalty: float = 0.0  # (<= 0) included in reward

    @property
    def held_bytes(self) -> int:
        tokens = len(self.prompt_ids) + len(self.generated_ids) + len(self.behavior_log_probs)
        return STEP_OVERHEAD_BYTES + len(self.image.data) + PACKED_BYTES * tokens


@dataclass
class EpisodeData:
    """One finished episode from one agent."""

    agent_id: str
    env: str
    steps: list[StepData]
    #: the reset seed: episodes of one env from one seed start alike (a group, under --group-size)
    seed: int = 0
    bootstrap_image: PngImage | None = None
    bootstrap_prompt_ids: Sequence[int] = field(default_factory=list)
    #: the agent's id of the episode (SubmitEpisode.episode_id), set when the hub takes it
    episode_id: str = ""

    @property
    def success(self) -> bool:
        return bool(self.steps) and self.steps[-1].success

    @property
    def env_return(self) -> float:
        return float(sum(s.env_reward for s in self.steps))

    @property
    def total_reward(self) -> float:
        """The episode's undiscounted return as trained on (format penalties included)."""
        return float(sum(s.reward for s in self.steps))

    @property
    def min_version(self) -> int:
        return min(s.version for s in self.steps)

    @property
    def held_bytes(self) -> int:
        """What this episode holds in memory: PNG files, packed tokens, object overheads."""
        held = EPISODE_OVERHEAD_BYTES + len(self.agent_id) + len(self.env) + len(self.episode_id)
        held += sum(s.held_bytes for s in self.steps)
        if self.bootstrap_image is not None:
            held += len(self.bootstrap_image.data)
        return held + PACKED_BYTES * len(self.bootstrap_prompt_ids)


def check_png(message: env_pb2.Image, where: str, max_pixels: int = MAX_IMAGE_PIXELS) -> PngImage:
    """The image, once its bytes are a whole PNG of its declared size, at most ``max_pixels``."""
    if message.encoding != env_pb2.IMAGE_ENCODING_PNG:
        raise InvalidEpisode(f"{where}: images must be PNG (encoding 2), got encoding {message.encoding}")
    if not (message.height > 0 and message.width > 0 and message.height * message.width <= max_pixels):
        raise InvalidEpisode(
            f"{where}: image declared {message.height}x{message.width}; need positive sizes and at most "
            f"{max_pixels} pixels (what this trainer's model can use; see trainer serve --max-image-pixels)"
        )
    image = PngImage(message.data, message.height, message.width)
    in_image_thread(_decode, image.data, where, image.height, image.width)  # whole? (pixels dropped)
    return image


def _decode(data: bytes, where: str, height: int, width: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as pil:
            # the header's size, before any pixel is decoded: no memory for a lying image
            if pil.format != "PNG":
                raise InvalidEpisode(f"{where}: image declared PNG but the bytes are {pil.format}")
            if (pil.height, pil.width) != (height, width):
                raise InvalidEpisode(
                    f"{where}: image declared {height}x{width} but decodes to {pil.height}x{pil.width}"
                )
            return np.asarray(pil.convert("RGB"))
    except InvalidEpisode:
        raise
    except Exception as exc:  # PIL raises many types on bad bytes
        raise InvalidEpisode(f"{where}: image bytes are not a readable PNG ({exc})") from exc


def decode_episode(
    message: pb.Episode,
    *,
    agent_id: str,
    latest_version: int,
    vocab_size: int,
    max_tokens: int,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> EpisodeData:
    """Check and decode one episode; raises InvalidEpisode naming the first problem."""
    if not message.steps:
        raise InvalidEpisode("the episode has no steps")
    steps = []
    last = len(message.steps) - 1
    for index, step in enumerate(message.steps):
        where = f"step {index}"
        steps.append(
            _decode_step(
                step, where, vocab_size=vocab_size, max_tokens=max_tokens, max_pixels=max_image_pixels
            )
        )
        done = step.terminated or step.truncated
        if index < last and done:
            raise InvalidEpisode(f"{where} ends the episode but {last - index} more steps follow")
        if index == last and not done:
            raise InvalidEpisode(f"{where} is the last step but is neither terminated nor truncated")
        if step.policy_version < 0:
            raise InvalidEpisode(f"{where}: policy version {step.policy_version} is negative")
        if step.policy_version > latest_version:
            raise InvalidEpisode(
                f"{where} claims policy version {step.policy_version}, newer than the newest ({latest_version})"
            )
        if index and step.policy_version < message.steps[index - 1].policy_version:
            raise InvalidEpisode(f"{where}: policy versions go backwards within the episode")
    episode = EpisodeData(agent_id=agent_id, env=message.env, steps=steps, seed=message.seed)
    final = message.steps[last]
    if final.truncated and not final.terminated:
        if not message.HasField("bootstrap_image") or not message.bootstrap_prompt_ids:
            raise InvalidEpisode(
                "the episode was truncated but carries no bootstrap_image and bootstrap_prompt_ids; "
                "the learner needs the next observation to bootstrap its value"
            )
        episode.bootstrap_image = check_png(message.bootstrap_image, "bootstrap", max_image_pixels)
        episode.bootstrap_prompt_ids = _token_ids(
            message.bootstrap_prompt_ids, "bootstrap prompt", vocab_size
        )
    return episode


def _decode_step(
    step: pb.TrajectoryStep, where: str, *, vocab_size: int, max_tokens: int, max_pixels: int
) -> StepData:
    prompt = _token_ids(step.prompt_ids, f"{where} prompt", vocab_size)
    generated = _token_ids(step.generated_ids, f"{where} answer", vocab_size)
    if len(step.log_probs) != len(generated):
        raise InvalidEpisode(
            f"{where}: {len(generated)} generated tokens but {len(step.log_probs)} log-probs; one per token"
        )
    if len(prompt) + len(generated) > max_tokens:
        raise InvalidEpisode(
            f"{where}: {len(prompt) + len(generated)} tokens exceed the model's {max_tokens}"
        )
    log_probs = array("f", step.log_probs)
    bad = [x for x in log_probs if not math.isfinite(x) or x > LOG_PROB_ROUNDING]
    if bad:
        raise InvalidEpisode(
            f"{where}: log-probs must be finite and <= 0, got e.g. {bad[0]} (only float rounding, up to "
            f"{LOG_PROB_ROUNDING:g}, may exceed 0)"
        )
    if not 0 <= step.action_start <= len(generated):
        raise InvalidEpisode(f"{where}: action_start {step.action_start} outside 0..{len(generated)}")
    for name in ("reward", "format_penalty"):
        value = getattr(step, name)
        if not (math.isfinite(value) and abs(value) <= MAX_ABS_REWARD):
            raise InvalidEpisode(
                f"{where}: {name} must be finite and within ±{MAX_ABS_REWARD:g}, got {value}"
            )
    if step.format_penalty > 0:
        raise InvalidEpisode(f"{where}: format_penalty is added to the reward and must be <= 0")
    if not (math.isfinite(step.temperature) and step.temperature > 0):
        raise InvalidEpisode(f"{where}: temperature must be > 0, got {step.temperature}")
    if step.terminated and step.truncated:
        raise InvalidEpisode(f"{where}: terminated and truncated may not both be true")
    return StepData(
        image=check_png(step.image, where, max_pixels),
        prompt_ids=prompt,
        generated_ids=generated,
        behavior_log_probs=array("f", (min(x, 0.0) for x in log_probs)),
        action_start=step.action_start,
        reward=step.reward + step.format_penalty,
        terminated=step.terminated,
        truncated=step.truncated,
        version=step.policy_version,
        temperature=step.temperature,
        valid=not step.parse_failure,
        success=step.success,
        env_reward=step.reward,
        fact_checks=tuple((check.key, check.correct) for check in step.fact_checks),
        format_penalty=step.format_penalty,
    )


def _token_ids(ids: object, what: str, vocab_size: int) -> array[int]:
    values = array("i", ids)  # type: ignore[call-overload]
    if not values:
        raise InvalidEpisode(f"{what}: no tokens")
    bad = [t for t in values if not 0 <= t < vocab_size]
    if bad:
        raise InvalidEpisode(f"{what}: token id {bad[0]} outside the vocabulary 0..{vocab_size - 1}")
    return values


def episode_message(episode: EpisodeData) -> pb.Episode:
    """The wire form of a decoded episode: what :func:`decode_episode` decodes to it again (the
    text and action of each step, which the learner does not use, are left out)."""
    message = pb.Episode(env=episode.env, seed=episode.seed)
    for index, sample in enumerate(episode.steps):
        message.steps.append(
            pb.TrajectoryStep(
                image=_image_message(sample.image),
                prompt_ids=sample.prompt_ids,
                generated_ids=sample.generated_ids,
                log_probs=sample.behavior_log_probs,
                action_start=sample.action_start,
                parse_failure="" if sample.valid else "invalid",
                format_penalty=sample.format_penalty,
                reward=sample.env_reward,
                terminated=sample.terminated,
                truncated=sample.truncated,
                policy_version=sample.version,
                temperature=sample.temperature,
                episode_step=index + 1,
                success=sample.success,
                fact_checks=[pb.FactCheck(key=key, correct=right) for key, right in sample.fact_checks],
            )
        )
    if episode.bootstrap_image is not None:
        message.bootstrap_image.CopyFrom(_image_message(episode.bootstrap_image))
        message.bootstrap_prompt_ids.extend(episode.bootstrap_prompt_ids)
    return message


def _image_message(image: PngImage) -> env_pb2.Image:
    return env_pb2.Image(
        data=image.data,
        encoding=env_pb2.IMAGE_ENCODING_PNG,
        height=image.height,
        width=image.width,
        channels=3,
    )


def encode_episode(episode: Episode) -> pb.Episode:
    """The wire form of a finished episode: images as PNG, tokens as ids."""
    message = pb.Episode(env=episode.env, session=episode.session, seed=episode.seed)
    for step in episode.steps:
        message.steps.append(
            pb.TrajectoryStep(
                image=images.encode(step.image, images.PNG),
                prompt_ids=step.prompt_ids,
                generated_ids=step.generated_ids,
                log_probs=step.log_probs,
                action_start=step.action_start,
                text=step.text,
                action=step.action,
                parse_failure=step.parse_failure,
                format_penalty=step.format_penalty,
                reward=step.reward,
                terminated=step.terminated,
                truncated=step.truncated,
                policy_version=step.policy_version,
                temperature=step.temperature,
                episode_step=step.episode_step,
                success=bool(step.info.get("success", False)),
                fact_checks=[pb.FactCheck(key=key, correct=right) for key, right in step.fact_checks],
            )
        )
    if episode.bootstrap_image is not None:
        message.bootstrap_image.CopyFrom(images.encode(episode.bootstrap_image, images.PNG))
        message.bootstrap_prompt_ids.extend(episode.bootstrap_prompt_ids or [])
    return message
