"""ALFWorld: generated games of all six task types on alfworld's engine, determinism, the expert,
the text forms, the frame, the options and the reward (needs the alfworld extra)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("textworld")
pytest.importorskip("fast_downward")

from visact.env_server import games
from visact.env_server.errors import InvalidAction, InvalidRequest, ResetNeeded
from visact.env_server.games.alfworld import engine, problem, rooms, scenes, text, translations, wheel
from visact.env_server.games.alfworld.env import HELD_OUT_SEEDS, MAX_STEPS, AlfWorld
from visact.env_server.games.alfworld.frame import FrameState, Tile, draw_frame
from visact.env_server.games.alfworld.world import goal_conditions, read_world

#: A small bathroom: quick to translate.
SMALL_ROOM = "FloorPlan401"


@pytest.fixture(autouse=True, scope="module")
def private_cache(cache_dir: Path) -> Path:
    """$VISACT_CACHE in a temporary folder: held-out games keep their translations there."""
    return cache_dir


@pytest.fixture(scope="module")
def env() -> Iterator[AlfWorld]:
    made = AlfWorld()
    yield made
    made.close()


def play_expert(env: AlfWorld, seed: int, **options: object) -> tuple[bool, int, float]:
    """(won, steps, return) of the expert on one game."""
    env.reset(seed=seed, options=options or None)
    total = 0.0
    for step in range(1, MAX_STEPS + 1):
        move = env.expert()
        assert move is not None and move.action in env.legal_actions()
        outcome = env.step(move.action)
        total += outcome.reward
        if outcome.terminated:
            return True, step, total
    return False, MAX_STEPS, total


# ---------------------------------------------------------------------- rooms and generation


def test_rooms_come_from_the_wheel_with_its_split() -> None:
    constants = wheel.constants()
    assert len(rooms.room_names()) == 120
    unseen = {int(name.removeprefix("FloorPlan")) for name in rooms.rooms_in("unseen")}
    assert unseen == set(constants.TEST_SCENE_NUMBERS)
    room = rooms.load_room("FloorPlan5")
    names = [r.name for r in room.receptacles]
    assert len(names) == len(set(names))  # every receptacle its own name...
    assert len({r.pddl_id for r in room.receptacles}) == len(names)  # ...and its own location
    assert "sinkbasin 1" in names and "sink 1" not in names  # the sink's pose serves its basin
    assert sum(name.startswith("stoveburner") for name in names) == 4  # added: the layout has no pose


@pytest.mark.parametrize("task_type", scenes.TASK_TYPES)
@pytest.mark.parametrize("split", ["train", "unseen"])
def test_every_task_type_generates_unsolved_games_in_both_splits(task_type: str, split: str) -> None:
    candidates = scenes.rooms_for(task_type, split)  # type: ignore[arg-type]
    assert candidates, f"no {split} room can have {task_type}"
    rng = np.random.default_rng(7)
    game = scenes.generate(rng, task_type, candidates[0])
    assert game.goal.task_type == task_type and game.room.split == split
    assert game.goal.sentence.split()[0] in {"put", "clean", "heat", "cool", "find", "look", "examine"}
    targets = [i for i in game.items if i.kind == game.goal.object_kind]
    assert len(targets) >= (2 if task_type == "pick_two_obj_and_place" else 1)
    goal_kind = game.goal.receptacle_kind
    assert all(game.receptacle(i.receptacle).kind != goal_kind for i in targets)
    if task_type == "look_at_obj_in_light":
        assert any(i.kind == game.goal.toggle_kind for i in game.items)
    text_ = problem.problem_text(game)
    assert "(:goal" in text_ and f"{game.goal.object_kind}Type" in text_


def test_the_engine_starts_unsolved_and_names_things_as_alfworld_does() -> None:
    game = scenes.generate(np.random.default_rng(1), "pick_and_place_simple", SMALL_ROOM)
    played = engine.acquire_engine()
    try:
        names = {r.pddl_id: r.name for r in game.room.receptacles} | {i.pddl_id: i.name for i in game.items}
        played.load_translated(translations.translate(problem.problem_text(game)), names, game.goal.sentence)
        state = played.reset()
        world = read_world(played, game)
    finally:
        engine.release_engine(played)
    assert state.feedback.startswith(
        "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room."
    )
    assert state.feedback.endswith(f"Your task is to: {game.goal.sentence}.")
    assert not state["won"] and goal_conditions(world, game) == (0, 1)
    assert "inventory" in state["admissible_commands"]
    assert {f"go to {r.name}" for r in game.room.receptacles} <= set(state["admissible_commands"])


def test_the_engine_plays_exactly_as_textworlds_own_pddl_env() -> None:
    """The same game in textworld's unmodified PddlEnv (translated twice, commands not memoised):
    the same intro, admissible commands and feedback along a walk."""
    from textworld.envs.pddl import PddlEnv

    game = scenes.generate(np.random.default_rng(4), "pick_clean_then_place_in_recep", SMALL_ROOM)
    names = {r.pddl_id: r.name for r in game.room.receptacles} | {i.pddl_id: i.name for i in game.items}
    grammar = wheel.grammar_text().replace("UNKNOWN GOAL", game.goal.sentence)
    stock = PddlEnv()
    argv = list(sys.argv)
    try:
        stock.load(
            {
                "pddl_domain": wheel.domain_text(),
                "grammar": grammar,
                "pddl_problem": problem.problem_text(game),
            }
        )
        for info in stock._entity_infos.values():
            info.name = names.get(info.id, info.id)
        theirs = stock.reset()
    finally:
        sys.argv = argv
    ours_engine = engine.acquire_engine()
    try:
        ours_engine.load_translated(
            translations.translate(problem.problem_text(game)), names, game.goal.sentence
        )
        ours = ours_engine.reset()
        assert ours.feedback == theirs.feedback
        rng = np.random.default_rng(0)
        for _ in range(15):
            assert ours["admissible_commands"] == theirs["admissible_commands"]
            commands = ours["admissible_commands"]
            command = commands[int(rng.integers(len(commands)))]
            ours, _, _ = ours_engine.step(command)
            theirs, _, _ = stock.step(command)
            assert ours.feedback == theirs.feedback, command
            assert ours["won"] == theirs["won"]
    finally:
        engine.release_engine(ours_engine)


# ---------------------------------------------------------------------- the environment


def test_registered_when_installed() -> None:
    assert "alfworld" in games.names() and "alfworld" not in games.missing()
    made = games.make("alfworld")
    assert made.name == "alfworld" and made.dynamic_actions and made.max_episode_steps == 50


def episode_digest(seed: int, options: dict[str, object] | None = None) -> str:
    """A hash of everything one seeded episode shows: frames, texts, actions, outcomes, expert moves."""
    played = AlfWorld()
    digest = hashlib.sha256()
    try:
        played.reset(seed=seed, options=options)
        for step in range(6):
            digest.update(played.render().tobytes())
            digest.update(played.task_text().encode())
            digest.update(repr(played.legal_actions()).encode())
            move = played.expert()
            digest.update(repr(move).encode())
            legal = played.legal_actions()
            action = move.action if move is not None and step % 2 else legal[(step * 5) % len(legal)]
            outcome = played.step(action)
            digest.update(repr(outcome).encode())
            if outcome.terminated:
                break
    finally:
        played.close()
    return digest.hexdigest()


def test_same_seed_same_episode_byte_for_byte_in_another_process() -> None:
    here = episode_digest(11, {"room": SMALL_ROOM})
    assert episode_digest(11, {"room": SMALL_ROOM}) == here
    assert episode_digest(12, {"room": SMALL_ROOM}) != here
    code = (
        "from tests.unit.test_alfworld import episode_digest, SMALL_ROOM\n"
        "print(episode_digest(11, {'room': SMALL_ROOM}))"
    )
    environment = {**os.environ, "PYTHONHASHSEED": "123"}  # another string-hash order
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == here


def test_auto_split_plays_unseen_rooms_from_the_held_out_seeds(env: AlfWorld) -> None:
    from visact.agent.evaluation import EVAL_SEED_BASE

    assert HELD_OUT_SEEDS == EVAL_SEED_BASE  # agent-client eval plays the unseen rooms
    env.reset(seed=HELD_OUT_SEEDS + 3)
    assert env.game is not None and env.game.room.split == "unseen"
    env.reset(seed=3)
    assert env.game is not None and env.game.room.split == "train"
    env.reset(seed=3, options={"split": "unseen"})
    assert env.game is not None and env.game.room.split == "unseen"


def test_options_pick_the_task_and_room_and_refuse_what_cannot_be(env: AlfWorld) -> None:
    env.reset(seed=1, options={"task_type": 4, "room": 5})
    assert env.game is not None
    assert (env.game.goal.task_type, env.game.room.name) == ("pick_heat_then_place_in_recep", "FloorPlan5")
    bad = [
        ({"task_type": "make_coffee"}, "task_type"),
        ({"task_type": 7}, "task_type"),
        ({"room": "FloorPlan99"}, "room"),
        ({"room": 5, "split": "train"}, "unseen rooms"),
        ({"room": SMALL_ROOM, "task_type": "pick_heat_then_place_in_recep"}, "cannot have"),
        ({"split": "valid"}, "split"),
        ({"text": "none"}, "text"),
        ({"colour": "red"}, "unknown reset option"),
    ]
    for options, message in bad:
        with pytest.raises(InvalidRequest, match=message):
            env.reset(seed=1, options=options)


def test_the_expert_wins_every_task_type_in_unseen_rooms_within_the_limit(env: AlfWorld) -> None:
    for index, task_type in enumerate(scenes.TASK_TYPES):
        for seed in (HELD_OUT_SEEDS + 100 + index, HELD_OUT_SEEDS + 200 + index):
            won, steps, total = play_expert(env, seed, task_type=task_type)
            assert won, f"{task_type}, seed {seed}: the expert did not win in {MAX_STEPS} steps"
            assert steps <= 15 and total >= 51.0


def test_the_expert_finishes_games_a_random_player_has_started(env: AlfWorld) -> None:
    rng = np.random.default_rng(3)
    for index, task_type in enumerate(scenes.TASK_TYPES):
        env.reset(seed=300 + index, options={"task_type": task_type})
        for steps in range(1, MAX_STEPS + 1):
            legal = env.legal_actions()
            if steps <= 15:
                action = legal[int(rng.integers(len(legal)))]
            else:
                move = env.expert()
                assert move is not None
                action = move.action
            if env.step(action).terminated:
                break
        assert not env.running, f"{task_type}: the expert did not finish within {MAX_STEPS} steps"


def test_reward_is_fifty_on_winning_plus_the_goal_conditions_met(env: AlfWorld) -> None:
    env.reset(seed=5, options={"task_type": "pick_heat_then_place_in_recep", "room": 5})
    rewards, infos = [], []
    while True:
        move = env.expert()
        assert move is not None
        outcome = env.step(move.action)
        rewards.append(outcome.reward)
        infos.append(outcome.info)
        if outcome.terminated:
            break
    assert rewards[-1] == 51.0 and infos[-1]["success"] is True and infos[-1]["won"] is True
    fractions = [info["goal_condition_success_rate"] for info in infos]
    assert fractions[0] == 0.0 and 1 / 3 in fractions and fractions[-1] == 1.0
    assert rewards[:-1] == fractions[:-1]  # before the win: the fraction of the goal met
    assert "success" not in infos[0]
    with pytest.raises(ResetNeeded):
        env.step(env.legal_actions()[0])


def test_invalid_commands_are_refused_and_change_nothing(env: AlfWorld) -> None:
    env.reset(seed=2, options={"room": SMALL_ROOM})
    before = (env.task_text(), env.legal_actions(), env.render())
    for action in ("fly away", "GO TO TOILET 1", " look", "take apple 1 from fridge 9"):
        with pytest.raises(InvalidAction, match="admissible"):
            env.step(action)
    assert (env.task_text(), env.legal_actions()) == before[:2] and env.render() is before[2]


# ---------------------------------------------------------------------- text


def first_stocked_receptacle(env: AlfWorld) -> str:
    assert env.world is not None and env.game is not None
    return next(
        r.name for r in env.game.room.receptacles if not r.openable and env.world.contents.get(r.name)
    )


def test_visual_text_leaves_out_what_the_frame_shows_and_full_keeps_it(env: AlfWorld) -> None:
    texts = {}
    for mode in text.TEXT_MODES:
        env.reset(seed=8, options={"room": "FloorPlan5", "text": mode})
        stocked = first_stocked_receptacle(env)
        assert env.world is not None
        inside = env.world.contents[stocked]
        env.step(f"go to {stocked}")
        arrive = env.task_text()
        env.step(f"take {inside[0]} from {stocked}")
        env.step("inventory")
        inventory = env.task_text()
        env.step(f"examine {inside[0]}")
        texts[mode] = (arrive, inventory, env.task_text(), inside[0])
    arrive, inventory, examine, item = texts["full"]
    assert f"you see a {item}" in arrive and f"You are carrying: a {item}." in inventory
    assert "examine" not in examine and item in examine
    arrive, inventory, examine, item = texts["visual"]
    assert "you see" not in arrive and "You arrive at" in arrive
    assert item not in inventory and "see the image" in inventory
    assert examine.count(item) == 1 and "see the image" in examine
    assert all(
        t.startswith("You are an expert in the ALFRED Embodied Environment.") for t in texts["visual"][:3]
    )


def test_visual_text_keeps_every_other_engine_sentence() -> None:
    objects = {"apple 1", "mug 2"}
    assert text.visual("You open the fridge 1. The fridge 1 is open. In it, you see a apple 1.", "open fridge 1",
                       objects) == "You open the fridge 1. The fridge 1 is open."  # fmt: skip
    assert text.visual("You arrive at fridge 1. The fridge 1 is closed.", "go to fridge 1", objects) == (
        "You arrive at fridge 1. The fridge 1 is closed."
    )
    assert text.visual(
        "You heat the apple 1 using the microwave 1.", "heat apple 1 with microwave 1", objects
    ) == ("You heat the apple 1 using the microwave 1.")
    assert text.visual("The fridge 1 is open. In it, you see nothing.", "examine fridge 1", objects) == (
        "The fridge 1 is open."
    )


# ---------------------------------------------------------------------- the frame


def frame(**changes: object) -> np.ndarray:
    state = {
        "room": "FloorPlan5",
        "facing": "fridge 1",
        "openable": True,
        "is_open": True,
        "contents": (Tile("apple 1"), Tile("mug 2")),
        "held": None,
        "visited": ("fridge 1",),
        "opened": ("fridge 1",),
    } | changes
    return draw_frame(FrameState(**state))  # type: ignore[arg-type]


def test_the_frame_shows_contents_states_and_what_is_held_and_hides_a_closed_inside() -> None:
    base = frame()
    assert base.shape == (300, 300, 3) and base.dtype == np.uint8 and not base.flags.writeable
    assert frame() is base  # cached by content: the server re-sends its PNG
    variants = {
        "other contents": frame(contents=(Tile("apple 1"), Tile("egg 1"))),
        "hot": frame(contents=(Tile("apple 1", ("hot",)), Tile("mug 2"))),
        "cold": frame(contents=(Tile("apple 1", ("cold",)), Tile("mug 2"))),
        "clean": frame(contents=(Tile("apple 1", ("clean",)), Tile("mug 2"))),
        "sliced": frame(contents=(Tile("apple 1", ("sliced",)), Tile("mug 2"))),
        "held": frame(held=Tile("potato 1")),
        "held hot": frame(held=Tile("potato 1", ("hot",))),
        "another receptacle faced": frame(facing="microwave 1", visited=("fridge 1", "microwave 1")),
        "closed": frame(is_open=False, opened=()),
    }
    digests = {name: hashlib.sha256(image.tobytes()).hexdigest() for name, image in variants.items()}
    digests["base"] = hashlib.sha256(base.tobytes()).hexdigest()
    assert len(set(digests.values())) == len(digests), "every change must show"
    closed_other = frame(is_open=False, opened=(), contents=(Tile("egg 1"),))
    assert np.array_equal(closed_other, variants["closed"])  # closed: its contents do not show


def test_a_lamp_that_is_on_shows(env: AlfWorld) -> None:
    lamp_off = frame(facing="desk 1", openable=False, is_open=False, contents=(Tile("desklamp 1"),))
    lamp_on = frame(facing="desk 1", openable=False, is_open=False, contents=(Tile("desklamp 1", ("on",)),))
    assert not np.array_equal(lamp_off, lamp_on)


def test_frames_follow_the_game(env: AlfWorld) -> None:
    env.reset(seed=9, options={"room": "FloorPlan5"})
    start = env.render()
    stocked = first_stocked_receptacle(env)
    env.step(f"go to {stocked}")
    state = env.frame_state()
    assert state.facing == stocked and state.contents and state.held is None
    assert state.visited == (stocked,)
    env.step(f"take {state.contents[0].name} from {stocked}")
    after = env.frame_state()
    assert after.held == state.contents[0] and state.contents[0] not in after.contents
    assert not np.array_equal(start, env.render())


def test_importing_and_playing_creates_no_alfworld_data_folder(tmp_path: Path) -> None:
    code = (
        "from visact.env_server.games.alfworld.env import AlfWorld\n"
        "env = AlfWorld(); env.reset(seed=0, options={'room': 'FloorPlan401'}); env.step(env.expert().action)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "ALFWORLD_DATA"} | {"HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=environment)
    assert not (tmp_path / ".cache" / "alfworld").exists()


def test_held_out_games_keep_their_translation_on_disk_checked_on_every_read(
    env: AlfWorld, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = translations.disk_folder()
    assert folder.parent == private_cache / "alfworld"

    def entry_of_the_game() -> Path:
        assert env.game is not None
        return folder / f"{hashlib.sha256(problem.problem_text(env.game).encode()).hexdigest()}.bin"

    env.reset(seed=77, options={"room": SMALL_ROOM})  # a training seed: memory only
    assert not entry_of_the_game().exists()
    seed = HELD_OUT_SEEDS + 77
    env.reset(seed=seed)
    first = (env.task_text(), env.legal_actions(), env.render().tobytes())
    entry = entry_of_the_game()
    assert entry.is_file()

    def no_translator(problem: str) -> translations.Translation:
        raise AssertionError("translated again: the disk entry was not used")

    translations._MEMORY.clear()
    with monkeypatch.context() as patch:
        patch.setattr(translations, "_translate", no_translator)
        env.reset(seed=seed)  # from disk
    assert (env.task_text(), env.legal_actions(), env.render().tobytes()) == first

    damaged = bytearray(entry.read_bytes())
    damaged[-1] ^= 0xFF
    entry.write_bytes(bytes(damaged))
    translations._MEMORY.clear()
    calls = []
    real = translations._translate
    monkeypatch.setattr(translations, "_translate", lambda problem: calls.append(1) or real(problem))
    env.reset(seed=seed)  # the damaged entry is ignored, translated again and written whole
    assert calls == [1] and (env.task_text(), env.legal_actions()) == first[:2]
    data = entry.read_bytes()
    assert hashlib.sha256(data[translations.DIGEST_BYTES :]).digest() == data[: translations.DIGEST_BYTES]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left
