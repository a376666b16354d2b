"""What the trainer accepts: an episode the learner can score, checked before the hub takes it.

:meth:`Admission.episode` is the one entry point: it takes the wire message and returns the
checked episode, or raises :class:`InvalidEpisode` naming the first problem. It is plain,
synchronous and thread-safe, for a server to call off its event loop. On top of the structure
(``visact.wire.episodes``) it checks:

- the sampling temperature is the trainer's (the log-probs would not match the policy else);
- the episode fits the buffer's byte budget at all (else it could never be accepted);
- with the model's own tokenizer and processor (:class:`ModelRules`): each prompt holds exactly
  the image tokens the processor expands its image into, laid out as the processor lays them
  out (the model matches their count against its image features and fails the whole batch
  otherwise), and each answer holds no token that sampling never draws (the image token and the
  other special tokens that ``visact.model.generation.suppressed_token_ids`` masks; a stop token only
  as its last token).

Images are bounded by what the model's processor can use (:func:`default_max_image_pixels`).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from visact.trainer.hub import MAX_EPISODE_ID_CHARS
from visact.trainer.v1 import trainer_pb2 as pb
from visact.wire.episodes import (
    MAX_IMAGE_PIXELS,
    EpisodeData,
    InvalidEpisode,
    PngImage,
    decode_episode,
    in_image_thread,
)

if TYPE_CHECKING:  # the model side (torch, transformers) loads only where a model is
    from visact.model.loading import LoadedVLM

#: a frame may be this many times wider and taller than what the model's processor feeds the
#: model; beyond it, the processor's resize would throw away more than 99.6% of the pixels sent
IMAGE_DOWNSCALE = 16
#: the side of the blank frame that measures what the processor feeds the model
PROBE_SIDE = 1024
#: temperatures within this of the trainer's are the same (float32 on the wire)
TEMPERATURE_TOLERANCE = 1e-4
#: image sizes whose expansion into tokens is remembered (one processor call each)
IMAGE_BLOCKS_KEPT = 256


def processor_pixels(loaded: LoadedVLM) -> int:
    """How many pixels the model's processor feeds the model for one large frame (every crop,
    tile and temporal copy counted): what the model can see of any image."""
    from visact.model.generation import image_inputs

    probe = np.zeros((PROBE_SIDE, PROBE_SIDE, 3), np.uint8)
    tensors = image_inputs(loaded, [probe])  # the very processor call of sampling and learning
    floating = [t for t in tensors.values() if t.is_floating_point()]
    if not floating:
        raise ValueError(f"the processor of {loaded.name_or_path!r} gave no pixel tensor for an image")
    channels = 3
    return max(1, max(int(t.numel()) for t in floating) // channels)


def default_max_image_pixels(loaded: LoadedVLM) -> int:
    """The largest image a trainer of this model takes by default: ``IMAGE_DOWNSCALE`` times
    wider and taller than what the processor feeds the model, at most what the protocol allows
    (4096 x 4096). The tiny VLM sees 64 x 64: frames up to 1024 x 1024."""
    return min(MAX_IMAGE_PIXELS, IMAGE_DOWNSCALE**2 * processor_pixels(loaded))


class ModelRules:
    """What one model's tokenizer and processor allow in a prompt and in an answer.

    It keeps its own copy of the processor: a tokenizer is not safe to call from two threads at
    once, and the learner calls the original meanwhile."""

    def __init__(self, loaded: LoadedVLM, vocab_size: int) -> None:
        from visact.model.generation import image_token_ids, suppressed_token_ids

        processor = copy.deepcopy(loaded.processor)
        self._loaded = dataclasses.replace(loaded, processor=processor, tokenizer=processor.tokenizer)
        self.image_ids = frozenset(image_token_ids(loaded))
        self.never_sampled = frozenset(int(i) for i in suppressed_token_ids(loaded, vocab_size).tolist())
        self.stop_ids = frozenset(loaded.stop_ids)
        self._blocks: OrderedDict[tuple[int, int], tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.image_block(32, 32)  # fails now, not on the first episode, if the processor cannot

    def image_block(self, height: int, width: int) -> tuple[int, ...]:
        """The ids one image of this size becomes in a prompt, from its first image token to its
        last (the tokens the processor puts between them included)."""
        with self._lock:
            block = self._blocks.get((height, width))
            if block is None:
                block = in_image_thread(self._expand, height, width)  # its pixels stay in that thread
                self._blocks[(height, width)] = block
                while len(self._blocks) > IMAGE_BLOCKS_KEPT:
                    self._blocks.popitem(last=False)
            else:
                self._blocks.move_to_end((height, width))
            return block

    def _expand(self, height: int, width: int) -> tuple[int, ...]:
        from visact.model.generation import prompt_token_ids

        blank = np.zeros((height, width, 3), np.uint8)  # the token count depends on the size only
        ids = prompt_token_ids(self._loaded, [blank], [""])[0]
        at = [i for i, t in enumerate(ids) if t in self.image_ids]
        if not at:
            raise ValueError(f"the processor of {self._loaded.name_or_path!r} put no image token in a prompt")
        return tuple(int(t) for t in ids[at[0] : at[-1] + 1])

    def check_prompt(self, prompt_ids: Sequence[int], image: PngImage, what: str) -> None:
        block = self.image_block(image.height, image.width)
        found = [i for i, t in enumerate(prompt_ids) if t in self.image_ids]
        expected = sum(t in self.image_ids for t in block)
        start = found[0] if found else 0
        if len(found) == expected and tuple(prompt_ids[start : start + len(block)]) == block:
            return
        if len(found) != expected:
            problem = f"it holds {len(found)}"
        else:
            problem = f"it holds {expected} but not laid out as the processor lays them out"
        raise InvalidEpisode(
            f"{what}: the model's processor expands its {image.height}x{image.width} image into {expected} "
            f"image tokens (ids {sorted(self.image_ids)}); {problem}. The model would fail on it. Send "
            "the prompt ids as the processor made them (one image, its placeholder expanded)"
        )

    def check_answer(self, generated_ids: Sequence[int], what: str) -> None:
        last = len(generated_ids) - 1
        for position, token in enumerate(generated_ids):
            if token in self.never_sampled:
                raise InvalidEpisode(
                    f"{what}: token {token} ({self._name(token)}) at position {position} is a special token "
                    "that sampling never draws (the image token and other special tokens are masked); "
                    "send the answer's ids as sampled"
                )
            if token in self.stop_ids and position != last:
                raise InvalidEpisode(
                    f"{what}: stop token {token} at position {position} of {last + 1}; an answer ends at "
                    "its first stop token"
                )

    def _name(self, token: int) -> str:
        name = self._loaded.tokenizer.convert_ids_to_tokens(token)
        return repr(name[:40]) if isinstance(name, str) else "no token of the tokenizer"


@dataclasses.dataclass(frozen=True)
class Admission:
    """Everything an episode is checked against before the hub takes it."""

    vocab_size: int
    max_tokens: int
    #: the temperature agents must sample at (the trainer's --temperature)
    temperature: float
    max_image_pixels: int = MAX_IMAGE_PIXELS
    #: the buffer's byte budget: a larger episode could never be buffered
    max_episode_bytes: int = 512 << 20
    #: the model's own rules; None checks the structure only (unit tests without a model)
    rules: ModelRules | None = None

    def episode(self, message: pb.Episode, *, agent_id: str, latest_version: int) -> EpisodeData:
        """The checked episode; raises InvalidEpisode naming the first problem."""
        episode = decode_episode(
            message,
            agent_id=agent_id,
            latest_version=latest_version,
            vocab_size=self.vocab_size,
            max_tokens=self.max_tokens,
            max_image_pixels=self.max_image_pixels,
        )
        for index, step in enumerate(episode.steps):
            if abs(step.temperature - self.temperature) > TEMPERATURE_TOLERANCE:
                raise InvalidEpisode(
                    f"step {index} was sampled at temperature {step.temperature}, but this trainer asks for "
                    f"{self.temperature}: the log-probs would not match the policy it trains"
                )
        if self.rules is not None:
            for index, step in enumerate(episode.steps):
                self.rules.check_prompt(step.prompt_ids, step.image, f"step {index} prompt")
                self.rules.check_answer(step.generated_ids, f"step {index} answer")
            if episode.bootstrap_image is not None:
                self.rules.check_prompt(
                    episode.bootstrap_prompt_ids, episode.bootstrap_image, "bootstrap prompt"
                )
        held = episode.held_bytes + MAX_EPISODE_ID_CHARS
        if held > self.max_episode_bytes:
            raise InvalidEpisode(
                f"the episode holds {held} bytes (PNG files, 4 bytes a token, ~1 KiB a step), more than the "
                f"trainer's whole buffer ({self.max_episode_bytes} bytes, --buffer-mb); send shorter episodes "
                "or smaller images"
            )
        return episode


def model_admission(
    loaded: LoadedVLM,
    *,
    vocab_size: int,
    max_tokens: int,
    temperature: float,
    max_image_pixels: int,
    buffer_bytes: int,
) -> Admission:
    """The admission of a trainer of ``loaded``: its rules, and images bounded by
    ``max_image_pixels`` (0: :func:`default_max_image_pixels`)."""
    return Admission(
        vocab_size=vocab_size,
        max_tokens=max_tokens,
        temperature=temperature,
        max_image_pixels=max_image_pixels or default_max_image_pixels(loaded),
        max_episode_bytes=buffer_bytes,
        rules=ModelRules(loaded, vocab_size),
    )
