"""``--action-choice likeliest``: the model's own distribution over the legal actions, after its CoT.

The paper reads the action from the text the model wrote (``--action-choice text``): an answer
that names no legal action plays a random one. With a large, changing vocabulary (ALFWorld's
admissible commands) a small model's misses are mostly near-copies: ``open cabinet 10`` facing
``cabinet 1``. Here the answer's chain of thought is kept and its action part is rewritten with
each legal action in turn (``"action": "<legal>"}``, the answer format the model was trained on);
every candidate is scored teacher-forced by the engine under the sampling distribution, and one is
drawn with probability proportional to the model's probability of its action tokens (near-greedy
at a low temperature). The chosen answer's tokens and their log-probs are what the trainer gets,
as the learner recomputes them, so PPO's ratio starts at 1.

An answer without an action key (no ``"action":`` at all) is left as it was: nothing in it marks
where its chain of thought ends, and its parse failure is reported (and penalised) as with ``text``.
With ``--prefill-answer`` the candidates are what follows the prefilled opening (`` "<legal>"}``
after ``{"action":``), as the model writes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from visact.agent.parsing import parse_continuation
from visact.model.options import ActionChoice
from visact.model.prompts import ACTION_KEY

if TYPE_CHECKING:
    from visact.agent.parsing import ParsedAction
    from visact.model.engines import Engine, SamplingSettings
    from visact.model.generation import ImageLike, Sample

__all__ = ["ActionChoice", "Choice", "ChoiceStats", "choose_likeliest"]
#: candidate answers scored in one forward pass
SCORE_BATCH = 32


@dataclass
class ChoiceStats:
    """How often the likeliest legal action differed from the one the text named (or the text named none)."""

    choices: int = 0
    changed: int = 0

    @property
    def changed_rate(self) -> float | None:
        return self.changed / self.choices if self.choices else None


@dataclass(frozen=True)
class Choice:
    """An answer rewritten to a legal action: its text, parse, tokens and their log-probs."""

    text: str
    parsed: ParsedAction
    generated_ids: list[int]
    log_probs: list[float]
    action_start: int  # first token of the action part


def action_part(action: str) -> str:
    """``"action": "<action>"}``: the end of an answer in the format the model is trained on."""
    return json.dumps({ACTION_KEY: action}, ensure_ascii=False)[1:]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens all ``sequences`` share."""
    shortest = min(len(s) for s in sequences)
    for index in range(shortest):
        token = sequences[0][index]
        if any(s[index] != token for s in sequences[1:]):
            return index
    return shortest


def choose_likeliest(
    engine: Engine,
    images: Sequence[ImageLike],
    legal_actions: Sequence[Sequence[str]],
    samples: Sequence[Sample],
    prefills: Sequence[str],
    parsed: Sequence[ParsedAction],
    settings: SamplingSettings,
    rng: np.random.Generator,
    stats: ChoiceStats,
) -> dict[int, Choice]:
    """The answers (by index) that have an action key and legal actions to choose from, each
    rewritten to the legal action drawn (see the module docstring); the others are not in it.
    ``prefills[i]`` is the opening of answer ``i`` given in its prompt, ``parsed[i]`` the parse of
    the whole answer (``prefills[i] + samples[i].text``)."""
    from visact.model.generation import token_char_spans

    tokenizer = engine.loaded.tokenizer
    stop_ids = engine.loaded.stop_ids
    # every candidate of every answer, scored in batches of SCORE_BATCH across answers
    owners: list[int] = []  # the answer each candidate rewrites
    candidates: list[list[int]] = []
    for index, (legal, sample, prefill, read) in enumerate(
        zip(legal_actions, samples, prefills, parsed, strict=True)
    ):
        start = read.action_char_start
        if start is None or not legal:
            continue
        before_action = (prefill + sample.text)[:start]
        end = [sample.generated_ids[-1]] if sample.finished else list(stop_ids[:1])
        for action in legal:
            whole = before_action + action_part(action)
            if not whole.startswith(prefill):
                raise ValueError(
                    f"the answer {whole!r} does not start with its prefilled opening {prefill!r}"
                )
            owners.append(index)
            candidates.append(
                list(tokenizer(whole[len(prefill) :], add_special_tokens=False)["input_ids"]) + end
            )
    scored: list[list[float]] = []
    for first in range(0, len(candidates), SCORE_BATCH):
        batch = range(first, min(first + SCORE_BATCH, len(candidates)))
        scored += engine.score(
            [images[owners[k]] for k in batch],
            [samples[owners[k]].prompt_ids for k in batch],
            [candidates[k] for k in batch],
            settings,
        )
    chosen: dict[int, Choice] = {}
    for index in sorted(set(owners)):
        mine = [k for k, owner in enumerate(owners) if owner == index]
        # the shared tokens have the same log-probs in every candidate: compare what differs
        shared = common_prefix_length([candidates[k] for k in mine])
        totals = np.array([sum(scored[k][shared:]) for k in mine], dtype=np.float64)
        weights = np.exp(totals - totals.max())
        pick = int(rng.choice(len(mine), p=weights / weights.sum()))
        ids = candidates[mine[pick]]
        generated, spans = token_char_spans(tokenizer, ids)
        text, read, action_start = parse_continuation(prefills[index], generated, spans, legal_actions[index])
        stats.choices += 1
        stats.changed += parsed[index].action != legal_actions[index][pick]
        chosen[index] = Choice(text, read, ids, scored[mine[pick]], action_start)
    return chosen
