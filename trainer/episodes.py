"""Episodes as the learner takes them: decoded from the wire and checked whole.

A malformed or inconsistent episode raises :class:`InvalidEpisode` with what was
wrong; nothing of it enters a batch. The agent encodes them
(``agent.trainer_link``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from visact.env.v1 import env_pb2
from visact.trainer.v1 import trainer_pb2 as pb

#: log-probs may exceed 0 by float error only
LOG_PROB_SLACK = 1e-3
#: rewards and penalties beyond this (absolute) are refused: one huge finite reward would overflow
#: the learner's returns and value loss and poison the shared weights
MAX_ABS_REWARD = 1e6
#: the largest image an episode may carry (pixels); a PNG is checked against it before decoding
MAX_IMAGE_PIXELS = 4096 * 4096


class InvalidEpisode(ValueError):
    """The episode cannot be trained on; the message says why."""


@dataclass
class Sample:
    """One environment step, as the learner needs it."""

    image: np.ndarray
    prompt_ids: list[int]
    generated_ids: list[int]
    behavior_log_probs: list[float]  # what the sampler recorded, per generated token
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


@dataclass
class EpisodeData:
    """One finished episode from one agent."""

    agent_id: str
    env: str
    steps: list[Sample]
    #: the reset seed: episodes of one env from one seed start alike (a group, under --group-size)
    seed: int = 0
    bootstrap_image: np.ndarray | None = None
    bootstrap_prompt_ids: list[int] = field(default_factory=list)
    #: the agent's id of the episode (SubmitEpisode.episode_id), set when the hub takes it
    episode_id: str = ""
    #: the wire form, kept to pass the episode on to other learner processes
    message: pb.Episode | None = field(default=None, repr=False)

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


def decode_png(message: env_pb2.Image, where: str) -> np.ndarray:
    if message.encoding != env_pb2.IMAGE_ENCODING_PNG:
        raise InvalidEpisode(f"{where}: images must be PNG (encoding 2), got encoding {message.encoding}")
    if not (message.height > 0 and message.width > 0 and message.height * message.width <= MAX_IMAGE_PIXELS):
        raise InvalidEpisode(
            f"{where}: image declared {message.height}x{message.width}; "
            f"need positive sizes and at most {MAX_IMAGE_PIXELS} pixels"
        )
    try:
        with Image.open(io.BytesIO(message.data)) as pil:
            # the header's size, before any pixel is decoded: no memory for a lying image
            if pil.format != "PNG":
                raise InvalidEpisode(f"{where}: image declared PNG but the bytes are {pil.format}")
            if (pil.height, pil.width) != (message.height, message.width):
                raise InvalidEpisode(
                    f"{where}: image declared {message.height}x{message.width} but decodes to "
                    f"{pil.height}x{pil.width}"
                )
            array = np.asarray(pil.convert("RGB"))
    except InvalidEpisode:
        raise
    except Exception as exc:  # PIL raises many types on bad bytes
        raise InvalidEpisode(f"{where}: image bytes are not a readable PNG ({exc})") from exc
    return array


def decode_episode(
    message: pb.Episode, *, agent_id: str, latest_version: int, vocab_size: int, max_tokens: int
) -> EpisodeData:
    """Check and decode one episode; raises InvalidEpisode naming the first problem."""
    if not message.steps:
        raise InvalidEpisode("the episode has no steps")
    steps = []
    last = len(message.steps) - 1
    for index, step in enumerate(message.steps):
        where = f"step {index}"
        steps.append(_decode_step(step, where, vocab_size=vocab_size, max_tokens=max_tokens))
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
    episode = EpisodeData(agent_id=agent_id, env=message.env, steps=steps, seed=message.seed, message=message)
    final = message.steps[last]
    if final.truncated and not final.terminated:
        if not message.HasField("bootstrap_image") or not message.bootstrap_prompt_ids:
            raise InvalidEpisode(
                "the episode was truncated but carries no bootstrap_image and bootstrap_prompt_ids; "
                "the learner needs the next observation to bootstrap its value"
            )
        episode.bootstrap_image = decode_png(message.bootstrap_image, "bootstrap")
        episode.bootstrap_prompt_ids = _token_ids(
            message.bootstrap_prompt_ids, "bootstrap prompt", vocab_size
        )
    return episode


def _decode_step(step: pb.TrajectoryStep, where: str, *, vocab_size: int, max_tokens: int) -> Sample:
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
    log_probs = list(step.log_probs)
    bad = [x for x in log_probs if not math.isfinite(x) or x > LOG_PROB_SLACK]
    if bad:
        raise InvalidEpisode(f"{where}: log-probs must be finite and <= 0, got e.g. {bad[0]}")
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
    return Sample(
        image=decode_png(step.image, where),
        prompt_ids=prompt,
        generated_ids=generated,
        behavior_log_probs=[min(x, 0.0) for x in log_probs],
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
    )


def _token_ids(ids: object, what: str, vocab_size: int) -> list[int]:
    values = list(ids)  # type: ignore[call-overload]
    if not values:
        raise InvalidEpisode(f"{what}: no tokens")
    bad = [t for t in values if not 0 <= t < vocab_size]
    if bad:
        raise InvalidEpisode(f"{what}: token id {bad[0]} outside the vocabulary 0..{vocab_size - 1}")
    return values
