"""NumberLine: move the current number to the target with "-" and "+" (RL4VLM's first game).

Numbers are 0..max_position (5). The image shows "Target: t" and "Current: c" at
fixed positions; the text only gives the rules. Reward 1 on reaching the target (the
episode ends, success), -1 for a move that does not get closer (bumping a bound
included: the number is clamped), 0 otherwise. Truncated after 2*max_position steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageDraw

from visact.env_server import render
from visact.env_server.core import Env, ExpertMove, StepOutcome
from visact.env_server.errors import InvalidAction, InvalidRequest, ResetNeeded
from visact.env_server.games.options import check_names, int_option

IMAGE_SIZE = 300
LABEL_SIZE = 46
NUMBER_BOX_WIDTH, NUMBER_BOX_HEIGHT = 90, 70  # the largest a number may be drawn
LABEL_X = 14  # left edge of "Target:" / "Current:"
NUMBER_X = 248  # centre of the number, the same for every state
TARGET_Y, CURRENT_Y = 85, 215  # vertical centres of the two lines


@lru_cache(maxsize=1)
def _labels() -> Image.Image:
    """The static part: white background with "Target:" and "Current:"."""
    image = render.canvas((IMAGE_SIZE, IMAGE_SIZE), render.WHITE)
    draw = ImageDraw.Draw(image)
    render.text(draw, (LABEL_X, TARGET_Y), "Target:", LABEL_SIZE, render.BLACK, anchor="lm")
    render.text(draw, (LABEL_X, CURRENT_Y), "Current:", LABEL_SIZE, render.BLACK, anchor="lm")
    return image


@render.frame_cache(maxsize=1024)
def _frame(state: tuple[int, int]) -> np.ndarray:
    """The frame for (target, current): each number centred at a fixed place."""
    target, current = state
    image = _labels().copy()
    draw = ImageDraw.Draw(image)
    for y, number in ((TARGET_Y, target), (CURRENT_Y, current)):
        mask = render.glyph_mask(str(number), NUMBER_BOX_WIDTH, NUMBER_BOX_HEIGHT)
        draw.bitmap((NUMBER_X - mask.width // 2, y - mask.height // 2), mask, fill=render.BLACK)
    return render.frozen_array(image)


class NumberLine(Env):
    """Reach the target number from the current one, one step of -1 or +1 at a time."""

    name = "numberline"
    action_vocabulary = ("-", "+")
    fact_keys = ("current number", "target number")
    reset_option_names = ("target", "start")
    description = (
        "NumberLine (RL4VLM): read 'Target' and 'Current' off the image; '-'/'+' move the current number."
    )

    default_max_position: ClassVar[int] = 5

    def __init__(self, max_position: int = default_max_position) -> None:
        if max_position < 1:
            raise ValueError(f"max_position must be at least 1, got {max_position}")
        self.max_position = max_position
        self.max_episode_steps = 2 * max_position
        self.target = 0
        self.current = 0
        self.steps = 0
        self.running = False
        self.seed_rng(None)

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        """Start with target != start, each drawn uniformly unless given as options."""
        given = check_names(self.name, options, self.reset_option_names)
        target = int_option(given, "target", 0, self.max_position)
        start = int_option(given, "start", 0, self.max_position)
        if target is not None and target == start:
            raise InvalidRequest(f"reset options 'target' and 'start' must differ, both are {target}")
        if seed is not None:  # no seed: continue the current stream (Gymnasium convention)
            self.seed_rng(seed)
        if target is None:
            target = self._draw_except(start)
        if start is None:
            start = self._draw_except(target)
        self.target, self.current, self.steps, self.running = target, start, 0, True

    def _draw_except(self, excluded: int | None) -> int:
        choices = [n for n in range(self.max_position + 1) if n != excluded]
        return choices[int(self.np_random.integers(len(choices)))]

    def step(self, action: str) -> StepOutcome:
        """Move by one; see the module docstring for the rewards."""
        if action not in self.action_vocabulary:
            raise InvalidAction(f"NumberLine accepts '-' or '+', got {action!r}")
        if not self.running:
            raise ResetNeeded("the NumberLine episode is over (or never started); call reset")
        before = abs(self.current - self.target)
        moved = self.current + (1 if action == "+" else -1)
        self.current = min(max(moved, 0), self.max_position)
        self.steps += 1
        after = abs(self.current - self.target)
        if after == 0:
            self.running = False
            return StepOutcome(1.0, terminated=True, info={"success": True})
        reward = 0.0 if after < before else -1.0
        if self.steps >= self.max_episode_steps:
            self.running = False
            return StepOutcome(reward, truncated=True, info={"success": False})
        return StepOutcome(reward)

    def render(self) -> np.ndarray:
        return _frame((self.target, self.current))

    def task_text(self) -> str:
        return (
            "You are playing NumberLine. The image shows a target number and a current number, "
            f"each between 0 and {self.max_position}. Your goal is to make the current number equal "
            "to the target number. The action '+' adds one to the current number and '-' subtracts one. "
            "Choose '-' or '+'."
        )

    def expert(self) -> ExpertMove:
        """Step toward the target."""
        current, target = self.current, self.target
        if current < target:
            action, thoughts = (
                "+",
                f"The current number {current} is less than the target {target}, so I should increase it.",
            )
        elif current > target:
            action, thoughts = (
                "-",
                f"The current number {current} is greater than the target {target}, so I should decrease it.",
            )
        else:
            action, thoughts = "+", f"The current number {current} already equals the target {target}."
        facts = (("current number", str(current)), ("target number", str(target)))
        return ExpertMove(action, thoughts, facts)
