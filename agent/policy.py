"""Policies: what turns observations into answers. The VLM, the oracle, and a random baseline.

Every policy answers a batch of observations with text, parsed by the same
parser; a VLM answer also carries its tokens and their sampling log-probs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from agent.parsing import ParsedAction, action_span_start_token, parse_action
from agent.prompts import build_messages, format_target
from env_server.core import ExpertMove

if TYPE_CHECKING:
    from agent.models import LoadedVLM


@dataclass(frozen=True)
class PolicyInput:
    """One observation to answer."""

    image: np.ndarray
    task: str
    legal_actions: tuple[str, ...]
    fact_keys: tuple[str, ...] = ()
    expert: ExpertMove | None = None


@dataclass
class Answer:
    """One answer: text, parsed, and (for a model) its tokens and sampling log-probs."""

    text: str
    parsed: ParsedAction
    prompt_ids: list[int] = field(default_factory=list)
    generated_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    action_start: int = 0  # first generated token of the action part (len(generated_ids) if none)


class Policy(Protocol):
    """Anything that answers observations."""

    name: str
    version: int  # the weights version answering (0 for non-learning policies)
    temperature: float

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]: ...

    def prompt_ids(self, inputs: Sequence[PolicyInput]) -> list[list[int]]:
        """The prompt tokens for observations without answering them (for value bootstraps)."""
        ...


class VLMPolicy:
    """A vision-language model prompted for the paper's JSON chain of thought."""

    def __init__(
        self,
        loaded: LoadedVLM,
        *,
        cot: bool = True,
        temperature: float = 0.2,
        max_new_tokens: int = 256,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> None:
        import torch

        self.loaded = loaded
        self.cot = cot
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.top_p = top_p
        self.version = 0
        self.name = f"vlm:{loaded.name_or_path}"
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def messages(self, item: PolicyInput) -> list[dict[str, object]]:
        return build_messages(item.task, item.legal_actions, item.fact_keys, cot=self.cot)

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]:
        from agent.generation import generate_batch

        if not inputs:
            return []
        samples = generate_batch(
            self.loaded,
            [item.image for item in inputs],
            [self.messages(item) for item in inputs],
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            generator=self._generator,
        )
        answers = []
        for item, sample in zip(inputs, samples, strict=True):
            parsed = parse_action(sample.text, item.legal_actions)
            answers.append(
                Answer(
                    text=sample.text,
                    parsed=parsed,
                    prompt_ids=sample.prompt_ids,
                    generated_ids=sample.generated_ids,
                    log_probs=sample.log_probs,
                    action_start=action_span_start_token(sample.token_spans, parsed.action_char_start),
                )
            )
        return answers

    def prompt_ids(self, inputs: Sequence[PolicyInput]) -> list[list[int]]:
        from agent.generation import prompt_token_ids

        return prompt_token_ids(self.loaded, [i.image for i in inputs], [self.messages(i) for i in inputs])


class OraclePolicy:
    """The environment's expert, answering in the same JSON format through the same parser.

    Needs sessions created with ``want_expert`` (servers with the "expert" capability).
    """

    name = "oracle"
    version = 0
    temperature = 1.0

    def __init__(self, cot: bool = True) -> None:
        self.cot = cot

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]:
        answers = []
        for item in inputs:
            if item.expert is None:
                raise RuntimeError(
                    "the oracle needs the environment's expert move, but the observation has none; "
                    "the server must offer the 'expert' capability"
                )
            move = item.expert
            text = format_target(move.facts, move.thoughts, move.action, cot=self.cot)
            answers.append(Answer(text=text, parsed=parse_action(text, item.legal_actions)))
        return answers

    def prompt_ids(self, inputs: Sequence[PolicyInput]) -> list[list[int]]:
        return [[] for _ in inputs]


class RandomPolicy:
    """Picks a legal action uniformly: the floor any learner must beat."""

    name = "random"
    version = 0
    temperature = 1.0

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]:
        answers = []
        for item in inputs:
            text = format_target((), "", self._rng.choice(item.legal_actions), cot=False)
            answers.append(Answer(text=text, parsed=parse_action(text, item.legal_actions)))
        return answers

    def prompt_ids(self, inputs: Sequence[PolicyInput]) -> list[list[int]]:
        return [[] for _ in inputs]
