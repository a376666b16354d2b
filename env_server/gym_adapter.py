"""Any Gymnasium environment as a visact ``Env``: its rendered frame is the image, its
mission (or a given instruction) the task text, and named actions the vocabulary.

``env-server --gym CartPole-v1`` serves one. Discrete action spaces map action
strings to indices by name: names come from ``ActionNames`` given explicitly,
from an ``actions`` enum on the unwrapped env (MiniGrid/BabyAI), or default to
"0".."n-1". Other action spaces are not supported (the error says so).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from visact.env_server.core import Env, ExpertMove, StepOutcome
from visact.env_server.errors import InvalidAction, InvalidRequest


def action_names_of(env: gym.Env[Any, Any]) -> tuple[str, ...]:
    """Names for a Discrete action space, in index order."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Discrete):
        raise TypeError(
            f"{env.spec.id if env.spec else env}: only Discrete action spaces map to action strings; "
            f"got {type(space).__name__}"
        )
    actions = getattr(env.unwrapped, "actions", None)
    if isinstance(actions, type) and issubclass(actions, enum.Enum):
        by_value = {int(member.value): member.name.replace("_", " ") for member in actions}
        if all(i in by_value for i in range(int(space.n))):
            return tuple(by_value[i] for i in range(int(space.n)))
    return tuple(str(i) for i in range(int(space.n)))


class FromGymnasium(Env):
    """A visact Env made from a Gymnasium env (render_mode="rgb_array", Discrete actions) behind the ``Env`` contract."""

    def __init__(
        self,
        env_id: str,
        *,
        action_names: Sequence[str] | None = None,
        instruction: str | None = None,
        expert: Callable[[FromGymnasium], ExpertMove | None] | None = None,
        make_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.env_id = env_id
        self.gym_env = gym.make(env_id, render_mode="rgb_array", **dict(make_kwargs or {}))
        names = tuple(action_names) if action_names else action_names_of(self.gym_env)
        n = int(getattr(self.gym_env.action_space, "n", -1))
        if len(names) != n:
            raise ValueError(f"{env_id}: {len(names)} action names for {n} actions")
        self._index = {name: i for i, name in enumerate(names)}
        self._instruction = instruction
        self._expert_fn = expert
        self.last_obs: Any = None
        self.episode_index = 0  # counts resets (an expert's per-episode state keys on it)
        self.actions_taken: list[int] = []  # action indices of this episode, in order
        self.expert_state: dict[str, Any] = {}  # for the expert hook
        # Instance attributes that shadow the class-level defaults of Env.
        self.name = env_id  # type: ignore[misc]
        self.action_vocabulary = names  # type: ignore[misc]
        self.gym_env.reset(seed=0)
        spec_limit = self.gym_env.spec.max_episode_steps if self.gym_env.spec else None
        self.max_episode_steps = int(spec_limit or getattr(self.gym_env.unwrapped, "max_steps", 0) or 0)
        frame = self._frame()
        self.image_shape = frame.shape  # type: ignore[misc]
        self.description = f"Gymnasium environment {env_id} served through visact's adapter"  # type: ignore[misc]
        self._episode_over = True

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        if options:
            raise InvalidRequest(f"{self.env_id} takes no reset options; got {sorted(options)}")
        self.last_obs, _ = self.gym_env.reset(seed=seed)
        self._episode_over = False
        self.episode_index += 1
        self.actions_taken = []

    def step(self, action: str) -> StepOutcome:
        if action not in self._index:
            raise InvalidAction(f"action {action!r} is not one of {list(self._index)}")
        self.last_obs, reward, terminated, truncated, info = self.gym_env.step(self._index[action])
        self.actions_taken.append(self._index[action])
        if terminated or truncated:
            info = {**info, "success": bool(terminated and float(reward) > 0)}
        return StepOutcome(float(reward), bool(terminated), bool(truncated), _plain(info))

    def render(self) -> np.ndarray:
        return self._frame()

    def task_text(self) -> str:
        mission = self.last_obs.get("mission") if isinstance(self.last_obs, dict) else None
        parts = [p for p in (self._instruction, mission and f"Mission: {mission}") if p]
        return "\n".join(parts) or f"Play {self.env_id} well."

    def expert(self) -> ExpertMove | None:
        return self._expert_fn(self) if self._expert_fn else None

    @property
    def has_expert(self) -> bool:
        return self._expert_fn is not None

    def close(self) -> None:
        self.gym_env.close()

    def _frame(self) -> np.ndarray:
        frame = self.gym_env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            raise TypeError(
                f"{self.env_id}: render() must give an (H, W, 3) array; got {type(frame).__name__}"
            )
        return np.ascontiguousarray(frame, dtype=np.uint8)


def gym_env_factory(env_id: str, **kwargs: Any) -> Callable[[], Env]:
    """A factory of ``FromGymnasium(env_id)``; builds one at once so a bad id fails early.

    BabyAI/MiniGrid ids get an instruction that explains the picture and the BabyAI bot as expert.
    """
    _import_plugins(env_id)
    from visact.env_server import minigrid_support

    if minigrid_support.is_minigrid(env_id):
        kwargs.setdefault("instruction", minigrid_support.INSTRUCTION)
        kwargs.setdefault("expert", minigrid_support.babyai_expert)
    FromGymnasium(env_id, **kwargs).close()
    return lambda: FromGymnasium(env_id, **kwargs)


def _import_plugins(env_id: str) -> None:
    """Import packages that register env ids on import (e.g. minigrid for BabyAI-*)."""
    if env_id.startswith(("MiniGrid-", "BabyAI-")):
        try:
            import minigrid  # noqa: F401
        except ImportError:
            raise ValueError(f"{env_id} needs the minigrid package: pip install 'visact[gym]'") from None
    if env_id.startswith("visact/"):
        import visact.env_server.games  # noqa: F401


def _plain(info: Mapping[str, Any]) -> dict[str, Any]:
    """Keep what a protobuf Struct can carry."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool | int | float | str):
            out[str(key)] = value
    return out
