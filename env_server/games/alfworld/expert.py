"""The oracle: the next command toward the goal, with its reasoning and what the frame shows.

It reads the whole state (where every object is, as ALFWorld's handcoded expert reads the
engine's facts), so it walks straight to a target: go to the receptacle holding one (open it
if closed), take it, clean/heat/cool it at the sink basin/microwave/fridge when the goal needs
it and it is not so already, then go to a receptacle of the goal's type (open it if closed)
and move it there; pick-two does that twice into the same receptacle; look-in-light takes the
object to the lamp and uses it. It holds one object at a time, so something else in hand is
put down first. It plans afresh from the state at every step, so it also finishes games
another player has started.

Its facts are what the frame shows (keys ``FACT_KEYS``): the receptacle faced and whether it
is open, what is in or on it, and what is held, with each object's states.
"""

from __future__ import annotations

from dataclasses import dataclass

from visact.env_server.core import ExpertMove
from visact.env_server.games.alfworld.rooms import Receptacle
from visact.env_server.games.alfworld.scenes import APPLIANCES, Game, holders
from visact.env_server.games.alfworld.world import World, kind_of

FACT_KEYS = ("facing", "contents", "holding")
#: The state each state-change task needs, and the command that gives it.
NEEDS = {
    "pick_clean_then_place_in_recep": ("clean", "clean"),
    "pick_heat_then_place_in_recep": ("hot", "heat"),
    "pick_cool_then_place_in_recep": ("cold", "cool"),
}


@dataclass(frozen=True)
class Plan:
    """The next command and why."""

    command: str
    why: str


def facts(world: World, game: Game) -> tuple[tuple[str, str], ...]:
    """What the frame shows now, in words."""
    if not world.facing:
        facing, contents = "nothing (the middle of the room)", "nothing"
    else:
        receptacle = by_name(game, world.facing)
        shut = receptacle.openable and world.facing not in world.opened
        facing = world.facing + ((" (closed)" if shut else " (open)") if receptacle.openable else "")
        inside = world.contents.get(world.facing, ())
        contents = "unknown (closed)" if shut else ", ".join(describe(world, o) for o in inside) or "nothing"
    holding = describe(world, world.held) if world.held else "nothing"
    return (("facing", facing), ("contents", contents), ("holding", holding))


def describe(world: World, name: str) -> str:
    """ "apple 1 (hot, clean)", or "desklamp 1 (on)"."""
    states = list(world.states.get(name, ()))
    if name in world.lamps_on:
        states.append("on")
    return f"{name} ({', '.join(states)})" if states else name


def next_move(game: Game, world: World, admissible: list[str]) -> ExpertMove:
    """The expert's move in this state (``admissible``: the engine's commands now)."""
    return as_move(game, world, _plan(game, world), admissible)


def as_move(game: Game, world: World, plan: Plan, admissible: list[str]) -> ExpertMove:
    """``plan`` as the move the server returns: the command, the thoughts and the frame's facts."""
    command, why = plan.command, plan.why
    if command not in admissible:  # never expected; "look" is always admissible
        command, why = "look", f"{why}, but {plan.command!r} is not possible here, so I look around"
    thoughts = f"My task is to {game.goal.sentence}. {why}."
    return ExpertMove(command, thoughts, facts(world, game))


def _plan(game: Game, world: World) -> Plan:
    goal = game.goal
    target = goal.object_kind.lower()
    if world.held and kind_of(world.held) != target:
        return put_down(game, world, f"I hold the {world.held}, which the task does not need")
    if goal.task_type == "look_at_obj_in_light":
        if world.held:
            lamp, stand = _lamp(game, world)
            return use_at(
                world, stand, f"use {lamp}", f"I hold the {world.held}; I look at it under the {lamp}"
            )
        return _fetch(game, world, target, destination=None)
    destination = _destination(game, world)
    if world.held:
        need = NEEDS.get(goal.task_type)
        if need is not None and not world.has_state(world.held, need[0]):
            state, verb = need
            appliance = _first_of(game, APPLIANCES[goal.task_type][0])
            return use_at(world, appliance, f"{verb} {world.held} with {appliance.name}",
                           f"The {world.held} is not {state} yet, so I {verb} it with the {appliance.name}")  # fmt: skip
        return use_at(world, destination, f"move {world.held} to {destination.name}",
                       f"I hold the {world.held}, so I put it in the {destination.name}")  # fmt: skip
    return _fetch(game, world, target, destination)


def _fetch(game: Game, world: World, target: str, destination: Receptacle | None) -> Plan:
    """Go and take an object of the target type that is not already where the goal wants it."""
    need = NEEDS.get(game.goal.task_type)

    def settled(obj: str, receptacle: str) -> bool:
        if destination is None:  # look-in-light: any one will do
            return False
        if game.goal.task_type == "pick_two_obj_and_place":
            return receptacle == destination.name
        return kind_of(receptacle) == destination.kind.lower() and (
            need is None or world.has_state(obj, need[0])
        )

    candidates = [
        (obj, receptacle)
        for receptacle, inside in world.contents.items()
        for obj in inside
        if kind_of(obj) == target and not settled(obj, receptacle)
    ]
    if not candidates:  # pragma: no cover - generation places enough targets outside the goal's receptacles
        return Plan("look", f"I see no {target} left to take, so I look around")

    def preference(pair: tuple[str, str]) -> tuple[bool, bool, str]:
        obj, receptacle = pair
        ready = need is not None and world.has_state(obj, need[0])
        shut = by_name(game, receptacle).openable and receptacle not in world.opened
        return (not ready, shut, obj)

    obj, where = min(candidates, key=preference)
    return use_at(world, by_name(game, where), f"take {obj} from {where}",
                   f"There is a {obj} in the {where}, so I take it")  # fmt: skip


def put_down(game: Game, world: World, why: str) -> Plan:
    """Put the held object in the receptacle faced if it fits there, else in the nearest one that takes it."""
    kind = kind_of(world.held)
    allowed = holders(_thor_kind(game, kind), game.room)
    fits = [r for r in allowed if r.kind != game.goal.receptacle_kind] or allowed
    here = next((r for r in fits if r.name == world.facing), None)
    spot = here or min(fits, key=lambda r: (r.openable, r.name))
    return use_at(
        world, spot, f"move {world.held} to {spot.name}", f"{why}, so I put it down in the {spot.name}"
    )


def use_at(world: World, receptacle: Receptacle, command: str, why: str) -> Plan:
    """``command`` at ``receptacle``: first go there, and open it if the command needs it open."""
    if world.facing != receptacle.name:
        return Plan(f"go to {receptacle.name}", f"{why}. First I go to the {receptacle.name}")
    needs_open = command.startswith(("take ", "move ")) and receptacle.openable
    if needs_open and receptacle.name not in world.opened:
        return Plan(f"open {receptacle.name}", f"{why}. The {receptacle.name} is closed, so I open it")
    return Plan(command, why)


def _destination(game: Game, world: World) -> Receptacle:
    """The receptacle to fill: the first of the goal's type holding the most target objects (pick-two)."""
    target = game.goal.object_kind.lower()
    options = [r for r in game.room.receptacles if r.kind == game.goal.receptacle_kind]
    counts = [sum(kind_of(o) == target for o in world.contents.get(r.name, ())) for r in options]
    return options[counts.index(max(counts))]


def _lamp(game: Game, world: World) -> tuple[str, Receptacle]:
    """The goal's lamp and the receptacle it stands on."""
    lamp_kind = game.goal.toggle_kind.lower()
    lamp = next(i.name for i in game.items if kind_of(i.name) == lamp_kind)
    return lamp, by_name(game, world.where(lamp))


def _first_of(game: Game, kind: str) -> Receptacle:
    return next(r for r in game.room.receptacles if r.kind == kind)


def by_name(game: Game, name: str) -> Receptacle:
    return next(r for r in game.room.receptacles if r.name == name)


def _thor_kind(game: Game, kind: str) -> str:
    """ "apple" -> "Apple" (the type as alfworld's tables name it)."""
    return next(i.kind for i in game.items if i.kind.lower() == kind)
