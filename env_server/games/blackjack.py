"""Blackjack with a pixel observation (RL4VLM's fourth game), on Gymnasium's rules.

Rules, mirrored from ``gymnasium.envs.toy_text.blackjack`` (written anew, not imported):
- infinite deck (cards drawn with replacement); A counts 1 or 11, J/Q/K count 10;
- reset deals the dealer two cards (one face up, one face down), then the player two;
- "hit" draws a card; above 21 the player busts: -1, the episode ends. There is no
  automatic stop at 21;
- "stand" ends the episode: the dealer draws while below 17 (an ace counts 11 when that
  does not bust, so the dealer stands on soft 17), then +1 win, -1 loss, 0 draw,
  comparing totals, a busted dealer counting 0;
- a natural (A + 10-valued card) that wins pays +1, or +1.5 with ``natural=True``;
  with ``sab=True`` (Sutton & Barto) a player's natural wins +1 unless the dealer also
  has one, and ``natural`` is ignored. Both are constructor arguments and reset options.

``info["success"]`` is True for a win. The image shows the dealer's up card and a
face-down card on top, the player's cards below; when the episode ends the dealer's
hand is revealed. The oracle is the standard hit/stand basic strategy (no doubling or
splitting in this game) for a dealer who stands on soft 17.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from visact.env_server import render
from visact.env_server.core import Env, ExpertMove, StepOutcome
from visact.env_server.errors import InvalidAction, InvalidRequest, ResetNeeded
from visact.env_server.games.cards import Card, draw_with_replacement, parse_cards, ranks_text
from visact.env_server.games.options import bool_option, check_names

HIT, STAND = "hit", "stand"
DEALER_STANDS_AT = 17

# ---------------------------------------------------------------- hands


def hand_total(cards: Sequence[Card]) -> tuple[int, bool]:
    """The best total of a hand and whether it is soft (an ace counted as 11)."""
    total = sum(card.value for card in cards)
    if any(card.rank == "A" for card in cards) and total + 10 <= 21:
        return total + 10, True
    return total, False


def score(cards: Sequence[Card]) -> int:
    """The hand's total, or 0 when it is bust."""
    total, _ = hand_total(cards)
    return 0 if total > 21 else total


def is_natural(cards: Sequence[Card]) -> bool:
    """An ace and a 10-valued card as the first two cards."""
    return sorted(card.value for card in cards) == [1, 10]


def basic_strategy(total: int, soft: bool, dealer_up: Card) -> str:
    """Hit or stand, by the standard basic strategy for a dealer standing on soft 17."""
    dealer = 11 if dealer_up.rank == "A" else dealer_up.value
    if soft:
        if total >= 19:
            return STAND
        if total == 18:
            return STAND if dealer <= 8 else HIT
        return HIT
    if total >= 17:
        return STAND
    if total >= 13:
        return STAND if dealer <= 6 else HIT
    if total == 12:
        return STAND if 4 <= dealer <= 6 else HIT
    return HIT


# ---------------------------------------------------------------- drawing

IMAGE_SIZE = 300
LABEL_SIZE = 26
DEALER_LABEL_Y, PLAYER_LABEL_Y = 20, 165
DEALER_ROW, PLAYER_ROW = (38, 146), (183, 293)  # top, bottom of each row of cards
ROW_LEFT, ROW_RIGHT = 10, 290
CARD_WIDTH, CARD_GAP = 86, 11  # three cards fit at full width; more are narrowed
FULL_WIDTH_CARDS = 3


def card_boxes(count: int, row: tuple[int, int]) -> list[render.Box]:
    """Fixed slots: up to three cards always in the same places; four or more share the row."""
    top, bottom = row
    width, gap = CARD_WIDTH, CARD_GAP
    if count > FULL_WIDTH_CARDS:
        gap = 6
        width = (ROW_RIGHT - ROW_LEFT - (count - 1) * gap) // count
    step = width + gap
    return [(ROW_LEFT + i * step, top, ROW_LEFT + i * step + width, bottom) for i in range(count)]


@lru_cache(maxsize=1)
def _table() -> Image.Image:
    """The static part: felt and the "Dealer" / "Player" labels."""
    image = render.canvas((IMAGE_SIZE, IMAGE_SIZE), render.FELT)
    draw = ImageDraw.Draw(image)
    render.text(draw, (ROW_LEFT, DEALER_LABEL_Y), "Dealer", LABEL_SIZE, render.LIGHT_TEXT, anchor="lm")
    render.text(draw, (ROW_LEFT, PLAYER_LABEL_Y), "Player", LABEL_SIZE, render.LIGHT_TEXT, anchor="lm")
    return image


@render.frame_cache(maxsize=8192)
def _frame(state: tuple[tuple[Card, ...], tuple[Card, ...], bool]) -> np.ndarray:
    """(dealer cards, player cards, revealed): the dealer's hole card is face down until revealed."""
    dealer, player, revealed = state
    image = _table().copy()
    dealer_shown = dealer if revealed else dealer[:1]
    dealer_boxes = card_boxes(max(len(dealer_shown), 2), DEALER_ROW)
    for card, box in zip(dealer_shown, dealer_boxes, strict=False):
        render.paste_card(image, box, card.rank, card.suit)
    if not revealed:
        render.paste_card_back(image, dealer_boxes[1])
    for card, box in zip(player, card_boxes(len(player), PLAYER_ROW), strict=True):
        render.paste_card(image, box, card.rank, card.suit)
    return render.frozen_array(image)


# ---------------------------------------------------------------- the game


class Blackjack(Env):
    """Beat the dealer without going over 21: "hit" for a card, "stand" to let the dealer play."""

    name = "blackjack"
    action_vocabulary = (STAND, HIT)
    fact_keys = ("dealer card", "player cards", "player total")
    reset_option_names = ("dealer_cards", "player_cards", "natural", "sab")
    description = (
        "Blackjack (RL4VLM, Gymnasium rules): read the dealer's up card and your cards; 'stand' or 'hit'."
    )

    def __init__(self, natural: bool = False, sab: bool = False) -> None:
        self.natural_default, self.sab_default = natural, sab
        self.natural, self.sab = natural, sab
        self.dealer: list[Card] = []
        self.player: list[Card] = []
        self.running = False
        self.seed_rng(None)

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        """Deal two cards to the dealer, then two to the player (options may fix either hand)."""
        given = check_names(self.name, options, self.reset_option_names)
        dealer = self._hand_option(given, "dealer_cards")
        player = self._hand_option(given, "player_cards")
        natural, sab = bool_option(given, "natural"), bool_option(given, "sab")
        if seed is not None:  # no seed: continue the current stream (Gymnasium convention)
            self.seed_rng(seed)
        self.natural = self.natural_default if natural is None else natural
        self.sab = self.sab_default if sab is None else sab
        self.dealer = list(dealer or (self._draw(), self._draw()))
        self.player = list(player or (self._draw(), self._draw()))
        self.running = True

    @staticmethod
    def _hand_option(given: Mapping[str, Any], option: str) -> tuple[Card, ...] | None:
        if option not in given:
            return None
        cards = parse_cards(given[option], option)
        if len(cards) != 2:
            raise InvalidRequest(f"reset option {option!r} must list exactly 2 ranks, got {len(cards)}")
        return cards

    def _draw(self) -> Card:
        return draw_with_replacement(self.np_random)

    def step(self, action: str) -> StepOutcome:
        """Hit or stand; see the module docstring for the rules."""
        if action not in self.action_vocabulary:
            raise InvalidAction(f"Blackjack accepts 'stand' or 'hit', got {action!r}")
        if not self.running:
            raise ResetNeeded("the Blackjack episode is over (or never started); call reset")
        if action == HIT:
            self.player.append(self._draw())
            if score(self.player) == 0:
                return self._finish(-1.0, "player bust")
            return StepOutcome(0.0)
        while hand_total(self.dealer)[0] < DEALER_STANDS_AT:
            self.dealer.append(self._draw())
        return self._finish(self._settle(), "stand")

    def _settle(self) -> float:
        player, dealer = score(self.player), score(self.dealer)
        reward = float(player > dealer) - float(player < dealer)
        if self.sab and is_natural(self.player) and not is_natural(self.dealer):
            return 1.0
        if not self.sab and self.natural and is_natural(self.player) and reward == 1.0:
            return 1.5
        return reward

    def _finish(self, reward: float, how: str) -> StepOutcome:
        self.running = False
        info = {
            "success": reward > 0,
            "how": how,
            "player_total": hand_total(self.player)[0],
            "dealer_total": hand_total(self.dealer)[0],
        }
        return StepOutcome(reward, terminated=True, info=info)

    def render(self) -> np.ndarray:
        return _frame((tuple(self.dealer), tuple(self.player), not self.running))

    def task_text(self) -> str:
        return (
            "You are playing Blackjack. The image shows the dealer's cards on top (one face up, one "
            "face down) and your cards below. Aces count 1 or 11, J, Q and K count 10. Your goal is to "
            "beat the dealer by getting a total closer to 21 without going over. The action 'hit' takes "
            "another card; 'stand' keeps your total and lets the dealer play. Choose 'stand' or 'hit'."
        )

    def expert(self) -> ExpertMove:
        """Basic strategy for hit/stand."""
        total, soft = hand_total(self.player)
        up = self.dealer[0]
        action = basic_strategy(total, soft, up)
        kind = "soft" if soft else "hard"
        thoughts = (
            f"The dealer shows {up.rank} and my cards {ranks_text(self.player)} make a {kind} {total}. "
            f"Basic strategy says {action} with a {kind} {total} against a dealer {up.rank}, so I {action}."
        )
        facts = (
            ("dealer card", up.rank),
            ("player cards", ranks_text(self.player)),
            ("player total", str(total)),
        )
        return ExpertMove(action, thoughts, facts)
