"""Gymnasium registration of the built-in games as ``visact/<Name>-v0``.

``import env_server.games`` calls :func:`register_gym_envs`, after which e.g.
``gymnasium.make("visact/NumberLine-v0")`` works. :class:`AsGymnasium` wraps any of our
:class:`~visact.env_server.core.Env` objects:

- observation: ``{"image": (H, W, 3) uint8, "task": str}``;
- action: an index into the game's ``action_vocabulary`` (``Discrete``), or the action
  string itself;
- info: the step's info plus ``legal_actions`` and, when the game has an oracle,
  ``expert_action``, ``expert_thoughts`` and ``expert_facts`` (a dict) for the new state.

Keyword arguments of ``gymnasium.make`` other than ``render_mode`` go to the game's
constructor, e.g. ``gymnasium.make("visact/Blackjack-v0", natural=True)``.
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from visact.env_server.core import Env, StepOutcome
from visact.env_server.errors import InvalidAction

#: Gymnasium id -> built-in game name.
GYM_IDS: dict[str, str] = {
    "visact/NumberLine-v0": "numberline",
    "visact/EZPoints-v0": "ezpoints",
    "visact/Points24-v0": "points24",
    "visact/Blackjack-v0": "blackjack",
}
TASK_MAX_LENGTH = 4096
TASK_CHARSET = frozenset(string.printable)


class AsGymnasium(gymnasium.Env[dict[str, Any], Any]):
    """A ``gymnasium.Env`` over one of our games (by name, or an instance)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}  # noqa: RUF012 - gymnasium's convention

    def __init__(self, game: str | Env, render_mode: str | None = None, **game_kwargs: Any) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.game = _build(game, game_kwargs) if isinstance(game, str) else game
        self.render_mode = render_mode
        self.vocabulary = tuple(self.game.action_vocabulary)
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, shape=self.game.image_shape, dtype=np.uint8),
                "task": spaces.Text(TASK_MAX_LENGTH, min_length=0, charset=TASK_CHARSET),
            }
        )
        self.action_space = spaces.Discrete(len(self.vocabulary))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.game.reset(seed=seed, options=options)
        return self._observation(), self._info({})

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        outcome: StepOutcome = self.game.step(self.action_string(action))
        observation = self._observation()
        done = outcome.terminated or outcome.truncated
        info = self._info(outcome.info, with_expert=not done)
        return observation, float(outcome.reward), outcome.terminated, outcome.truncated, info

    def action_string(self, action: Any) -> str:
        """The action string for an index into the vocabulary or a string."""
        if isinstance(action, str):
            return action
        if isinstance(action, int | np.integer) and 0 <= int(action) < len(self.vocabulary):
            return self.vocabulary[int(action)]
        raise InvalidAction(
            f"action must be an index in 0..{len(self.vocabulary) - 1} or one of {list(self.vocabulary)}, "
            f"got {action!r}"
        )

    def render(self) -> np.ndarray | None:
        return self.game.render().copy() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.game.close()

    def _observation(self) -> dict[str, Any]:
        # a copy: Gymnasium users own (and may write into) the observations they get
        return {"image": self.game.render().copy(), "task": self.game.task_text()}

    def _info(self, step_info: dict[str, Any], with_expert: bool = True) -> dict[str, Any]:
        info = dict(step_info)
        info["legal_actions"] = self.game.legal_actions()
        move = self.game.expert() if with_expert else None
        if move is not None:
            info["expert_action"] = move.action
            info["expert_thoughts"] = move.thoughts
            info["expert_facts"] = dict(move.facts)
        return info


def _build(name: str, kwargs: dict[str, Any]) -> Env:
    from visact.env_server.games.builtin import BUILTIN

    try:
        cls = BUILTIN[name]
    except KeyError:
        raise ValueError(f"unknown game {name!r}; expected one of: {', '.join(sorted(BUILTIN))}") from None
    return cls(**kwargs)


def register_gym_envs() -> None:
    """Register every built-in game with Gymnasium (idempotent)."""
    for gym_id, game in GYM_IDS.items():
        if gym_id not in gymnasium.registry:
            gymnasium.register(gym_id, entry_point=f"{__name__}:AsGymnasium", kwargs={"game": game})
