"""The shared rules of the points games (EZPoints, Points24): build a formula from the cards.

The image shows the cards (J, Q, K count 10, A counts 1); the task text gives the rules
and the formula built so far. Each step appends one token; "=" evaluates the formula.

Rewards (RL4VLM's scheme):
- "=": +10 if the formula equals the target and uses every card, else -1; the episode ends.
  An incomplete or malformed formula, or a division by zero, also gives -1.
- An illegal token gives -1 and the formula grows by a blank (the text does not change,
  but the blank counts toward the length limit); ``info["illegal"]`` says why. Illegal:
  a number not on any card, or already used as often as it appears on the cards; and any
  token after which the formula can no longer be completed into a well-formed one (an
  operator first or after an operator, two numbers in a row, an unmatched ")", ...).
- A legal token gives 0.

Length limit: the formula holds at most ``max_formula_tokens`` tokens, blanks included;
appending to a full formula truncates the episode with -1. The servicer's
``max_episode_steps`` is one more (room for the final "=").

Hands: by default only hands with a solution are dealt (rejection sampling over
distinct cards of one 52-card deck); ``solvable_only=False`` deals any hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from visact.env_server import formula, render
from visact.env_server.core import Env, ExpertMove, StepOutcome
from visact.env_server.errors import InvalidAction, InvalidRequest, ResetNeeded
from visact.env_server.games.cards import Card, draw_distinct, parse_cards, values_text
from visact.env_server.games.options import bool_option, check_names

NUMBER_TOKENS: tuple[str, ...] = tuple(str(n) for n in range(1, 11))
EQUALS = "="
BLANK = ""  # what an illegal token leaves in the formula
WIN_REWARD, LOSE_REWARD, ILLEGAL_REWARD = 10.0, -1.0, -1.0
MAX_DEAL_ATTEMPTS = 10_000
IMAGE_SIZE = 300


@render.frame_cache(maxsize=8192)
def cards_frame(layout: tuple[tuple[Card, ...], tuple[render.Box, ...]]) -> np.ndarray:
    """The cards, each in its box, big on green felt."""
    cards, boxes = layout
    image = render.canvas((IMAGE_SIZE, IMAGE_SIZE), render.FELT)
    for card, box in zip(cards, boxes, strict=True):
        render.paste_card(image, box, card.rank, card.suit)
    return render.frozen_array(image)


class PointsGame(Env):
    """Base of EZPoints and Points24; subclasses set the class variables."""

    card_count: ClassVar[int]
    #: where each card is drawn on the IMAGE_SIZE square frame, in the order of the "cards" fact
    card_boxes: ClassVar[tuple[render.Box, ...]]
    target: ClassVar[int]
    operators: ClassVar[tuple[str, ...]]
    allow_parens: ClassVar[bool]
    default_max_formula_tokens: ClassVar[int]
    fact_keys = ("cards", "formula")
    reset_option_names = ("cards", "solvable_only")

    def __init__(self, solvable_only: bool = True, max_formula_tokens: int | None = None) -> None:
        self.solvable_only = solvable_only
        self.max_formula_tokens = max_formula_tokens or self.default_max_formula_tokens
        self.max_episode_steps = self.max_formula_tokens + 1
        self.cards: tuple[Card, ...] = ()
        self.tokens: list[str] = []
        self.unused: Counter[int] = Counter()
        self.running = False
        self.seed_rng(None)

    # ------------------------------------------------------------ episode

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        """Deal a hand (a solvable one unless ``solvable_only`` is off), or use option ``cards``."""
        given = check_names(self.name, options, self.reset_option_names)
        solvable_only = bool_option(given, "solvable_only")
        cards = parse_cards(given["cards"], "cards") if "cards" in given else None
        if cards is not None and len(cards) != self.card_count:
            raise InvalidRequest(f"reset option 'cards' must list {self.card_count} ranks, got {len(cards)}")
        if seed is not None:  # no seed: continue the current stream (Gymnasium convention)
            self.seed_rng(seed)
        if cards is None:
            cards = self._deal(self.solvable_only if solvable_only is None else solvable_only)
        self.cards = cards
        self.tokens = []
        self.unused = Counter(card.value for card in cards)
        self.running = True

    def _deal(self, solvable_only: bool) -> tuple[Card, ...]:
        for _ in range(MAX_DEAL_ATTEMPTS):
            cards = draw_distinct(self.np_random, self.card_count)
            if not solvable_only or self.has_solution(cards):
                return cards
        raise RuntimeError(f"{self.name}: no solvable hand in {MAX_DEAL_ATTEMPTS} deals")  # pragma: no cover

    def has_solution(self, cards: tuple[Card, ...]) -> bool:
        """True when the cards can make the target with this game's operators."""
        values = [card.value for card in cards]
        return formula.is_solvable(values, self.target, self.operators, self.allow_parens)

    def step(self, action: str) -> StepOutcome:
        """Append a token, or evaluate on "="; see the module docstring."""
        if action not in self.action_vocabulary:
            raise InvalidAction(f"{self.name} accepts one of {list(self.action_vocabulary)}, got {action!r}")
        if not self.running:
            raise ResetNeeded(f"the {self.name} episode is over (or never started); call reset")
        if action == EQUALS:
            return self._evaluate()
        if len(self.tokens) >= self.max_formula_tokens:
            self.running = False
            info = {
                "success": False,
                "illegal": f"the formula already holds {self.max_formula_tokens} tokens",
            }
            return StepOutcome(ILLEGAL_REWARD, truncated=True, info=info)
        problem = self._illegal_reason(action)
        if problem is not None:
            self.tokens.append(BLANK)
            return StepOutcome(ILLEGAL_REWARD, info={"illegal": problem})
        self.tokens.append(action)
        if formula.is_number(action):
            self.unused[int(action)] -= 1
        return StepOutcome(0.0)

    def _illegal_reason(self, token: str) -> str | None:
        if formula.is_number(token) and self.unused[int(token)] <= 0:
            if int(token) in {card.value for card in self.cards}:
                return f"every card of value {token} is already used"
            return f"no card has value {token}"
        if not formula.can_extend(self.written(), token):
            return f"{token!r} cannot follow the formula {self.formula_text()!r}"
        return None

    def _evaluate(self) -> StepOutcome:
        self.running = False
        result = formula.evaluate(self.written())
        all_used = sum(self.unused.values()) == 0
        if isinstance(result, formula.Value):
            outcome = str(result.value)
            success = result.value == self.target and all_used
        else:
            outcome = result.reason if isinstance(result, formula.Malformed) else "division by zero"
            success = False
        info = {"success": success, "result": outcome, "all_cards_used": all_used}
        return StepOutcome(WIN_REWARD if success else LOSE_REWARD, terminated=True, info=info)

    # ------------------------------------------------------------ observation

    def render(self) -> np.ndarray:
        return cards_frame((self.cards, self.card_boxes))

    def written(self) -> list[str]:
        """The formula's tokens without blanks."""
        return [token for token in self.tokens if token != BLANK]

    def formula_text(self) -> str:
        """The formula as text, e.g. ``"(3+5)*3"`` (blanks show as nothing)."""
        return "".join(self.tokens)

    def task_text(self) -> str:
        operators = ", ".join(f"'{op}'" for op in self.operators)
        parens = " You may use '(' and ')'." if self.allow_parens else ""
        current = self.formula_text()
        state = f"The current formula is '{current}'." if current else "The current formula is empty."
        return (
            f"You are playing {type(self).__name__}. The image shows {self.card_count} playing cards; "
            "J, Q and K count as 10 and A counts as 1. Build a formula that uses each card's value "
            f"exactly once and equals {self.target}. Each action appends one token to the formula: a "
            f"number from '1' to '10' or an operator ({operators}).{parens} The action '=' ends the "
            f"game and checks the formula. {state}"
        )

    # ------------------------------------------------------------ oracle

    def expert(self) -> ExpertMove:
        """Follow the first known solution that extends the formula; '=' when it is complete or hopeless."""
        written = self.written()
        facts = (("cards", values_text(self.cards)), ("formula", self.formula_text()))
        cards = values_text(self.cards)
        room = self.max_formula_tokens - len(self.tokens)
        plan = self._plan(written, room)
        if plan is None:
            thoughts = (
                f"The cards are {cards}. The formula '{self.formula_text()}' can no longer make "
                f"{self.target}, so I end the game."
            )
            return ExpertMove(EQUALS, thoughts, facts)
        plan_text = "".join(plan)
        if len(plan) == len(written):
            thoughts = f"The formula {plan_text} equals {self.target} and uses every card, so I check it."
            return ExpertMove(EQUALS, thoughts, facts)
        token = plan[len(written)]
        where = f"The formula is '{self.formula_text()}' so far" if written else "The formula is empty"
        thoughts = f"The cards are {cards}, and {plan_text} = {self.target}. {where}, so I append '{token}'."
        return ExpertMove(token, thoughts, facts)

    def _plan(self, written: list[str], room: int) -> tuple[str, ...] | None:
        values = [card.value for card in self.cards]
        for candidate in formula.solutions(values, self.target, self.operators, self.allow_parens):
            fits = len(candidate) - len(written) <= room
            if fits and list(candidate[: len(written)]) == written:
                return candidate
        return None
