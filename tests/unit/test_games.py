"""The four RL4VLM games: rules and rewards, determinism, oracles, errors, rendering, Gymnasium."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
from PIL import Image

from visact.env_server import games
from visact.env_server.core import Env
from visact.env_server.errors import InvalidAction, InvalidRequest, ResetNeeded
from visact.env_server.games.alfworld import wheel as alfworld_wheel
from visact.env_server.games.blackjack import Blackjack, basic_strategy, hand_total, is_natural, score
from visact.env_server.games.cards import RANKS, Card
from visact.env_server.games.ezpoints import EZPoints
from visact.env_server.games.numberline import NumberLine
from visact.env_server.games.points24 import Points24

NAMES = ["blackjack", "ezpoints", "numberline", "points24"]


def play(env: Env, actions: list[str]) -> list[Any]:
    """Step through ``actions``; the outcomes."""
    return [env.step(action) for action in actions]


def oracle_episodes(env: Env, seeds: range) -> Iterator[tuple[float, bool]]:
    """(return, success) of the oracle on each seeded episode."""
    for seed in seeds:
        env.reset(seed=seed)
        total = 0.0
        for _ in range(100):
            move = env.expert()
            assert move is not None
            outcome = env.step(move.action)
            total += outcome.reward
            if outcome.terminated or outcome.truncated:
                yield total, bool(outcome.info["success"])
                break
        else:
            pytest.fail(f"{env.name}: episode with seed {seed} did not end")


# ---------------------------------------------------------------- every game


def test_the_four_games_are_registered_by_lower_case_name() -> None:
    if alfworld_wheel.installed():  # the optional game joins them when its extra is installed
        assert games.names() == sorted([*NAMES, "alfworld"]) and games.missing() == {}
    else:
        assert games.names() == NAMES
        assert games.missing() == {"alfworld": "pip install 'visact[alfworld]'"}
        with pytest.raises(ValueError, match=r"visact\[alfworld\]"):
            games.make("alfworld")
    for name in NAMES:
        assert games.make(name).name == name


def test_without_the_alfworld_extra_the_list_says_how_to_install_it() -> None:
    blocked = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'textworld':\n"
        "            raise ImportError('blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from visact.env_server.server import main\n"
        "from visact.env_server import games\n"
        "main(['--list'])\n"
        "try:\n"
        "    games.make('alfworld')\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == NAMES
    assert "alfworld (not installed: pip install 'visact[alfworld]')" in lines
    assert any(line.startswith("refused:") and "pip install 'visact[alfworld]'" in line for line in lines)


@pytest.mark.parametrize("name", NAMES)
def test_render_is_a_300x300_rgb_uint8_array(name: str) -> None:
    env = games.make(name)
    env.reset(seed=0)
    image = env.render()
    assert image.shape == env.image_shape == (300, 300, 3)
    assert image.dtype == np.uint8
    assert image.std() > 10  # not blank
    with pytest.raises(ValueError, match="read-only"):
        image[:] = 0  # the cached frame itself, frozen: nobody can alter it
    assert env.render() is image  # the same object again: the server can reuse its PNG


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_episode_different_seeds_differ(name: str) -> None:
    def episode(seed: int) -> list[tuple[bytes, str]]:
        env = games.make(name)
        env.reset(seed=seed)
        frames = [(env.render().tobytes(), env.task_text())]
        for action in env.action_vocabulary[:3]:
            outcome = env.step(action)
            frames.append((env.render().tobytes(), env.task_text()))
            if outcome.terminated or outcome.truncated:
                break
        return frames

    assert episode(7) == episode(7)
    first_frames = {episode(seed)[0][0] for seed in range(10)}
    assert len(first_frames) > 1


@pytest.mark.parametrize("name", NAMES)
def test_unseeded_resets_continue_the_seeded_stream(name: str) -> None:
    def two_resets() -> tuple[bytes, bytes]:
        env = games.make(name)
        env.reset(seed=3)
        first = env.render().tobytes()
        env.reset()
        return first, env.render().tobytes()

    assert two_resets() == two_resets()


@pytest.mark.parametrize("name", NAMES)
def test_unknown_reset_option_is_refused_with_the_accepted_names(name: str) -> None:
    env = games.make(name)
    with pytest.raises(InvalidRequest, match="colour") as error:
        env.reset(seed=0, options={"colour": "red"})
    for option in env.reset_option_names:
        assert option in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_action_raises_and_leaves_the_state_unchanged(name: str) -> None:
    env = games.make(name)
    env.reset(seed=1)
    if name == "numberline":
        env.step("+")  # not only the initial state
    before = (env.render().tobytes(), env.task_text(), env.expert())
    for bad in ["", "jump", "+ ", "11", "STAND", "=="]:
        with pytest.raises(InvalidAction):
            env.step(bad)
    assert (env.render().tobytes(), env.task_text(), env.expert()) == before


@pytest.mark.parametrize("name", NAMES)
def test_step_before_reset_and_after_the_end_needs_a_reset(name: str) -> None:
    env = games.make(name)
    with pytest.raises(ResetNeeded):
        env.step(env.action_vocabulary[0])
    for _ in oracle_episodes(env, range(1)):
        pass
    with pytest.raises(ResetNeeded):
        env.step(env.action_vocabulary[0])


@pytest.mark.parametrize("name", NAMES)
def test_expert_moves_are_legal_with_thoughts_and_every_fact(name: str) -> None:
    env = games.make(name)
    for seed in range(20):
        env.reset(seed=seed)
        move = env.expert()
        assert move is not None
        assert move.action in env.legal_actions()
        assert len(move.thoughts.split()) >= 5
        assert [key for key, _ in move.facts] == list(env.fact_keys)
        assert all(isinstance(value, str) for _, value in move.facts)


@pytest.mark.parametrize("name", NAMES)
def test_the_task_text_does_not_carry_what_the_image_shows(name: str) -> None:
    texts = set()
    for seed in range(10):
        env = games.make(name)
        env.reset(seed=seed)
        texts.add(env.task_text())
    assert len(texts) == 1  # nothing episode-specific before the first move


@pytest.mark.parametrize(("name", "episodes"), [("numberline", 200), ("ezpoints", 200), ("points24", 200)])
def test_the_oracle_always_wins_the_deterministic_games(name: str, episodes: int) -> None:
    results = list(oracle_episodes(games.make(name), range(episodes)))
    assert all(success for _, success in results)
    best = 1.0 if name == "numberline" else 10.0
    assert all(total == best for total, _ in results)


def test_the_blackjack_oracle_wins_at_basic_strategy_rates() -> None:
    results = list(oracle_episodes(Blackjack(), range(5000)))
    wins = sum(success for _, success in results) / len(results)
    mean_return = sum(total for total, _ in results) / len(results)
    assert 0.40 <= wins <= 0.45, wins
    assert -0.10 <= mean_return <= 0.0, mean_return


# ---------------------------------------------------------------- NumberLine


def numberline(start: int, target: int) -> NumberLine:
    env = NumberLine()
    env.reset(seed=0, options={"start": start, "target": target})
    return env


def test_numberline_rewards_closer_zero_further_minus_one_target_one() -> None:
    env = numberline(start=2, target=4)
    first, second = play(env, ["+", "+"])
    assert (first.reward, first.terminated) == (0.0, False)
    assert (second.reward, second.terminated, second.info["success"]) == (1.0, True, True)
    assert play(numberline(start=2, target=4), ["-"])[0].reward == -1.0
    assert play(numberline(start=4, target=1), ["-"])[0].reward == 0.0


def test_numberline_clamps_at_the_bounds_with_a_penalty() -> None:
    env = numberline(start=0, target=3)
    assert play(env, ["-"])[0].reward == -1.0
    assert env.current == 0
    env = numberline(start=5, target=0)
    assert play(env, ["+"])[0].reward == -1.0
    assert env.current == 5


def test_numberline_truncates_after_twice_max_position_steps() -> None:
    env = numberline(start=0, target=5)
    outcomes = play(env, ["-"] * 10)
    assert not any(o.terminated or o.truncated for o in outcomes[:-1])
    assert outcomes[-1].truncated and not outcomes[-1].terminated
    assert outcomes[-1].info["success"] is False
    assert env.max_episode_steps == 10


def test_numberline_start_differs_from_target_and_both_stay_in_range() -> None:
    env = NumberLine()
    seen = set()
    for seed in range(300):
        env.reset(seed=seed)
        assert env.current != env.target
        assert 0 <= env.current <= 5 and 0 <= env.target <= 5
        seen.add((env.current, env.target))
    assert len(seen) == 30  # every pair occurs


def test_numberline_options_are_validated() -> None:
    env = NumberLine()
    env.reset(options={"target": 3.0})  # JSON numbers arrive as floats
    assert env.target == 3
    env.reset(options={"start": 1})
    assert env.current == 1 and env.target != 1
    bad_options: list[dict[str, Any]] = [
        {"target": 6},
        {"target": -1},
        {"target": 2.5},
        {"target": "3"},
        {"target": True},
        {"start": 2, "target": 2},
    ]
    for bad in bad_options:
        with pytest.raises(InvalidRequest):
            env.reset(options=bad)


def test_numberline_expert_reads_the_numbers() -> None:
    move = numberline(start=2, target=4).expert()
    assert move.action == "+"
    assert dict(move.facts) == {"current number": "2", "target number": "4"}
    assert "2" in move.thoughts and "4" in move.thoughts
    assert numberline(start=5, target=1).expert().action == "-"


# ---------------------------------------------------------------- the points games


def ezpoints(*ranks: str) -> EZPoints:
    env = EZPoints()
    env.reset(seed=0, options={"cards": list(ranks)})
    return env


def points24(*ranks: str) -> Points24:
    env = Points24()
    env.reset(seed=0, options={"cards": list(ranks)})
    return env


def test_ezpoints_pays_ten_for_twelve_with_both_cards() -> None:
    outcomes = play(ezpoints("6", "2"), ["6", "*", "2", "="])
    assert [o.reward for o in outcomes] == [0.0, 0.0, 0.0, 10.0]
    assert outcomes[-1].terminated and outcomes[-1].info["success"] is True


def test_face_cards_count_ten_and_aces_one() -> None:
    assert play(ezpoints("K", "2"), ["10", "+", "2", "="])[-1].reward == 10.0
    env = ezpoints("A", "Q")
    assert play(env, ["1"])[0].reward == 0.0
    assert dict(env.expert().facts)["cards"] == "[1, 10]"


def test_a_wrong_value_loses_and_ends_the_episode() -> None:
    last = play(ezpoints("6", "2"), ["6", "+", "2", "="])[-1]
    assert (last.reward, last.terminated, last.info["success"]) == (-1.0, True, False)
    assert last.info["result"] == "8"


def test_an_incomplete_formula_loses_on_equals() -> None:
    last = play(ezpoints("6", "2"), ["6", "*", "="])[-1]
    assert (last.reward, last.terminated, last.info["success"]) == (-1.0, True, False)


def test_a_number_not_on_the_cards_or_used_up_is_penalized_and_leaves_a_blank() -> None:
    env = ezpoints("6", "2")
    outcome = play(env, ["5"])[0]
    assert (outcome.reward, outcome.terminated) == (-1.0, False)
    assert "no card" in outcome.info["illegal"]
    assert env.formula_text() == "" and len(env.tokens) == 1  # the blank counts toward the limit
    outcomes = play(env, ["6", "+", "6"])
    assert outcomes[-1].reward == -1.0 and "already used" in outcomes[-1].info["illegal"]
    assert env.formula_text() == "6+"
    assert play(env, ["2", "="])[-1].reward == -1.0  # 8, with blanks it never mattered


def test_a_pair_may_use_the_same_number_twice() -> None:
    assert play(ezpoints("6", "6"), ["6", "+", "6", "="])[-1].reward == 10.0


def test_a_malformed_operator_is_penalized_and_leaves_a_blank() -> None:
    env = ezpoints("6", "2")
    first, _, third = play(env, ["*", "6", "6"])
    assert first.reward == -1.0 and "cannot follow" in first.info["illegal"]
    assert third.reward == -1.0
    assert env.formula_text() == "6"
    assert play(env, ["*", "2", "="])[-1].reward == 10.0  # recovered


def test_appending_to_a_full_formula_truncates() -> None:
    env = ezpoints("6", "2")
    outcomes = play(env, ["5"] * env.max_formula_tokens)
    assert all(o.reward == -1.0 and not (o.terminated or o.truncated) for o in outcomes)
    last = play(env, ["5"])[0]
    assert (last.reward, last.truncated, last.terminated, last.info["success"]) == (-1.0, True, False, False)
    assert env.max_episode_steps == env.max_formula_tokens + 1


def test_the_task_text_gives_the_current_formula() -> None:
    env = ezpoints("6", "2")
    assert "empty" in env.task_text()
    play(env, ["6", "*"])
    assert "'6*'" in env.task_text()
    assert dict(env.expert().facts)["formula"] == "6*"


def test_points24_needs_every_card_used() -> None:
    last = play(points24("6", "4", "A", "A"), ["6", "*", "4", "="])[-1]
    assert (last.reward, last.info["success"], last.info["all_cards_used"]) == (-1.0, False, False)
    outcomes = play(points24("6", "4", "A", "A"), ["6", "*", "4", "*", "1", "*", "1", "="])
    assert outcomes[-1].reward == 10.0


def test_points24_parentheses_and_exact_division() -> None:
    tokens = ["8", "/", "(", "3", "-", "8", "/", "3", ")", "="]
    outcomes = play(points24("8", "3", "8", "3"), tokens)
    assert [o.reward for o in outcomes] == [0.0] * 9 + [10.0]


def test_points24_division_by_zero_loses() -> None:
    last = play(points24("3", "3", "4", "2"), ["4", "/", "(", "3", "-", "3", ")", "*", "2", "="])[-1]
    assert (last.reward, last.info["result"]) == (-1.0, "division by zero")


def test_points24_refuses_unbalanced_parentheses() -> None:
    env = points24("8", "3", "8", "3")
    assert play(env, [")"])[0].reward == -1.0
    assert play(env, ["(", "8", ")", ")"])[-1].reward == -1.0
    assert env.formula_text() == "(8)"


@pytest.mark.parametrize("cls", [EZPoints, Points24])
def test_only_solvable_hands_are_dealt_unless_asked(cls: type[EZPoints] | type[Points24]) -> None:
    env = cls()
    for seed in range(200):
        env.reset(seed=seed)
        assert env.has_solution(env.cards), env.cards
        assert len(set(env.cards)) == env.card_count  # distinct cards of one deck
    unsolvable = 0
    for seed in range(200):
        env.reset(seed=seed, options={"solvable_only": False})
        unsolvable += not env.has_solution(env.cards)
    assert unsolvable > 5


def test_the_points_oracle_recovers_after_a_detour_and_gives_up_when_lost() -> None:
    env = points24("8", "3", "8", "3")
    play(env, ["5"])  # a blank: the plan still fits
    assert env.expert().action == "8"
    env = points24("6", "4", "A", "A")
    play(env, ["6", "+"])  # 6+... cannot make 24 from 4, 1, 1
    assert env.expert().action == "="


def test_cards_options_are_validated() -> None:
    for bad in [["6"], ["6", "2", "3"], ["6", "Z"], "62", [0, 2], [True, 2]]:
        with pytest.raises(InvalidRequest):
            EZPoints().reset(options={"cards": bad})
    with pytest.raises(InvalidRequest):
        EZPoints().reset(options={"solvable_only": "yes"})
    env = EZPoints()
    env.reset(options={"cards": [10.0, "k"]})
    assert [card.value for card in env.cards] == [10, 10]


# ---------------------------------------------------------------- Blackjack


def cards(*ranks: str) -> list[Card]:
    return [Card(rank, "S") for rank in ranks]


def blackjack(dealer: list[str], player: list[str], **options: Any) -> Blackjack:
    env = Blackjack()
    env.reset(seed=0, options={"dealer_cards": dealer, "player_cards": player, **options})
    return env


def test_hand_totals_count_an_ace_as_eleven_when_it_fits() -> None:
    assert hand_total(cards("A", "6")) == (17, True)
    assert hand_total(cards("A", "6", "10")) == (17, False)
    assert hand_total(cards("A", "A", "9")) == (21, True)
    assert hand_total(cards("K", "Q")) == (20, False)
    assert score(cards("K", "Q", "5")) == 0
    assert is_natural(cards("A", "J")) and not is_natural(cards("A", "5", "5"))


def test_hands_match_gymnasiums_blackjack_helpers() -> None:
    from gymnasium.envs.toy_text import blackjack as reference

    rng = np.random.default_rng(0)
    for _ in range(2000):
        hand = [Card(RANKS[int(i)], "S") for i in rng.integers(13, size=int(rng.integers(2, 6)))]
        values = [card.value for card in hand]
        assert hand_total(hand)[0] == reference.sum_hand(values)
        assert score(hand) == reference.score(values)
        assert is_natural(hand) == reference.is_natural(values)


@pytest.mark.parametrize(
    ("dealer", "player", "reward"),
    [
        (["10", "7"], ["10", "9"], 1.0),
        (["10", "7"], ["10", "7"], 0.0),
        (["10", "8"], ["10", "6"], -1.0),
        (["A", "6"], ["10", "7"], 0.0),  # the dealer stands on soft 17
        (["10", "7"], ["A", "K"], 1.0),  # a natural pays 1 by default
        (["10", "A"], ["A", "K"], 0.0),  # natural against natural
    ],
)
def test_blackjack_stand_settles_by_totals(dealer: list[str], player: list[str], reward: float) -> None:
    env = blackjack(dealer, player)
    outcome = env.step("stand")
    assert (outcome.reward, outcome.terminated, outcome.info["success"]) == (reward, True, reward > 0)
    assert len(env.dealer) == 2  # the dealer already had 17 or more


def test_the_natural_and_sab_options() -> None:
    assert blackjack(["10", "7"], ["A", "K"], natural=True).step("stand").reward == 1.5
    assert blackjack(["10", "A"], ["A", "K"], natural=True).step("stand").reward == 0.0
    sab = blackjack(["10", "5"], ["A", "K"], sab=True)
    assert sab.step("stand").reward == 1.0  # wins whatever the dealer draws to
    assert blackjack(["10", "A"], ["A", "K"], sab=True).step("stand").reward == 0.0


def test_the_dealer_draws_to_seventeen() -> None:
    for seed in range(50):
        env = Blackjack()
        env.reset(seed=seed, options={"dealer_cards": ["10", "2"], "player_cards": ["10", "9"]})
        outcome = env.step("stand")
        dealer_total = hand_total(env.dealer)[0]
        assert dealer_total >= 17
        assert hand_total(env.dealer[:-1])[0] < 17  # it stopped at the first total of 17+
        expected = 1.0 if dealer_total > 21 or dealer_total < 19 else (0.0 if dealer_total == 19 else -1.0)
        assert outcome.reward == expected


def test_hitting_past_21_busts_at_once() -> None:
    busts = 0
    for seed in range(50):
        env = Blackjack()
        env.reset(seed=seed, options={"dealer_cards": ["10", "7"], "player_cards": ["10", "5"]})
        outcome = env.step("hit")
        bust = hand_total(env.player)[0] > 21
        busts += bust
        assert (outcome.reward, outcome.terminated) == ((-1.0, True) if bust else (0.0, False))
    assert 10 < busts < 50


def test_basic_strategy_table() -> None:
    up = {rank: Card(rank, "S") for rank in RANKS}
    assert basic_strategy(16, False, up["10"]) == "hit"
    assert basic_strategy(16, False, up["6"]) == "stand"
    assert basic_strategy(12, False, up["3"]) == "hit"
    assert basic_strategy(12, False, up["4"]) == "stand"
    assert basic_strategy(11, False, up["A"]) == "hit"
    assert basic_strategy(17, False, up["A"]) == "stand"
    assert basic_strategy(17, True, up["2"]) == "hit"
    assert basic_strategy(18, True, up["8"]) == "stand"
    assert basic_strategy(18, True, up["9"]) == "hit"
    assert basic_strategy(18, True, up["A"]) == "hit"
    assert basic_strategy(19, True, up["10"]) == "stand"


def test_blackjack_expert_facts_read_the_cards() -> None:
    move = blackjack(["K", "9"], ["A", "7"]).expert()
    assert dict(move.facts) == {"dealer card": "K", "player cards": "[A, 7]", "player total": "18"}
    assert move.action == "hit"  # soft 18 against a 10


def test_the_dealers_hole_card_stays_hidden_until_the_end() -> None:
    one = blackjack(["K", "9"], ["10", "7"])
    other = blackjack(["K", "2"], ["10", "7"])
    assert np.array_equal(one.render(), other.render())
    one.step("stand")
    assert not np.array_equal(one.render(), other.render())


# ---------------------------------------------------------------- legibility


def downscaled(image: np.ndarray, size: int = 64) -> np.ndarray:
    return np.asarray(
        Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32
    )


def test_every_numberline_state_stays_distinct_at_64_px() -> None:
    env = NumberLine()
    frames = []
    for target in range(6):
        for start in range(6):
            if start != target:
                env.reset(options={"start": start, "target": target})
                frames.append(downscaled(env.render()))
    gaps = [np.abs(a - b).mean() for i, a in enumerate(frames) for b in frames[i + 1 :]]
    assert min(gaps) > 1.0


def test_every_rank_stays_distinct_at_64_px() -> None:
    frames = []
    for rank in RANKS:
        env = Points24()
        env.reset(options={"cards": [rank, "2", "3", "4"]})
        frames.append(downscaled(env.render()))
    gaps = [np.abs(a - b).mean() for i, a in enumerate(frames) for b in frames[i + 1 :]]
    assert min(gaps) > 0.5


# ---------------------------------------------------------------- Gymnasium


GYM_IDS = ["visact/NumberLine-v0", "visact/EZPoints-v0", "visact/Points24-v0", "visact/Blackjack-v0"]


@pytest.mark.parametrize("gym_id", GYM_IDS)
def test_gymnasium_make_and_step(gym_id: str) -> None:
    env = gymnasium.make(gym_id, render_mode="rgb_array")
    observation, info = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    assert observation["image"].shape == (300, 300, 3)
    assert info["legal_actions"] and info["expert_action"] in info["legal_actions"]
    assert set(info["expert_facts"]) == set(env.unwrapped.game.fact_keys)  # type: ignore[attr-defined]
    observation, reward, terminated, truncated, info = env.step(info["expert_action"])  # a string
    assert isinstance(reward, float)
    if not (terminated or truncated):
        env.step(0)  # an index
    assert env.render().shape == (300, 300, 3)  # type: ignore[union-attr]
    env.close()


@pytest.mark.parametrize("gym_id", GYM_IDS)
def test_gymnasium_env_checker_passes(gym_id: str) -> None:
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(gymnasium.make(gym_id, render_mode="rgb_array").unwrapped)


def test_gymnasium_passes_keyword_arguments_to_the_game() -> None:
    env = gymnasium.make("visact/Blackjack-v0", natural=True)
    assert env.unwrapped.game.natural_default is True  # type: ignore[attr-defined]
    with pytest.raises(InvalidAction):
        env.reset(seed=0)
        env.step(7)
