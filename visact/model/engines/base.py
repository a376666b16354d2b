"""The engine interface the rollout samples through, whatever runs the model.

An engine takes a batch of (image, prompt) pairs, each optionally pinned to a weights version,
and returns one ``visact.model.generation.Sample`` per pair: the prompt's token ids as the model saw them,
the sampled token ids, their fp32 log-probs under the distribution actually sampled from (special
tokens masked, then temperature, then top-p: ``visact.model.generation.sampling_log_probs``, which the
learner's teacher-forced recompute uses too), the decoded text with each token's character span
(from which the policy finds the action's first token), and the version that answered.

Weights versions arrive as LoRA adapters (tensors + peft config, already checked against their
sha256). ``load_version`` validates one and makes it the newest; an engine keeps the last
``keep_versions`` of them, so that an episode begun under a version can finish under it (an engine
that holds one version at a time answers every request with its newest). ``check_lora`` refuses,
before any weights arrive, a LoRA layout the engine cannot apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from visact.model.generation import ImageLike, Prompt, Sample
    from visact.model.loading import LoadedVLM

#: the engines ``agent-client --engine`` takes
ENGINES = ("transformers", "vllm")


class EngineError(RuntimeError):
    """The engine cannot serve what was asked (a LoRA layout, a setting); the message says how to fix it."""


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample one batch."""

    max_new_tokens: int
    temperature: float  # <= 0: greedy, log-probs then at temperature 1
    top_p: float = 1.0


class Engine(Protocol):
    """What the rollout samples through (see the module docstring)."""

    name: str
    #: processor, tokenizer, family traits and stop ids of the model (prompts and parsing use them)
    loaded: LoadedVLM

    @property
    def version(self) -> int:
        """The newest weights version loaded (0: the base model, or the adapter it started with)."""
        ...

    @property
    def fingerprint(self) -> str:
        """sha256 of the base weights (``visact.model.loading.weights_fingerprint``), as the trainer checks it."""
        ...

    def sample(
        self,
        images: Sequence[ImageLike],
        prompts: Sequence[Prompt],
        settings: SamplingSettings,
        versions: Sequence[int | None] | None = None,
    ) -> list[Sample]:
        """One answer per (image, prompt); ``versions[i]`` pins answer ``i`` to a loaded version
        (None, or one no longer loaded: the newest). Each Sample says the version that answered."""
        ...

    def prompt_ids(self, images: Sequence[ImageLike], prompts: Sequence[Prompt]) -> list[list[int]]:
        """Each prompt's token ids as the model sees them, without sampling (value bootstraps)."""
        ...

    def score(
        self,
        images: Sequence[ImageLike],
        prompt_ids: Sequence[Sequence[int]],
        generated_ids: Sequence[Sequence[int]],
        settings: SamplingSettings,
    ) -> list[list[float]]:
        """Each given answer's per-token log-probs under the distribution ``sample`` draws from
        with ``settings`` (newest version), as the learner recomputes them; raises EngineError if
        the engine cannot (``agent-client --action-choice likeliest`` needs it)."""
        ...

    def check_lora(self, target_modules: Sequence[str], rank: int) -> None:
        """Raise EngineError if adapters of this layout (the trainer's) cannot be applied."""
        ...

    def keep_versions(self, count: int) -> None:
        """Keep the newest ``count`` versions loaded (the trainer's max_policy_lag + 1)."""
        ...

    def load_version(self, version: int, tensors: dict[str, torch.Tensor], lora: dict[str, Any]) -> None:
        """Validate and load a version's adapter and make it the newest; raises AdapterError (the
        engine then runs on as it was)."""
        ...
