"""The 120 THOR rooms as the alfworld wheel describes them: receptacles, where to stand, the floor.

A room's receptacles come from its ``-openable.json`` layout (the THOR object id, which holds
the object's x|y|z, and the pose the agent stands in to use it). Static receptacle types the
room has (its ``-objects.json``) without such an entry (sink basins, stove burners, coffee
machines, toasters, garbage cans, towel holders...) get one here, deterministically: a point
on the edge of the floor grid far from the other receptacles, the receptacle 0.5 m beyond it.
A sink's (bathtub's) pose serves its basin. Every receptacle gets its own standing place (its own
PDDL location), even where THOR's layouts share one.

Receptacles are named as ALFWorld names them, type in lower case and a number per type
("cabinet 3", "sinkbasin 1"), numbered in the order of their THOR ids.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Literal

import numpy as np

from visact.env_server.games.alfworld import wheel

Split = Literal["train", "unseen"]

#: Instances of a receptacle type the layouts lack a pose for (1 unless listed).
ADDED_COUNTS = {"StoveBurner": 4}
#: A sink or bathtub's pose serves its basin (the receptacle) when the basin has none of its own.
BASINS = {"Sink": "SinkBasin", "Bathtub": "BathtubBasin"}
#: Grid step of the floor, metres.
FLOOR_STEP = 0.25
#: How far beyond its standing point an added receptacle sits, metres.
ADDED_REACH = 0.5
#: Facing directions (THOR rotation, degrees) and their unit (dx, dz).
HEADINGS = {0: (0.0, 1.0), 90: (1.0, 0.0), 180: (0.0, -1.0), 270: (-1.0, 0.0)}


@dataclass(frozen=True)
class Receptacle:
    """A static receptacle of a room and where the agent stands to use it."""

    pddl_id: str  # e.g. "cabinet_03" (zero-padded: the engine lists facts in sorted order)
    name: str  # e.g. "cabinet 3", as commands and feedback say it
    kind: str  # THOR type, e.g. "Cabinet"
    x: float  # the receptacle itself (metres, THOR's x and z)
    z: float
    stand_x: float  # where the agent stands facing it
    stand_z: float
    heading: int  # 0, 90, 180 or 270
    openable: bool


@dataclass(frozen=True)
class Room:
    """One THOR room: its receptacles, the object types it has, and its floor grid."""

    name: str  # "FloorPlan12"
    number: int
    scene: str  # Kitchen, LivingRoom, Bedroom, Bathroom
    split: Split
    receptacles: tuple[Receptacle, ...]
    object_types: frozenset[str]
    floor: np.ndarray  # (N, 2) x, z

    def receptacle_kinds(self) -> set[str]:
        return {r.kind for r in self.receptacles}

    def bounds(self) -> tuple[float, float, float, float]:
        """(min x, min z, max x, max z) over the floor and the receptacles."""
        xs = [*self.floor[:, 0].tolist(), *(r.x for r in self.receptacles)]
        zs = [*self.floor[:, 1].tolist(), *(r.z for r in self.receptacles)]
        return min(xs), min(zs), max(xs), max(zs)


def scene_of(number: int) -> str:
    for scene, numbers in wheel.constants().SCENE_TYPE.items():
        if number in numbers:
            return str(scene)
    raise ValueError(f"FloorPlan{number} is in none of alfworld's scene types")


def split_of(number: int) -> Split:
    return "unseen" if number in wheel.constants().TEST_SCENE_NUMBERS else "train"


@lru_cache(maxsize=1)
def room_names() -> tuple[str, ...]:
    """Every room with a layout, e.g. ``("FloorPlan1", ...)``, in FloorPlan number order."""
    return tuple(f"FloorPlan{n}" for n in wheel.room_numbers())


def rooms_in(split: Split) -> tuple[str, ...]:
    return tuple(name for name in room_names() if split_of(_number(name)) == split)


def _number(name: str) -> int:
    return int(name.removeprefix("FloorPlan"))


def static_receptacle_kinds() -> set[str]:
    constants = wheel.constants()
    return set(constants.RECEPTACLES) - set(constants.MOVABLE_RECEPTACLES)


@cache
def load_room(name: str) -> Room:
    """The room called ``name`` ("FloorPlan12"); ValueError when there is no such layout."""
    if name not in room_names():
        raise ValueError(f"no room {name!r}; rooms are FloorPlan1..30, 201..230, 301..330, 401..430")
    constants = wheel.constants()
    number = _number(name)
    object_types = frozenset(wheel.room_object_types(name))
    floor = wheel.room_floor(name)
    placed: list[
        tuple[str, str, float, float, float, float, int]
    ] = []  # thor id, kind, x, z, sx, sz, heading
    static = static_receptacle_kinds()
    poses = wheel.room_receptacle_poses(name)
    posed_kinds = {thor_id.split("|")[0] for thor_id in poses}
    for thor_id, (sx, sz, rotation, _horizon) in poses.items():
        parts = thor_id.split("|")
        kind = BASINS.get(parts[0], parts[0])
        if kind not in static or (kind != parts[0] and kind in posed_kinds):
            continue
        placed.append((thor_id, kind, float(parts[1]), float(parts[3]), sx, sz, rotation % 360))
    posed = {kind for _, kind, *_ in placed}
    missing = sorted((object_types & static_receptacle_kinds()) - posed)
    placed += _added_receptacles(missing, floor, [(p[4], p[5]) for p in placed])
    receptacles = _named(placed, constants.OPENABLE_CLASS_SET)
    return Room(name, number, scene_of(number), split_of(number), receptacles, object_types, floor)


def numbered(kind: str, index: int) -> tuple[str, str]:
    """The PDDL id and the name of instance ``index`` of ``kind``: ("apple_02", "apple 2").

    Ids are zero-padded: the engine lists facts in sorted order, so "apple 2" comes before "apple 10".
    """
    label = kind.lower()
    return f"{label}_{index:02d}", f"{label} {index}"


def _named(
    placed: list[tuple[str, str, float, float, float, float, int]], openable_kinds: set[str]
) -> tuple[Receptacle, ...]:
    by_kind: dict[str, list[tuple[str, str, float, float, float, float, int]]] = defaultdict(list)
    for entry in sorted(placed):
        by_kind[entry[1]].append(entry)
    receptacles = []
    for kind in sorted(by_kind):
        for index, (_, _, x, z, sx, sz, heading) in enumerate(by_kind[kind], start=1):
            pddl_id, name = numbered(kind, index)
            receptacles.append(
                Receptacle(
                    pddl_id=pddl_id,
                    name=name,
                    kind=kind,
                    x=x,
                    z=z,
                    stand_x=sx,
                    stand_z=sz,
                    heading=heading,
                    openable=kind in openable_kinds,
                )
            )
    return tuple(receptacles)


def _added_receptacles(
    kinds: list[str], floor: np.ndarray, stands: list[tuple[float, float]]
) -> list[tuple[str, str, float, float, float, float, int]]:
    """Poses for receptacle kinds the layout lacks: edge points of the floor, spread out."""
    edges = _edge_points(floor)
    taken = list(stands)
    added = []
    for kind in kinds:
        for index in range(ADDED_COUNTS.get(kind, 1)):
            (sx, sz), heading = _farthest(edges, taken)
            dx, dz = HEADINGS[heading]
            x, z = round(sx + ADDED_REACH * dx, 2), round(sz + ADDED_REACH * dz, 2)
            added.append((f"{kind}|added|{index}", kind, x, z, sx, sz, heading))
            taken.append((sx, sz))
    return added


def _edge_points(floor: np.ndarray) -> list[tuple[tuple[float, float], int]]:
    """Floor points with a missing neighbour, each with the heading that faces out of the floor."""
    keys = {(round(x / FLOOR_STEP), round(z / FLOOR_STEP)) for x, z in floor.tolist()}
    edges = []
    for gx, gz in sorted(keys):
        for heading, (dx, dz) in HEADINGS.items():
            if (gx + int(dx), gz + int(dz)) not in keys:
                edges.append(((gx * FLOOR_STEP, gz * FLOOR_STEP), heading))
                break
    return edges


def _farthest(
    edges: list[tuple[tuple[float, float], int]], taken: list[tuple[float, float]]
) -> tuple[tuple[float, float], int]:
    """The edge point farthest from every taken standing point (the first such, in grid order)."""
    if not taken:
        return edges[0]
    points = np.array([point for point, _ in edges])
    others = np.array(taken)
    distance = np.min(np.linalg.norm(points[:, None, :] - others[None, :, :], axis=2), axis=1)
    return edges[int(np.argmax(distance))]
