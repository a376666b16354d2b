"""One-step episodes a model answered itself on real NumberLine frames: the input of the learner's tests and of benches that time the learner (bench/activation_checkpointing.py).

Rewards alternate in sign (-1, +1, ...), so the advantages are not all zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from visact import images as image_codec
from visact.env_server.games.numberline import NumberLine
from visact.model.generation import Sample as Answer
from visact.model.generation import generate_batch
from visact.trainer.v1 import trainer_pb2 as pb
from visact.wire.episodes import EpisodeData, PngImage, StepData


def png_image(pixels: np.ndarray) -> PngImage:
    """``pixels`` as a learner sample holds them: a PNG file, as an agent sends it."""
    message = image_codec.encode(pixels, image_codec.PNG)
    return PngImage(message.data, message.height, message.width)


def numberline_frames(count: int) -> list[np.ndarray]:
    """Real NumberLine observations (300x300), one per seed 0..count-1."""
    frames = []
    for seed in range(count):
        env = NumberLine()
        env.reset(seed=seed)
        frames.append(env.render())
    return frames


def answered_episodes(
    loaded: Any,
    count: int,
    *,
    prompt: str = "What are the numbers? Answer in json.",
    max_new_tokens: int = 12,
    temperature: float = 1.0,
    action_start: Callable[[int], int] = lambda answer_tokens: answer_tokens // 2,
) -> list[EpisodeData]:
    """``count`` one-step episodes: the model's sampled answer to ``prompt`` on frame ``i``,
    reward -1 or +1; ``action_start(len(answer))`` marks where the action tokens begin."""
    images = numberline_frames(count)
    answers = generate_batch(
        loaded,
        images,
        [prompt] * count,
        max_new_tokens,
        temperature,
        generator=torch.Generator().manual_seed(0),
    )
    episodes = []
    for i, (image, answer) in enumerate(zip(images, answers, strict=True)):
        reward = 1.0 if i % 2 else -1.0
        step = StepData(
            image=png_image(image),
            prompt_ids=answer.prompt_ids,
            generated_ids=answer.generated_ids,
            behavior_log_probs=answer.log_probs,
            action_start=action_start(len(answer.generated_ids)),
            reward=reward,
            terminated=True,
            truncated=False,
            version=0,
            temperature=temperature,
            valid=True,
            success=reward > 0,
            env_reward=reward,
        )
        episodes.append(EpisodeData(agent_id="a", env="numberline", steps=[step], episode_id=f"e{i}"))
    return episodes


def one_step_message(image: np.ndarray, answer: Answer, temperature: float) -> pb.Episode:
    """The wire form of a one-step episode: ``answer``, sampled for ``image``, ended the game."""
    return pb.Episode(
        env="numberline",
        steps=[
            pb.TrajectoryStep(
                image=image_codec.encode(image, image_codec.PNG),
                prompt_ids=answer.prompt_ids,
                generated_ids=answer.generated_ids,
                log_probs=answer.log_probs,
                reward=1.0,
                terminated=True,
                temperature=temperature,
                episode_step=1,
            )
        ],
    )
