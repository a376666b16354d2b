"""Small environments the tests share (import them as ``tests.envs``, never from a conftest)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from visact.env_server.core import Env, ExpertMove, StepOutcome
from visact.env_server.errors import InvalidRequest


class CounterEnv(Env):
    """Count up to a target: '+' adds one, '-' subtracts one; reaching the target wins."""

    name = "counter"
    action_vocabulary = ("+", "-")
    fact_keys = ("count",)
    image_shape = (8, 6, 3)
    max_episode_steps = 6
    reset_option_names = ("target",)

    def __init__(self) -> None:
        self.count = 0
        self.target = 3
        self.seed_rng(0)

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        self.seed_rng(seed)
        target = (options or {}).get("target", int(self.np_random.integers(2, 5)))
        if not 1 <= int(target) <= 9:
            raise InvalidRequest(f"target must be 1..9, got {target}")
        self.target = int(target)
        self.count = 0

    def step(self, action: str) -> StepOutcome:
        self.count += 1 if action == "+" else -1
        won = self.count == self.target
        return StepOutcome(1.0 if won else 0.0, terminated=won, info={"success": won} if won else {})

    def render(self) -> np.ndarray:
        image = np.zeros(self.image_shape, dtype=np.uint8)
        image[..., 0] = self.count % 256
        image[..., 1] = self.target
        return image

    def task_text(self) -> str:
        return "Reach the target count."

    def expert(self) -> ExpertMove:
        action = "+" if self.count < self.target else "-"
        return ExpertMove(action, f"count {self.count}, target {self.target}", (("count", str(self.count)),))
