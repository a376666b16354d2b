"""Generated ALFWorld games: a room, objects placed in its receptacles, and a goal of one of six types.

The tables are alfworld's (``gen/constants.py``): which scene types each task type is valid in
(``GOALS_VALID``), which receptacle types may hold which objects (``VAL_RECEPTACLE_OBJECTS``),
which objects can be cleaned, heated, cooled, toggled or sliced (``VAL_ACTION_OBJECTS``), and
up to ``MAX_NUM_OF_OBJ_INSTANCES`` (3) instances of a type. The goal and its sentence are the goal
library's (``gen/goal_library.py``).

A game places the target objects (1-3 instances, 2-3 for pick-two; none already in a receptacle
of the goal's type, so that no game starts won) and a few other object types of the room as
distractors, each instance in a receptacle allowed to hold it, chosen uniformly. Objects that
start in a fridge are cold, as ALFWorld marks them. Lamps (look-at-object-in-light) stand on a
piece of furniture of the room, where the rules let them be used. Everything is drawn from one
``numpy`` generator: the same seed gives the same game.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from visact.env_server.games.alfworld import wheel
from visact.env_server.games.alfworld.rooms import Receptacle, Room, Split, load_room, numbered, rooms_in

#: ALFWorld's six task types, in its order (its task-type ids are 1..6).
TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
#: The appliance each state-change task needs, and the state it gives.
APPLIANCES = {
    "pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
    "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
    "pick_cool_then_place_in_recep": ("Fridge", "Coolable"),
}
LAMPS = ("DeskLamp", "FloorLamp")
#: Furniture a lamp may stand on (alfworld's tables give lamps no receptacle).
LAMP_HOSTS = frozenset(
    {"SideTable", "Desk", "Dresser", "Shelf", "CoffeeTable", "TVStand", "DiningTable", "CounterTop", "Cart"}
)
#: Object types of the room placed besides the targets (and the lamp).
DISTRACTOR_KINDS = 8


@dataclass(frozen=True)
class Item:
    """A movable object (or a lamp) and the receptacle it starts in."""

    pddl_id: str  # "apple_02"
    name: str  # "apple 2"
    kind: str  # "Apple"
    receptacle: str  # pddl id of its receptacle
    cold: bool = False  # starts cold (it is in a fridge)


@dataclass(frozen=True)
class Goal:
    """What the game asks: the goal library's task type with its targets, and the sentence."""

    task_type: str
    object_kind: str
    receptacle_kind: str  # "" for look_at_obj_in_light
    toggle_kind: str  # "" unless look_at_obj_in_light
    sentence: str  # e.g. "put a clean mug in coffeemachine"


@dataclass(frozen=True)
class Game:
    """One generated game: the room, the objects, the goal, where the agent starts."""

    room: Room
    items: tuple[Item, ...]
    goal: Goal
    start: tuple[float, float]

    def receptacle(self, pddl_id: str) -> Receptacle:
        return next(r for r in self.room.receptacles if r.pddl_id == pddl_id)


# ---------------------------------------------------------------------- tables


def holders(kind: str, room: Room) -> list[Receptacle]:
    """The room's receptacles that may hold an object of ``kind``."""
    table = wheel.constants().VAL_RECEPTACLE_OBJECTS
    return [r for r in room.receptacles if kind in table.get(r.kind, ())]


def action_kinds(ability: str) -> frozenset[str]:
    """Object types with an ability: Cleanable, Heatable, Coolable, Toggleable, Sliceable."""
    return frozenset(wheel.constants().VAL_ACTION_OBJECTS[ability])


def placeable_kinds(room: Room) -> list[str]:
    """The room's movable object types that some receptacle of the room may hold (no sliced ones)."""
    constants = wheel.constants()
    movable = (set(constants.OBJECTS) | set(constants.MOVABLE_RECEPTACLES)) - _static_kinds()
    kinds = [k for k in room.object_types & movable if not k.endswith("Sliced") and holders(k, room)]
    return sorted(kinds)


def _static_kinds() -> set[str]:
    constants = wheel.constants()
    return set(constants.RECEPTACLES) - set(constants.MOVABLE_RECEPTACLES)


def lamp_hosts(room: Room) -> list[Receptacle]:
    return [r for r in room.receptacles if r.kind in LAMP_HOSTS]


# ---------------------------------------------------------------------- feasible goals


@cache
def goal_targets(task_type: str, room_name: str) -> tuple[tuple[str, str, str], ...]:
    """Every (object kind, receptacle kind, toggle kind) the task type can ask in this room."""
    room = load_room(room_name)
    if room.scene not in wheel.constants().GOALS_VALID[task_type]:
        return ()
    kinds = placeable_kinds(room)
    if task_type == "look_at_obj_in_light":
        lamps = [lamp for lamp in LAMPS if lamp in room.object_types]
        if not lamps or not lamp_hosts(room):
            return ()
        return tuple((kind, "", lamp) for lamp in lamps for kind in kinds)
    appliance, ability = APPLIANCES.get(task_type, ("", ""))
    if appliance and appliance not in room.receptacle_kinds():
        return ()
    targets = []
    for kind in kinds:
        if ability and kind not in action_kinds(ability):
            continue
        for recep_kind in sorted(room.receptacle_kinds() - {appliance}):
            inside = {r.kind for r in holders(kind, room)}
            # the goal's receptacle may hold it, and so must another kind (so the game starts unsolved)
            if recep_kind in inside and inside - {recep_kind}:
                targets.append((kind, recep_kind, ""))
    return tuple(targets)


@cache
def rooms_for(task_type: str, split: Split) -> tuple[str, ...]:
    """The rooms of ``split`` in which ``task_type`` has at least one feasible goal."""
    return tuple(name for name in rooms_in(split) if goal_targets(task_type, name))


# ---------------------------------------------------------------------- generation


def generate(rng: np.random.Generator, task_type: str, room_name: str) -> Game:
    """A game of ``task_type`` in ``room_name``; ValueError when the room cannot have that task."""
    targets = goal_targets(task_type, room_name)
    if not targets:
        raise ValueError(f"{room_name} cannot have a {task_type} task (no feasible goal in its layout)")
    room = load_room(room_name)
    object_kind, recep_kind, toggle_kind = targets[int(rng.integers(len(targets)))]
    goal = _goal(rng, task_type, object_kind, recep_kind, toggle_kind)
    items = _place_items(rng, room, goal)
    return Game(room, items, goal, start_point(room))


def _goal(rng: np.random.Generator, task_type: str, obj: str, recep: str, toggle: str) -> Goal:
    templates = wheel.goal_library()[task_type]["templates"]
    template = templates[int(rng.integers(len(templates)))]
    sentence = template.format(obj=obj.lower(), recep=recep.lower(), toggle=toggle.lower())
    return Goal(task_type, obj, recep, toggle, sentence)


def _place_items(rng: np.random.Generator, room: Room, goal: Goal) -> tuple[Item, ...]:
    counts: dict[str, int] = {goal.object_kind: int(rng.integers(2 if "two" in goal.task_type else 1, 4))}
    others = [k for k in placeable_kinds(room) if k != goal.object_kind]
    for index in rng.permutation(len(others))[:DISTRACTOR_KINDS]:
        counts[others[int(index)]] = int(rng.integers(1, 4))
    placements: list[tuple[str, Receptacle]] = []
    for kind in sorted(counts):
        allowed = holders(kind, room)
        if kind == goal.object_kind and goal.receptacle_kind:
            allowed = [r for r in allowed if r.kind != goal.receptacle_kind]
        placements += [(kind, allowed[int(rng.integers(len(allowed)))]) for _ in range(counts[kind])]
    if goal.toggle_kind:
        hosts = lamp_hosts(room)
        placements.append((goal.toggle_kind, hosts[int(rng.integers(len(hosts)))]))
    return _numbered(placements)


def _numbered(placements: list[tuple[str, Receptacle]]) -> tuple[Item, ...]:
    """Items named like ALFWorld's ("apple 1", "apple 2"), numbered per type in placement order."""
    seen: dict[str, int] = {}
    items = []
    for kind, receptacle in placements:
        seen[kind] = seen.get(kind, 0) + 1
        pddl_id, name = numbered(kind, seen[kind])
        items.append(
            Item(
                pddl_id=pddl_id,
                name=name,
                kind=kind,
                receptacle=receptacle.pddl_id,
                cold=receptacle.kind == "Fridge",
            )
        )
    return tuple(items)


def start_point(room: Room) -> tuple[float, float]:
    """Where the agent starts: the floor point nearest the middle of the floor."""
    floor = room.floor
    middle = floor.mean(axis=0)
    x, z = floor[int(np.argmin(np.linalg.norm(floor - middle, axis=1)))].tolist()
    return float(x), float(z)
