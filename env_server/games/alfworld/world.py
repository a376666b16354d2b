"""What is true now, read off the engine's facts once per step: the input of the frame, the expert,
the goal conditions and the reward.

ALFWorld's goal conditions (its ``env/tasks.py``, per task type) are counted on the same facts:
pick-and-place 1 (a target object in a target receptacle), pick-two 2 (how many target objects
share one target receptacle, at most 2), look-in-light 2 (a target object held; a lamp used where
the agent stands), clean/heat/cool 3 (one in place; one cleaned/heated/cooled; one both).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from visact.env_server.games.alfworld.problem import START
from visact.env_server.games.alfworld.scenes import Game

#: Object states the frame shows, by the engine's predicate.
STATE_PREDICATES = (("ishot", "hot"), ("iscool", "cold"), ("isclean", "clean"), ("issliced", "sliced"))
LAMP_ON = "istoggled"


@dataclass(frozen=True)
class World:
    """The state of a game at one moment, in names the player reads (``"apple 1"``)."""

    facing: str  # name of the receptacle the agent stands at, "" in the middle of the room
    held: str  # name of the held object, "" when the hands are empty
    contents: dict[str, tuple[str, ...]]  # receptacle name -> object names in it, sorted
    opened: frozenset[str]  # names of open receptacles
    states: dict[str, tuple[str, ...]] = field(default_factory=dict)  # object name -> ("hot", "clean"...)
    lamps_on: frozenset[str] = frozenset()  # names of lamps that were turned on

    def where(self, name: str) -> str:
        """The receptacle holding object ``name``, or "" (held)."""
        return next((r for r, inside in self.contents.items() if name in inside), "")

    def has_state(self, name: str, state: str) -> bool:
        return state in self.states.get(name, ())


def read_world(engine: Any, game: Game) -> World:
    """The world from the engine's current facts."""
    names = {r.pddl_id: r.name for r in game.room.receptacles} | {i.pddl_id: i.name for i in game.items}
    locations = {f"loc_{r.pddl_id}": r.name for r in game.room.receptacles}
    facts: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for predicate, arguments in engine.current_facts():
        facts[predicate].append(arguments)
    where = next((loc for _, loc in facts["atlocation"]), START)
    held = next((names.get(obj, obj) for _, obj in facts["holds"]), "")
    contents: dict[str, list[str]] = defaultdict(list)
    for obj, receptacle in facts["inreceptacle"]:
        contents[names.get(receptacle, receptacle)].append(names.get(obj, obj))
    states: dict[str, list[str]] = defaultdict(list)
    for predicate, state in STATE_PREDICATES:
        for (obj,) in facts[predicate]:
            states[names.get(obj, obj)].append(state)
    return World(
        facing=locations.get(where, ""),
        held=held,
        contents={r: tuple(sorted(objs, key=_natural)) for r, objs in sorted(contents.items())},
        opened=frozenset(names.get(r, r) for (r,) in facts["opened"]),
        states={obj: tuple(s) for obj, s in sorted(states.items())},
        lamps_on=frozenset(names.get(o, o) for (o,) in facts[LAMP_ON]),
    )


def _natural(name: str) -> tuple[str, int]:
    """ "apple 2" before "apple 10"."""
    kind, _, number = name.rpartition(" ")
    return (kind, int(number)) if number.isdigit() else (name, 0)


def kind_of(name: str) -> str:
    """ "apple" of "apple 2"."""
    return name.rpartition(" ")[0] or name


def goal_conditions(world: World, game: Game) -> tuple[int, int]:
    """(conditions met, conditions in all) of the game's goal, counted as ALFWorld counts them."""
    goal = game.goal
    target = goal.object_kind.lower()
    in_place = [
        obj
        for receptacle, inside in world.contents.items()
        if kind_of(receptacle) == goal.receptacle_kind.lower()
        for obj in inside
        if kind_of(obj) == target
    ]
    if goal.task_type == "pick_and_place_simple":
        return int(bool(in_place)), 1
    if goal.task_type == "pick_two_obj_and_place":
        most = max(
            (
                sum(kind_of(o) == target for o in inside)
                for r, inside in world.contents.items()
                if kind_of(r) == goal.receptacle_kind.lower()
            ),
            default=0,
        )
        return min(most, 2), 2
    if goal.task_type == "look_at_obj_in_light":
        lamp_here = any(
            kind_of(lamp) == goal.toggle_kind.lower() and lamp in world.contents.get(world.facing, ())
            for lamp in world.lamps_on
        )
        return int(kind_of(world.held) == target) + int(lamp_here), 2
    state = {"clean": "clean", "heat": "hot", "cool": "cold"}[goal.task_type.split("_")[1]]
    changed = [
        name
        for name in (world.held, *(o for inside in world.contents.values() for o in inside))
        if name and kind_of(name) == target and world.has_state(name, state)
    ]
    both = any(obj in changed for obj in in_place)
    return int(bool(in_place)) + int(bool(changed)) + int(both), 3
