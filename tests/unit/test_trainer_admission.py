"""Unit tests for trainer/admission.py on the tiny VLM: what a trainer of a real model accepts.

A sound episode is the model's own answer to a NumberLine frame; each defect is one the learner
could not score (the model fails the whole batch on it), or one sampling never produces.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from visact.model.generation import generate_batch
from visact.model.loading import LoadedVLM, load_vlm
from visact.orchestration.sampled_episodes import numberline_frames, one_step_message
from visact.trainer.admission import Admission, default_max_image_pixels, model_admission, processor_pixels
from visact.trainer.v1 import trainer_pb2 as pb
from visact.wire.episodes import InvalidEpisode

TEMPERATURE = 0.7
IMAGE, PAD, START, STOP = 3, 0, 1, 2  # the tiny VLM's <image>, <pad>, <|im_start|>, <|im_end|>


@pytest.fixture(scope="module")
def tiny(cache_dir: Path) -> LoadedVLM:
    return load_vlm("tiny", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def admission(tiny: LoadedVLM) -> Admission:
    return model_admission(
        tiny,
        vocab_size=516,
        max_tokens=2048,
        temperature=TEMPERATURE,
        max_image_pixels=0,
        buffer_bytes=64 << 20,
    )


@pytest.fixture(scope="module")
def sound(tiny: LoadedVLM) -> pb.Episode:
    [frame] = numberline_frames(1)
    [answer] = generate_batch(
        tiny, [frame], ["Answer in json."], 12, TEMPERATURE, generator=torch.Generator().manual_seed(1)
    )
    return one_step_message(frame, answer, TEMPERATURE)


def check(admission: Admission, message: pb.Episode) -> Any:
    return admission.episode(message, agent_id="agent-a", latest_version=0)


def test_the_models_own_answer_is_accepted(admission: Admission, sound: pb.Episode) -> None:
    episode = check(admission, sound)
    assert list(episode.steps[0].prompt_ids).count(IMAGE) == 16  # the tiny VLM's image block


def test_images_are_bounded_by_what_the_processor_feeds_the_model(
    tiny: LoadedVLM, admission: Admission
) -> None:
    assert processor_pixels(tiny) == 64 * 64  # it resizes every frame to 64x64
    assert default_max_image_pixels(tiny) == admission.max_image_pixels == 1024 * 1024  # 16x a side


def _set(field: str, edit: Callable[[list[int]], list[int]]) -> Callable[[pb.Episode], None]:
    def mutate(message: pb.Episode) -> None:
        step = message.steps[0]
        values = edit(list(getattr(step, field)))
        step.ClearField(field)
        getattr(step, field).extend(values)
        if field == "generated_ids":
            step.ClearField("log_probs")
            step.log_probs.extend([-1.0] * len(values))

    return mutate


def _split_image_block(ids: list[int]) -> list[int]:
    middle = ids.index(IMAGE) + 8
    return [*ids[:middle], 40, *ids[middle:]]  # 16 image tokens, a text token among them


def _bootstrap_without_image_tokens(message: pb.Episode) -> None:
    step = message.steps[0]
    step.terminated, step.truncated = False, True
    message.bootstrap_image.CopyFrom(step.image)
    message.bootstrap_prompt_ids.extend(t for t in step.prompt_ids if t != IMAGE)


DEFECTS = [
    ("prompt without its image tokens", _set("prompt_ids", lambda p: [t for t in p if t != IMAGE]),
     "step 0 prompt: the model's processor expands its 300x300 image into 16 image tokens (ids [3]); it holds 0"),
    ("one image token short", _set("prompt_ids", lambda p: p[: p.index(IMAGE)] + p[p.index(IMAGE) + 1 :]),
     "it holds 15"),
    ("two images' tokens", _set("prompt_ids", lambda p: [*p, *[IMAGE] * 16]), "it holds 32"),
    ("image tokens not where the processor puts them", _set("prompt_ids", _split_image_block), "not laid out"),
    ("answer ending in the image token", _set("generated_ids", lambda g: [*g, IMAGE]),
     "step 0 answer: token 3 ('<image>') at position"),
    ("answer starting with the pad token", _set("generated_ids", lambda g: [PAD, *g]),
     "step 0 answer: token 0 ('<pad>') at position 0 is a special token that sampling never draws"),
    ("a turn start in the answer", _set("generated_ids", lambda g: [*g, START, 40]), "token 1 ('<|im_start|>')"),
    ("stop token before the end", _set("generated_ids", lambda g: [STOP, *g]),
     "step 0 answer: stop token 2 at position 0 of"),
    ("bootstrap prompt without its image tokens", _bootstrap_without_image_tokens, "bootstrap prompt: the model's"),
    ("another temperature", lambda m: setattr(m.steps[0], "temperature", 1.0), "sampled at temperature 1.0"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "expected"), [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_what_the_learner_could_not_score_is_refused_naming_the_problem(
    admission: Admission, sound: pb.Episode, mutate: Callable[[pb.Episode], None], expected: str
) -> None:
    message = pb.Episode()
    message.CopyFrom(sound)
    mutate(message)

    with pytest.raises(InvalidEpisode) as refused:
        check(admission, message)

    assert expected in str(refused.value)


def test_an_episode_larger_than_the_whole_buffer_is_refused(tiny: LoadedVLM, sound: pb.Episode) -> None:
    held = check(
        model_admission(tiny, vocab_size=516, max_tokens=2048, temperature=TEMPERATURE, max_image_pixels=0,
                        buffer_bytes=1 << 20),
        sound,
    ).held_bytes  # fmt: skip
    small = model_admission(
        tiny, vocab_size=516, max_tokens=2048, temperature=TEMPERATURE, max_image_pixels=0, buffer_bytes=held
    )
    with pytest.raises(InvalidEpisode, match=r"more than the trainer's whole buffer .* --buffer-mb"):
        check(small, sound)


def test_an_image_over_the_bound_is_refused_before_it_is_decoded(
    admission: Admission, sound: pb.Episode
) -> None:
    message = pb.Episode()
    message.CopyFrom(sound)
    message.steps[0].image.height, message.steps[0].image.width = 1025, 1024
    message.steps[0].image.data = b"not even a PNG"
    with pytest.raises(
        InvalidEpisode, match="image declared 1025x1024; need positive sizes and at most 1048576"
    ):
        check(admission, message)


def test_image_tokens_are_checked_for_the_images_own_size(admission: Admission, tiny: LoadedVLM) -> None:
    """The expansion is computed per image size (once each): frames of other sizes pass too."""
    frame = np.zeros((48, 80, 3), np.uint8)
    [answer] = generate_batch(
        tiny, [frame], ["Go"], 4, TEMPERATURE, generator=torch.Generator().manual_seed(2)
    )
    check(admission, one_step_message(frame, answer, TEMPERATURE))
    assert admission.rules is not None and admission.rules.image_block(48, 80) == (IMAGE,) * 16
