"""BabyAI / MiniGrid served as visual language tasks: an instruction that explains the picture and
the actions, and the bundled BabyAI bot as the expert (for demonstrations and plumbing checks).

Used by ``env-server --gym BabyAI-...`` and ``--gym MiniGrid-...`` (needs the ``minigrid`` package:
``pip install 'visact[gym]'``).
"""

from __future__ import annotations

from typing import Any, Protocol

from visact.env_server.core import ExpertMove


class BotView(Protocol):
    """What the BabyAI bot needs of the env it advises (a ``gym_adapter.FromGymnasium``)."""

    gym_env: Any
    expert_state: dict[str, Any]
    episode_index: int
    actions_taken: list[int]
    action_vocabulary: tuple[str, ...]


INSTRUCTION = (
    "You are the red triangle in a grid world seen from above; the triangle points where you face. "
    "Grey squares are walls, other shapes are objects (keys, balls, boxes) and coloured squares are doors. "
    "Actions: 'left' and 'right' turn you, 'forward' moves you one cell ahead, 'pickup' and 'drop' "
    "take and put down the object in front of you, 'toggle' opens the door in front of you, "
    "'done' says you have finished."
)

_ACTION_WORDS = {
    "left": "turn left",
    "right": "turn right",
    "forward": "move forward",
    "pickup": "pick up the object in front of me",
    "drop": "drop what I carry",
    "toggle": "open the door in front of me",
    "done": "say that I am done",
}


def is_minigrid(env_id: str) -> bool:
    return env_id.startswith(("BabyAI-", "MiniGrid-"))


def babyai_expert(env: BotView) -> ExpertMove | None:
    """The BabyAI bot's next action, kept in step with the actions actually taken.

    The bot is created at the first request of an episode and told each action the agent really
    took (``replan(action_taken)``), so it stays right even when the agent ignores its advice.
    """
    from minigrid.utils.baby_ai_bot import BabyAIBot

    state: dict[str, Any] = env.expert_state
    if state.get("episode") != env.episode_index:
        state.clear()
        state["episode"] = env.episode_index
        state["bot"] = BabyAIBot(env.gym_env.unwrapped)
        state["seen_steps"] = 0
    bot = state["bot"]
    taken = env.actions_taken[state["seen_steps"] :]
    for skipped in taken[:-1]:  # steps the bot was not asked about: replay them
        bot.replan(skipped)
    last = taken[-1] if taken else None
    try:
        index = int(bot.replan(last))
    except Exception:  # the bot gives up on states it cannot plan from (e.g. after odd moves)
        return None
    state["seen_steps"] = len(env.actions_taken)
    action = env.action_vocabulary[index]
    mission = getattr(env.gym_env.unwrapped, "mission", "")
    thoughts = f"My mission is to {mission}. The best next move is to {_ACTION_WORDS.get(action, action)}."
    return ExpertMove(action=action, thoughts=thoughts)
