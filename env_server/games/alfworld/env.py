"""ALFWorld as a visact environment: generated household games on alfworld's rules engine.

Each reset generates a game (:mod:`scenes`) in one of alfworld's 120 THOR room layouts for one of
its six task types, writes it as a PDDL problem (:mod:`problem`) and loads it into alfworld's
engine, textworld's PDDL environment (:mod:`engine`): the rules, the admissible commands and every
feedback sentence are ALFWorld's. The actions are the engine's admissible commands at each step
(a dynamic vocabulary, exact strings: "go to countertop 1", "take apple 2 from countertop 1",
"move apple 2 to fridge 1", "heat apple 2 with microwave 1", "use desklamp 1", ...).

Reward (RL4VLM's ``compute_reward``): ``50 * won + goal_condition_success_rate`` after every step,
the fraction of the goal's conditions met now (:func:`world.goal_conditions`); RL4VLM's -1 for an
answer that names no admissible action is the agent's (``agent-client --format-penalty 1``). The
episode terminates when the goal is met and is truncated after ``MAX_STEPS`` (50) steps.

Reset options (all optional):
- ``task_type``: one of ALFWorld's six names (``pick_and_place_simple``, ``look_at_obj_in_light``,
  ``pick_clean_then_place_in_recep``, ``pick_heat_then_place_in_recep``,
  ``pick_cool_then_place_in_recep``, ``pick_two_obj_and_place``) or its id 1..6; default: drawn
  uniformly.
- ``room``: ``"FloorPlan12"`` or ``12``; default: drawn uniformly among the split's rooms where the
  task type is possible.
- ``split``: ``"train"`` (alfworld's 96 training rooms), ``"unseen"`` (its 24 held-out rooms) or
  ``"auto"`` (the default): unseen for seeds from ``HELD_OUT_SEEDS`` (10^9) on, where
  ``agent-client eval`` plays, train below, where training seeds are drawn.
- ``text``: ``"visual"`` (default) leaves out of the text what the frame shows (contents, what is
  held, object states); ``"full"`` keeps the engine's text whole (:mod:`text`).
- ``expert``: whose moves :meth:`AlfWorld.expert` returns: ``"oracle"`` (default, :mod:`expert`:
  reads where everything is, goes straight to it) or ``"search"`` (:mod:`searcher`: moves from
  what the agent observes at that step only). It changes nothing of the game.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from visact.env_server.core import Env, ExpertMove, StepOutcome
from visact.env_server.errors import InvalidAction, InvalidRequest, ResetNeeded
from visact.env_server.games.alfworld import engine as engines
from visact.env_server.games.alfworld import expert, searcher, text, translations
from visact.env_server.games.alfworld.frame import FrameState, Tile, draw_frame
from visact.env_server.games.alfworld.problem import problem_text
from visact.env_server.games.alfworld.rooms import Split, load_room, room_names
from visact.env_server.games.alfworld.scenes import TASK_TYPES, Game, generate, goal_targets, rooms_for
from visact.env_server.games.alfworld.world import World, goal_conditions, read_world
from visact.env_server.games.options import check_names

MAX_STEPS = 50
WIN_REWARD = 50.0
#: Seeds from here on play alfworld's unseen rooms under ``split="auto"``: agent-client eval plays
#: seeds 10^9, 10^9 + 1, ... (``visact.agent.evaluation.EVAL_SEED_BASE``); training seeds are drawn below.
HELD_OUT_SEEDS = 1_000_000_000
SPLITS = ("auto", "train", "unseen")
#: The ``expert`` reset option's values: the player :meth:`AlfWorld.expert` asks for its moves.
EXPERTS = {"oracle": expert.next_move, "search": searcher.next_move}


class AlfWorld(Env):
    """ALFWorld's six household task types, generated offline, on alfworld's own rules engine."""

    name = "alfworld"
    dynamic_actions = True
    fact_keys = expert.FACT_KEYS
    image_shape = (300, 300, 3)
    reset_option_names = ("task_type", "room", "split", "text", "expert")
    description = (
        "ALFWorld (RL4VLM): six household task types in rooms generated from alfworld's THOR layouts, "
        "played by alfworld's engine; actions are its admissible commands; the frame shows the receptacle "
        "faced, its contents, the held object and a map."
    )

    def __init__(self, text_mode: text.TextMode = "visual") -> None:
        if text_mode not in text.TEXT_MODES:
            raise ValueError(f"text_mode must be one of {text.TEXT_MODES}, got {text_mode!r}")
        self.default_text: text.TextMode = text_mode
        self.max_episode_steps = MAX_STEPS
        self.seed_rng(None)
        self._engine: Any = None
        self.game: Game | None = None
        self.world: World | None = None
        self.text_mode: text.TextMode = text_mode
        self.expert_name = "oracle"
        self.running = False
        self._admissible: list[str] = []
        self._observation = ""
        self._visited: set[str] = set()

    # ------------------------------------------------------------ episode

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        """Generate a game (see the module docstring for the options) and load it into the engine."""
        given = check_names(self.name, options, self.reset_option_names)
        task_type = _task_type_option(given.get("task_type"))
        room = _room_option(given.get("room"))
        split = _choice_option(given, "split", SPLITS, "auto")
        text_mode = cast(text.TextMode, _choice_option(given, "text", text.TEXT_MODES, self.default_text))
        expert_name = _choice_option(given, "expert", tuple(EXPERTS), "oracle")
        if room is not None and split != "auto" and load_room(room).split != split:
            raise InvalidRequest(
                f"reset option 'room' {room!r} is one of alfworld's {load_room(room).split} rooms, but "
                f"'split' asks for {split!r}; drop one of the two options"
            )
        held_out = seed is not None and seed >= HELD_OUT_SEEDS
        if split == "auto":
            split = "unseen" if held_out else "train"
        if seed is not None:
            self.seed_rng(seed)
        game = self._generate(task_type, room, cast(Split, split))
        if self._engine is None:
            self._engine = engines.acquire_engine()
        names = {r.pddl_id: r.name for r in game.room.receptacles} | {i.pddl_id: i.name for i in game.items}
        # held-out games are the ones evaluations replay: their translations are kept on disk
        translation = translations.translate(problem_text(game), persist=held_out)
        self._engine.load_translated(translation, names, game.goal.sentence, room=game.room.name)
        state = self._engine.reset()
        self.game, self.text_mode, self.running = game, text_mode, True
        self.expert_name = expert_name
        self._visited = set()
        self._observe(state, "")

    def _generate(self, task_type: str | None, room: str | None, split: Split) -> Game:
        """Draw the task type and the room unless given, then the game; all from ``self.np_random``."""
        rng = self.np_random
        if room is None:
            chosen = task_type or TASK_TYPES[int(rng.integers(len(TASK_TYPES)))]
            candidates = rooms_for(chosen, split)
            return generate(rng, chosen, candidates[int(rng.integers(len(candidates)))])
        possible = [t for t in TASK_TYPES if goal_targets(t, room)]
        if task_type is not None and task_type not in possible:
            rooms = ", ".join(rooms_for(task_type, "train") + rooms_for(task_type, "unseen"))
            raise InvalidRequest(
                f"alfworld: {room} cannot have a {task_type} task (its scene type or objects do not allow "
                f"it); it can have {possible}; rooms that can: {rooms}"
            )
        chosen = task_type or possible[int(rng.integers(len(possible)))]
        return generate(rng, chosen, room)

    def step(self, action: str) -> StepOutcome:
        """Send one admissible command to the engine; see the module docstring for the reward."""
        if not self.running or self.game is None:
            raise ResetNeeded("the alfworld episode is over (or never started); call reset")
        if action not in self._admissible:
            raise InvalidAction(
                f"alfworld accepts one of the {len(self._admissible)} admissible commands now, e.g. "
                f"{self._admissible[:5]}; got {action!r}"
            )
        state, _, _ = self._engine.step(action)
        self._observe(state, action)
        assert self.world is not None
        met, total = goal_conditions(self.world, self.game)
        won = bool(state["won"])
        info: dict[str, Any] = {
            "won": won,
            "goal_condition_success_rate": met / total,
            "task_type": self.game.goal.task_type,
            "split": self.game.room.split,  # "unseen" for held-out seeds (split "auto")
        }
        if won:
            self.running = False
            info["success"] = True
        return StepOutcome(WIN_REWARD * won + met / total, terminated=won, info=info)

    def _observe(self, state: Any, command: str) -> None:
        assert self.game is not None
        self._admissible = list(state["admissible_commands"])
        self.world = read_world(self._engine, self.game)
        if self.world.facing:
            self._visited.add(self.world.facing)
        feedback = str(state.feedback)
        if self.text_mode == "visual":
            feedback = text.visual(feedback, command, {item.name for item in self.game.items})
        self._observation = feedback

    # ------------------------------------------------------------ observation

    def legal_actions(self) -> list[str]:
        return list(self._admissible)

    def task_text(self) -> str:
        if self.game is None:
            return ""
        return text.prompt(self._observation, self.game.goal.sentence)

    def render(self) -> np.ndarray:
        return draw_frame(self.frame_state())

    def frame_state(self) -> FrameState:
        """What the frame shows now."""
        if self.game is None or self.world is None:
            raise ResetNeeded("alfworld has no game yet; call reset before render")
        world, room = self.world, self.game.room
        facing = next((r for r in room.receptacles if r.name == world.facing), None)
        openable = facing is not None and facing.openable
        return FrameState(
            room=room.name,
            facing=world.facing,
            openable=openable,
            is_open=world.facing in world.opened,
            contents=tuple(_tile(world, name) for name in world.contents.get(world.facing, ())),
            held=_tile(world, world.held) if world.held else None,
            visited=tuple(sorted(self._visited)),
            opened=tuple(sorted(world.opened)),
        )

    # ------------------------------------------------------------ oracle

    def expert(self) -> ExpertMove | None:
        if self.game is None or self.world is None or not self.running:
            return None
        return EXPERTS[self.expert_name](self.game, self.world, self._admissible)

    def close(self) -> None:
        if self._engine is not None:
            engines.release_engine(self._engine)
            self._engine = None
        self.running = False


def _tile(world: World, name: str) -> Tile:
    states = world.states.get(name, ())
    return Tile(name, (*states, "on") if name in world.lamps_on else states)


def _task_type_option(value: Any) -> str | None:
    if value is None:
        return None
    integral = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
    if integral and 1 <= int(value) <= len(TASK_TYPES):
        return TASK_TYPES[int(value) - 1]
    if isinstance(value, str) and value in TASK_TYPES:
        return value
    raise InvalidRequest(
        f"reset option 'task_type' must be one of {list(TASK_TYPES)} or its id 1..6, got {value!r}"
    )


def _room_option(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
        value = f"FloorPlan{int(value)}"
    if isinstance(value, str) and value in room_names():
        return value
    raise InvalidRequest(
        f"reset option 'room' must be a room with a layout, 'FloorPlan1'..'FloorPlan430' or its number "
        f"(1-30, 201-230, 301-330, 401-430), got {value!r}"
    )


def _choice_option(given: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = given.get(name, default)
    if value not in choices:
        raise InvalidRequest(f"reset option {name!r} must be one of {list(choices)}, got {value!r}")
    return str(value)
