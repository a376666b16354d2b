"""Trainer protocol messages for tests: a small PNG, and a valid episode to submit (or break)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from visact.env.v1 import env_pb2
from visact.trainer.v1 import trainer_pb2 as pb

#: the newest version of the test trainers, and the temperature they ask for
LATEST = 3
TEMPERATURE = 0.5


def png(height: int = 5, width: int = 7, seed: int = 0) -> env_pb2.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return env_pb2.Image(
        data=buffer.getvalue(), encoding=env_pb2.IMAGE_ENCODING_PNG, height=height, width=width, channels=3
    )


def valid_episode(steps: int = 2, *, truncated: bool = False) -> pb.Episode:
    message = pb.Episode(env="counter", session="fuzz/0", seed=0)
    for index in range(steps):
        last = index == steps - 1
        message.steps.append(
            pb.TrajectoryStep(
                image=png(seed=index),
                prompt_ids=[1, 2, 3, 4],
                generated_ids=[5, 6, 7],
                log_probs=[-0.5, -1.0, -0.25],
                action_start=1,
                text='{"action": "+"}',
                action="+",
                reward=1.0 if last else 0.0,
                terminated=last and not truncated,
                truncated=last and truncated,
                policy_version=LATEST,
                temperature=TEMPERATURE,
                episode_step=index + 1,
                success=last and not truncated,
            )
        )
    if truncated:
        message.bootstrap_image.CopyFrom(png(seed=99))
        message.bootstrap_prompt_ids.extend([1, 2, 3])
    return message
