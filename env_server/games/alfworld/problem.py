"""A generated game as a PDDL problem for alfworld's domain, with the goal library's goal.

Facts follow the domain's predicates (``data/alfred.pddl``): each receptacle at its own location,
its type, ``openable``; each object in its receptacle and at that location, its type,
``pickupable`` (lamps are not), ``isReceptacleObject`` for movable receptacles (mugs, bowls...),
its abilities (cleanable, heatable, coolable, toggleable, sliceable) and ``isCool`` when it starts
in a fridge; ``canContain`` for the receptacle/object type pairs alfworld's tables allow. The
types the domain names in its rules (SinkBasinType, MicrowaveType, FridgeType, KnifeType,
ButterKnifeType) are always declared.
"""

from __future__ import annotations

from visact.env_server.games.alfworld import wheel
from visact.env_server.games.alfworld.scenes import Game, action_kinds

START = "loc_start"
#: Types the domain's actions refer to by name.
DOMAIN_RTYPES = ("SinkBasin", "Microwave", "Fridge")
DOMAIN_OTYPES = ("Knife", "ButterKnife")
ABILITIES = (
    ("Cleanable", "cleanable"),
    ("Heatable", "heatable"),
    ("Coolable", "coolable"),
    ("Toggleable", "toggleable"),
    ("Sliceable", "sliceable"),
)


def location_of(receptacle_id: str) -> str:
    """The location object where the agent stands to use ``receptacle_id``."""
    return f"loc_{receptacle_id}"


def problem_text(game: Game) -> str:
    """The PDDL problem of ``game``."""
    constants = wheel.constants()
    room = game.room
    rtypes = sorted(
        {r.kind for r in room.receptacles} | set(DOMAIN_RTYPES) | {game.goal.receptacle_kind} - {""}
    )
    otypes = sorted({i.kind for i in game.items} | set(DOMAIN_OTYPES))
    objects = ["agent1 - agent", f"{START} - location"]
    objects += [f"{location_of(r.pddl_id)} - location" for r in room.receptacles]
    objects += [f"{r.pddl_id} - receptacle" for r in room.receptacles]
    objects += [f"{i.pddl_id} - object" for i in game.items]
    objects += [f"{kind}Type - rtype" for kind in rtypes]
    objects += [f"{kind}Type - otype" for kind in otypes]

    init = ["(= (total-cost) 0)", f"(atLocation agent1 {START})"]
    for r in room.receptacles:
        init.append(f"(receptacleAtLocation {r.pddl_id} {location_of(r.pddl_id)})")
        init.append(f"(receptacleType {r.pddl_id} {r.kind}Type)")
        if r.openable:
            init.append(f"(openable {r.pddl_id})")
    movable_receptacles = set(constants.MOVABLE_RECEPTACLES)
    for item in game.items:
        init.append(f"(inReceptacle {item.pddl_id} {item.receptacle})")
        init.append(f"(objectAtLocation {item.pddl_id} {location_of(item.receptacle)})")
        init.append(f"(objectType {item.pddl_id} {item.kind}Type)")
        if item.kind not in ("DeskLamp", "FloorLamp"):
            init.append(f"(pickupable {item.pddl_id})")
        if item.kind in movable_receptacles:
            init.append(f"(isReceptacleObject {item.pddl_id})")
        init += [
            f"({fact} {item.pddl_id})" for ability, fact in ABILITIES if item.kind in action_kinds(ability)
        ]
        if item.cold:
            init.append(f"(isCool {item.pddl_id})")
    table = constants.VAL_RECEPTACLE_OBJECTS
    init += [
        f"(canContain {rkind}Type {okind}Type)"
        for rkind in rtypes
        for okind in otypes
        if okind in table.get(rkind, ())
    ]
    goal = wheel.goal_library()[game.goal.task_type]["pddl"].format(
        obj=game.goal.object_kind, recep=game.goal.receptacle_kind, toggle=game.goal.toggle_kind
    )
    return "\n".join(
        [
            "(define (problem alfworld)",
            "  (:domain alfred)",
            "  (:objects",
            *(f"    {line}" for line in objects),
            "  )",
            "  (:init",
            *(f"    {line}" for line in init),
            "  )",
            goal.replace("#", "-").strip(),
        ]
    )
