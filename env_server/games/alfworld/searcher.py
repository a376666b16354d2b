"""The searching demonstrator: the next command from what the agent observes now, and nothing else.

The oracle (:mod:`expert`) reads where every object is and walks straight to a target; no
observation says where that is, so a policy that sees only the current observation cannot
learn it from the oracle's demonstrations. This player's every move is a function of what the
agent sees at that step (:func:`observed`): the task, the frame's facts (the receptacle faced,
whether it is open, what is in or on it, what is held, with the objects' states) and the
admissible commands. It keeps no memory: the same observation gives the same move, whatever
came before.

- Holding something the task does not need: put it down, as the oracle does.
- Looking for an object (the target; for look-in-light, once the target is in hand, a lamp of
  the goal's kind): if the receptacle faced shows one that is not already where it must end up
  (pick-two: the one placed first), take it (use the lamp); else open the receptacle faced if it
  is closed and could hold one; else go to the next receptacle that could hold one after the
  one faced, in the order of the ``go to`` commands (the engine lists them alphabetically;
  cyclic; from the middle of the room: the first). Which receptacles could hold an object is
  alfworld's table (``VAL_RECEPTACLE_OBJECTS``, :func:`scenes.holders`; lamps stand on
  furniture, :func:`scenes.lamp_hosts`): a fact of the rules, the same in every game.
- Holding the target: clean/heat/cool it at the first sink basin/microwave/fridge in that order
  when the goal needs it and it is not so already, then go to the first receptacle of the goal's
  kind (open it if closed) and move it there; pick-two then looks for the second the same way.

Its facts are the oracle's (:func:`expert.facts`), and its reasons are said in the thoughts
("There is no soapbar here, so I search the next receptacle that can hold one, the cabinet 2").
"""

from __future__ import annotations

from visact.env_server.core import ExpertMove
from visact.env_server.games.alfworld.expert import NEEDS, Plan, as_move, by_name, put_down, use_at
from visact.env_server.games.alfworld.rooms import Receptacle
from visact.env_server.games.alfworld.scenes import APPLIANCES, Game, holders, lamp_hosts
from visact.env_server.games.alfworld.world import World, kind_of

GO_TO = "go to "


def next_move(game: Game, world: World, admissible: list[str]) -> ExpertMove:
    """The searcher's move: planned on :func:`observed` (``admissible``: the engine's commands now)."""
    seen = observed(world, game)
    return as_move(game, seen, _plan(game, seen, admissible), admissible)


def observed(world: World, game: Game) -> World:
    """What the agent observes of ``world``: the receptacle faced, whether it is open, what is in
    or on it unless it is closed, and what is held, with those objects' states (what the frame
    shows, :func:`expert.facts`); nothing of the other receptacles."""
    facing = by_name(game, world.facing) if world.facing else None
    shut = facing is not None and facing.openable and facing.name not in world.opened
    visible = () if facing is None or shut else world.contents.get(facing.name, ())
    shown = {*visible, world.held} - {""}
    return World(
        facing=world.facing,
        held=world.held,
        contents={world.facing: visible} if visible else {},
        opened=world.opened & {world.facing},
        states={name: states for name, states in world.states.items() if name in shown},
        lamps_on=world.lamps_on & shown,
    )


def _plan(game: Game, seen: World, admissible: list[str]) -> Plan:
    goal = game.goal
    target = goal.object_kind.lower()
    places = _places(seen, admissible)
    if seen.held and kind_of(seen.held) != target:
        return put_down(game, seen, f"I hold the {seen.held}, which the task does not need")
    if not seen.held:
        destination = _first_of(game, places, goal.receptacle_kind) if goal.receptacle_kind else None
        here = _here(seen, target)
        takeable = [o for o in here if not _settled(game, seen, o, destination)]
        if takeable:
            obj = takeable[0]
            return Plan(f"take {obj} from {seen.facing}", f"There is a {obj} here, so I take it")
        why = f"The {here[0]} here is already where it must be" if here else None
        return _search(game, seen, places, goal.object_kind, why)
    if goal.task_type == "look_at_obj_in_light":
        lamp_kind = goal.toggle_kind.lower()
        lamps = _here(seen, lamp_kind)
        if lamps:
            return Plan(f"use {lamps[0]}", f"I hold the {seen.held}; I look at it under the {lamps[0]}")
        return _search(
            game, seen, places, goal.toggle_kind, f"I hold the {seen.held}; there is no {lamp_kind} here"
        )
    need = NEEDS.get(goal.task_type)
    if need is not None and not seen.has_state(seen.held, need[0]):
        state, verb = need
        appliance = _first_of(game, places, APPLIANCES[goal.task_type][0])
        return use_at(seen, appliance, f"{verb} {seen.held} with {appliance.name}",
                      f"The {seen.held} is not {state} yet, so I {verb} it with the {appliance.name}")  # fmt: skip
    destination = _first_of(game, places, goal.receptacle_kind)
    return use_at(seen, destination, f"move {seen.held} to {destination.name}",
                  f"I hold the {seen.held}, so I put it in the {destination.name}")  # fmt: skip


def _search(game: Game, seen: World, places: list[str], kind: str, why: str | None) -> Plan:
    """Open the receptacle faced if it is closed and could hold a ``kind`` (alfworld's type name);
    else go to the next one that could, after the one faced in ``places`` (cyclic)."""
    word = kind.lower()
    could = _could_hold(game, kind)
    facing = by_name(game, seen.facing) if seen.facing else None
    if facing is not None and facing.openable and facing.name not in seen.opened and facing.kind in could:
        return Plan(f"open {facing.name}", f"The {facing.name} is closed, so I open it to look for a {word}")
    candidates = [p for p in places if by_name(game, p).kind in could and p != seen.facing]
    if not candidates:  # pragma: no cover - a game places its objects where the room can hold them
        return Plan("look", f"I see no {word} and nowhere else to look, so I look around")
    later = [p for p in candidates if p > seen.facing]
    following = (later or candidates)[0]
    if facing is None:
        return Plan(
            GO_TO + following,
            f"I am in the middle of the room, so I search the first receptacle that can hold a {word}, "
            f"the {following}",
        )
    reason = why or f"There is no {word} here"
    return Plan(
        GO_TO + following,
        f"{reason}, so I search the next receptacle that can hold one, the {following}",
    )


def _places(seen: World, admissible: list[str]) -> list[str]:
    """Every receptacle in the order of the ``go to`` commands (alphabetical), the one faced included."""
    names = {command.removeprefix(GO_TO) for command in admissible if command.startswith(GO_TO)}
    return sorted(names | {seen.facing} - {""})


def _here(seen: World, kind: str) -> list[str]:
    """The objects of ``kind`` (``"apple"``) the receptacle faced shows."""
    return [o for o in seen.contents.get(seen.facing, ()) if kind_of(o) == kind]


def _settled(game: Game, seen: World, obj: str, destination: Receptacle | None) -> bool:
    """Whether ``obj``, in the receptacle faced, is already where the goal wants it."""
    goal = game.goal
    if destination is None or by_name(game, seen.facing).kind != goal.receptacle_kind:
        return False
    if goal.task_type == "pick_two_obj_and_place":
        return seen.facing == destination.name
    need = NEEDS.get(goal.task_type)
    return need is None or seen.has_state(obj, need[0])


def _could_hold(game: Game, kind: str) -> frozenset[str]:
    """The room's receptacle types where an object of ``kind`` can be (a lamp: furniture)."""
    room = game.room
    hosts = lamp_hosts(room) if kind == game.goal.toggle_kind else holders(kind, room)
    return frozenset(r.kind for r in hosts)


def _first_of(game: Game, places: list[str], kind: str) -> Receptacle:
    """The first receptacle of ``kind`` (alfworld's type name) in ``places``."""
    return next(by_name(game, p) for p in places if by_name(game, p).kind == kind)
