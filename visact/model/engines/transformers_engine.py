"""The default engine: the model in this process, sampled by ``visact.model.generation.generate_batch``.

It holds one weights version at a time: a new version's LoRA tensors are written into the model's
adapter in one step (``visact.model.adapters.apply_adapter``, all or nothing), and every request is
answered by it. Any Hugging Face VLM, any LoRA layout (the vision tower's too).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from visact.model.adapters import apply_adapter, attach_lora, peft_config_from_dict
from visact.model.engines.base import SamplingSettings
from visact.model.generation import (
    ImageLike,
    Prompt,
    Sample,
    generate_batch,
    prompt_token_ids,
    teacher_forced_log_probs,
)
from visact.model.loading import LoadedVLM, weights_fingerprint


class TransformersEngine:
    """``LoadedVLM`` behind the engine interface."""

    name = "transformers"

    def __init__(self, loaded: LoadedVLM, *, seed: int | None = None) -> None:
        self.loaded = loaded
        self.version = 0
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None

    @functools.cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.loaded.model)

    def sample(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[Prompt],
        settings: SamplingSettings,
        versions: Sequence[int | None] | None = None,
    ) -> list[Sample]:
        samples = generate_batch(
            self.loaded,
            images,
            prompts,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            generator=self._generator,
        )
        for sample in samples:
            sample.version = self.version  # one version at a time: the newest answers every request
        return samples

    def prompt_ids(self, images: Sequence[ImageLike], prompts: Sequence[Prompt]) -> list[list[int]]:
        return prompt_token_ids(self.loaded, images, prompts)

    @torch.no_grad()
    def score(
        self,
        images: Sequence[ImageLike],
        prompt_ids: Sequence[Sequence[int]],
        generated_ids: Sequence[Sequence[int]],
        settings: SamplingSettings,
    ) -> list[list[float]]:
        forced = teacher_forced_log_probs(
            self.loaded,
            images,
            prompt_ids,
            generated_ids,
            temperature=settings.temperature if settings.temperature > 0 else 1.0,
            top_p=settings.top_p,
        )
        return [
            row[: len(ids)].tolist()
            for row, ids in zip(forced.log_probs.float().cpu(), generated_ids, strict=True)
        ]

    def check_lora(self, target_modules: Sequence[str], rank: int) -> None:
        """Any layout: peft adapts every linear layer, the vision tower's too."""

    def keep_versions(self, count: int) -> None:
        """One version at a time (the rollout's requests all go to the newest)."""

    def load_version(self, version: int, tensors: dict[str, torch.Tensor], lora: dict[str, Any]) -> None:
        loaded = self.loaded
        if not hasattr(loaded.model, "peft_config"):
            loaded.model = attach_lora(loaded.model, peft_config_from_dict(lora))
            loaded.model.eval()
        apply_adapter(loaded.model, tensors)  # checks every name and shape before it writes
        self.version = version
