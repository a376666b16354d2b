"""Points24: make 24 from four cards with + - * / and parentheses (RL4VLM's third game).

Rules, rewards, the length limit and the solvable-hand sampling are those of
:mod:`visact.env_server.games.points`. The four cards sit in a fixed 2x2 grid, read
row by row (the order of the "cards" fact).
"""

from __future__ import annotations

from visact.env_server.games.points import EQUALS, NUMBER_TOKENS, PointsGame


class Points24(PointsGame):
    """Four cards, target 24, tokens '1'..'10', '+', '-', '*', '/', '(', ')', '='."""

    name = "points24"
    card_boxes = (
        (14, 10, 144, 145),
        (156, 10, 286, 145),
        (14, 155, 144, 290),
        (156, 155, 286, 290),
    )
    card_count = 4
    target = 24
    operators = ("+", "-", "*", "/")
    allow_parens = True
    #: The longest solution needs 11 tokens, e.g. "(a+b)*(c+d)"; 16 leaves room for five illegal ones.
    default_max_formula_tokens = 16
    action_vocabulary = (*NUMBER_TOKENS, "+", "-", "*", "/", "(", ")", EQUALS)
    description = "Points24 (RL4VLM): read four cards off the image and build a formula equal to 24."
