"""The task text: RL4VLM's ALFWorld prompt around the engine's observation, in full or visual form.

RL4VLM (``VLM_PPO_ALF``, ``get_alfworld_prompt``) words the prompt as "Your are an expert in the
ALFRED Embodied Environment. You are also given the following text description of the current
scene: {obs}. Your task is to {task}. Your admissible actions of the current situation are:
[...]" followed by the JSON answer format. Here the environment gives the first three sentences
(its typo fixed); the agent appends the admissible actions (the legal actions) and the answer
format, as for every game. ``obs`` is the engine's text: the intro after a reset ("-= Welcome to
TextWorld, ALFRED! =- ... Your task is to: ..."), then the feedback of the last command.

The ``visual`` form leaves out of that text what the frame shows: what is in or on a receptacle
("On the countertop 1, you see ...", "In it, you see ..."), what the agent carries (the
``inventory`` answer) and how an object is (the ``examine`` answer: hot, cold, clean, sliced,
on). Every other sentence is the engine's, word for word. The ``full`` form is the engine's text
unchanged (what ALFWorld's text games, and RL4VLM's THOR runs, show).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Literal

TextMode = Literal["visual", "full"]
TEXT_MODES: tuple[TextMode, ...] = ("visual", "full")

PROMPT = (
    "You are an expert in the ALFRED Embodied Environment. You are also given the following text "
    "description of the current scene: {observation} Your task is to {task}."
)
ON_SURFACE = re.compile(r" ?On the [^,.]+, you see [^.]*\.")
IN_IT = re.compile(r" ?In it, you see [^.]*\.")
INVENTORY = "You look at what you are carrying (see the image)."
EXAMINED = "You examine the {name} (see the image)."


def prompt(observation: str, task: str) -> str:
    """RL4VLM's ALFWorld prompt for the current observation text and the task sentence."""
    text = " ".join(observation.split())  # the intro's blank lines as single spaces
    if not text.endswith((".", "!", "?")):
        text += "."
    return PROMPT.format(observation=text, task=task)


def visual(feedback: str, command: str, objects: Collection[str]) -> str:
    """``feedback`` of ``command`` without what the frame shows (``objects``: the game's object names)."""
    if command == "inventory":
        return INVENTORY
    target = command.removeprefix("examine ")
    if command.startswith("examine ") and target in objects:
        return EXAMINED.format(name=target)
    return IN_IT.sub("", ON_SURFACE.sub("", feedback)).strip()
