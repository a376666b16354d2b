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

from visact.agent.action_choice import ActionChoice, ChoiceStats, choose_likeliest
from visact.agent.parsing import ParsedAction, parse_action, parse_continuation
from visact.env_server.core import ExpertMove
from visact.model.prompts import answer_keys, answer_prefill, build_messages, format_target

if TYPE_CHECKING:
    from visact.model.engines import Engine
    from visact.model.loading import LoadedVLM


@dataclass(frozen=True)
class PolicyInput:
    """One observation to answer."""

    image: np.ndarray
    task: str
    legal_actions: tuple[str, ...]
    fact_keys: tuple[str, ...] = ()
    expert: ExpertMove | None = None
    version: int | None = None  # answer with this weights version if the engine still has it (None: newest)


@dataclass
class Answer:
    """One answer: text, parsed, and (for a model) its tokens and sampling log-probs."""

    text: str  # the whole answer, its prefilled opening included
    parsed: ParsedAction
    prompt_ids: list[int] = field(default_factory=list)  # with the prefilled opening, if any
    generated_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    action_start: int = 0  # first generated token of the action part (len(generated_ids) if none)
    version: int = 0  # the weights version that answered


class Policy(Protocol):
    """Anything that answers observations."""

    name: str
    temperature: float

    @property
    def version(self) -> int:
        """The newest weights version answering (0 for non-learning policies)."""
        ...

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]: ...

    def prompt_ids(self, inputs: Sequence[PolicyInput]) -> list[list[int]]:
        """The prompt tokens for observations without answering them (for value bootstraps)."""
        ...


class VLMPolicy:
    """A vision-language model prompted for the paper's JSON chain of thought, sampled through an
    engine (``visact.model.engines``; a ``LoadedVLM`` is run by the transformers engine)."""

    def __init__(
        self,
        model: Engine | LoadedVLM,
        *,
        cot: bool = True,
        temperature: float = 0.2,
        max_new_tokens: int = 256,
        top_p: float = 1.0,
        seed: int | None = None,
        action_choice: ActionChoice = "text",
        prefill_answer: bool = False,
    ) -> None:
        from visact.model.loading import LoadedVLM

        if isinstance(model, LoadedVLM):
            from visact.model.engines.transformers_engine import TransformersEngine

            model = TransformersEngine(model, seed=seed)
        self.engine: Engine = model
        self.cot = cot
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.top_p = top_p
        self.name = f"vlm:{model.loaded.name_or_path}"
        #: "text": the action the answer names (the paper's); "likeliest": see visact.agent.action_choice
        self.action_choice = action_choice
        #: the answer's fixed opening ({"action":) is in the prompt; the model writes the rest
        self.prefill_answer = prefill_answer
        self.choice_stats = ChoiceStats()
        self._choice_rng = np.random.default_rng(seed)

    @property
    def loaded(self) -> LoadedVLM:
        return self.engine.loaded

    @property
    def version(self) -> int:
        """The newest weights version the engine holds."""
        return self.engine.version

    def messages(self, item: PolicyInput) -> list[dict[str, object]]:
        return build_messages(
            item.task, item.legal_actions, item.fact_keys, cot=self.cot, prefill=self.prefill_answer
        )

    def prefill(self, item: PolicyInput) -> str:
        """The answer's opening given in the prompt ("" without ``prefill_answer``)."""
        return answer_prefill(answer_keys(item.fact_keys, self.cot)[0]) if self.prefill_answer else ""

    def act(self, inputs: Sequence[PolicyInput]) -> list[Answer]:
        from visact.model.engines import SamplingSettings

        if not inputs:
            return []
        settings = SamplingSettings(self.max_new_tokens, self.temperature, self.top_p)
        samples = self.engine.sample(
            [item.image for item in inputs],
            [self.messages(item) for item in inputs],
            settings,
            [item.version for item in inputs],
        )
        answers = []
        prefills = [self.prefill(item) for item in inputs]
        for item, sample, prefill in zip(inputs, samples, prefills, strict=True):
            text, parsed, action_start = parse_continuation(
                prefill, sample.text, sample.token_spans, item.legal_actions
            )
            answers.append(
                Answer(
                    text=text,
                    parsed=parsed,
                    prompt_ids=sample.prompt_ids,
                    generated_ids=sample.generated_ids,
                    log_probs=sample.log_probs,
                    action_start=action_start,
                    version=sample.version,
                )
            )
        if self.action_choice == "likeliest":
            choices = choose_likeliest(
                self.engine,
                [item.image for item in inputs],
                [item.legal_actions for item in inputs],
                samples,
                prefills,
                [answer.parsed for answer in answers],
                settings,
                self._choice_rng,
                self.choice_stats,
            )
            for index, choice in choices.items():
                answer = answers[index]
                answer.text, answer.parsed, answer.action_start = (
                    choice.text,
                    choice.parsed,
                    choice.action_start,
                )
                answer.generated_ids, answer.log_probs = choice.generated_ids, choice.log_probs
        return answers

    def prompt_ids(self, inputs: Sequence[PolicyInput]) -> list[list[int]]:
        return self.engine.prompt_ids([i.image for i in inputs], [self.messages(i) for i in inputs])


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
