"""EZPoints: make 12 from two cards with '+' and '*' (RL4VLM's second game).

Rules, rewards, the length limit and the solvable-hand sampling are those of
:mod:`visact.env_server.games.points`. The two cards are drawn side by side at fixed positions.
"""

from __future__ import annotations

from visact.env_server.games.points import EQUALS, NUMBER_TOKENS, PointsGame


class EZPoints(PointsGame):
    """Two cards, target 12, tokens '1'..'10', '+', '*', '='."""

    name = "ezpoints"
    card_boxes = ((14, 50, 144, 250), (156, 50, 286, 250))
    card_count = 2
    target = 12
    operators = ("+", "*")
    allow_parens = False
    #: "a*b" needs 3 tokens; 6 leaves room for three illegal tokens.
    default_max_formula_tokens = 6
    action_vocabulary = (*NUMBER_TOKENS, "+", "*", EQUALS)
    description = "EZPoints (RL4VLM): read two cards off the image and build a formula equal to 12."
