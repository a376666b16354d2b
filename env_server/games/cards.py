"""Playing cards shared by the card games: ranks, suits, values, and seeded drawing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from visact.env_server.errors import InvalidRequest

RANKS: tuple[str, ...] = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
SUITS: tuple[str, ...] = ("S", "H", "D", "C")
FACE_RANKS = frozenset({"J", "Q", "K"})


@dataclass(frozen=True)
class Card:
    """One playing card, e.g. ``Card("Q", "H")``."""

    rank: str
    suit: str

    @property
    def value(self) -> int:
        """Points value: A is 1, J/Q/K are 10, others their number."""
        if self.rank == "A":
            return 1
        if self.rank in FACE_RANKS:
            return 10
        return int(self.rank)


STANDARD_DECK: tuple[Card, ...] = tuple(Card(rank, suit) for suit in SUITS for rank in RANKS)


def draw_distinct(rng: np.random.Generator, count: int) -> tuple[Card, ...]:
    """``count`` different cards from one standard 52-card deck."""
    picks = rng.choice(len(STANDARD_DECK), size=count, replace=False)
    return tuple(STANDARD_DECK[int(i)] for i in picks)


def draw_with_replacement(rng: np.random.Generator) -> Card:
    """One card from an infinite deck (each of the 52 cards equally likely)."""
    return STANDARD_DECK[int(rng.integers(len(STANDARD_DECK)))]


def values_text(cards: Sequence[Card]) -> str:
    """Card values in the fact format of the points games, e.g. ``"[5, 10]"``."""
    return "[" + ", ".join(str(card.value) for card in cards) + "]"


def ranks_text(cards: Sequence[Card]) -> str:
    """Card ranks as shown on the image, e.g. ``"[A, 7]"`` (Blackjack's fact format)."""
    return "[" + ", ".join(card.rank for card in cards) + "]"


def parse_cards(value: object, option: str) -> tuple[Card, ...]:
    """Cards from a reset option: a list of ranks (``"A"``, ``"10"``, ``"K"``; ints 1-10 accepted).

    Suits follow the list position (spades, hearts, diamonds, clubs, ...) so the
    result is deterministic. Raises :class:`InvalidRequest` with the accepted form.
    """
    if not isinstance(value, list | tuple) or not value:
        raise InvalidRequest(f"reset option {option!r} must be a non-empty list of ranks, got {value!r}")
    cards = []
    for position, item in enumerate(value):
        rank = _rank_of(item)
        if rank is None:
            raise InvalidRequest(
                f"reset option {option!r}: {item!r} is not a card rank; use one of {', '.join(RANKS)}"
            )
        cards.append(Card(rank, SUITS[position % len(SUITS)]))
    return tuple(cards)


def _rank_of(item: object) -> str | None:
    if isinstance(item, bool):
        return None
    if isinstance(item, int | float) and float(item).is_integer() and 1 <= int(item) <= 10:
        return "A" if int(item) == 1 else str(int(item))
    if isinstance(item, str) and item.strip().upper() in RANKS:
        return item.strip().upper()
    return None
