"""What an environment is, with no gRPC in it.

A game is a small class deriving from :class:`Env`. The generic servicer
(``visact.env_server.service``) serves any such class; Gymnasium environments are
wrapped by ``visact.env_server.gym_adapter``. ``visact.env_server.conformance.check_env`` checks
a class in process, the way the conformance suite checks a server.

Contract:
- ``reset(seed, options)`` starts an episode; the same seed gives the same
  episode (use ``self.np_random`` seeded by :meth:`seed_rng`, never global RNGs).
- ``step(action)`` takes one action string from :meth:`legal_actions` and
  returns a :class:`StepOutcome`. It raises :class:`~visact.env_server.errors.InvalidAction`
  for strings it does not accept, and must leave the state unchanged then.
- ``render()`` returns the state as an ``(H, W, 3)`` uint8 RGB array of
  ``image_shape``.
- ``task_text()`` is the instruction plus any state given as text.
- ``expert()`` is the oracle policy's move with its reasoning and the facts
  it read off the image (keys ``fact_keys``), or None if the game has no oracle.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class StepOutcome:
    """The result of one step, besides the new observation."""

    reward: float
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExpertMove:
    """What the oracle does now, why, and what it read off the image."""

    action: str
    thoughts: str
    facts: tuple[tuple[str, str], ...] = ()


class Env(abc.ABC):
    """An environment whose observations are an image plus task text and whose actions are strings."""

    #: Short stable name, e.g. "numberline".
    name: ClassVar[str] = ""
    #: Every action string the environment can ever accept, in a fixed order.
    action_vocabulary: ClassVar[tuple[str, ...]] = ()
    #: True when legal actions change per step and are not all in the vocabulary.
    dynamic_actions: ClassVar[bool] = False
    #: What the agent should read off the image, in order (chain-of-thought keys).
    fact_keys: ClassVar[tuple[str, ...]] = ()
    #: (height, width, channels) of every rendered image.
    image_shape: ClassVar[tuple[int, int, int]] = (300, 300, 3)
    #: Episode step limit (0: none); the servicer truncates at it.
    max_episode_steps: int = 0
    #: Reset option names the environment accepts.
    reset_option_names: ClassVar[tuple[str, ...]] = ()
    #: For people.
    description: ClassVar[str] = ""

    np_random: np.random.Generator

    def seed_rng(self, seed: int | None) -> None:
        """(Re)seed ``self.np_random``; call from reset."""
        self.np_random = np.random.default_rng(seed)

    @abc.abstractmethod
    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        """Start a new episode."""

    @abc.abstractmethod
    def step(self, action: str) -> StepOutcome:
        """Apply one action string."""

    @abc.abstractmethod
    def render(self) -> np.ndarray:
        """The current state as an (H, W, 3) uint8 RGB array.

        Either a new array each call, or an array of your own cache made read-only
        (``array.setflags(write=False)``) that you never change: the server then compresses
        each such frame to PNG once and sends the same bytes again (``env-server --png-cache``).
        """

    @abc.abstractmethod
    def task_text(self) -> str:
        """The instruction plus any state given as text."""

    def legal_actions(self) -> list[str]:
        """Actions valid now; defaults to the whole vocabulary."""
        return list(self.action_vocabulary)

    def expert(self) -> ExpertMove | None:
        """The oracle's move now, or None when the game has no oracle."""
        return None

    @property
    def has_expert(self) -> bool:
        """Whether :meth:`expert` can answer (the server then offers the "expert" capability)."""
        return type(self).expert is not Env.expert

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
