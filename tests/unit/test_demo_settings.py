"""`visact demo` picks each game's settings for what the user left unset, and keeps what was set."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from visact.agent.config import AgentConfig
from visact.cache import write_manifest
from visact.configcli import parse_config, to_argv
from visact.orchestration.demo import (
    BASE_SETTINGS,
    GAME_SETTINGS,
    DemoConfig,
    agent_servers,
    breakdown_table,
    demonstrations,
    held_out,
    made_by,
    reusable,
    trainer_config,
    warm_start,
    with_game_settings,
)
from visact.orchestration.demos import DemosConfig
from visact.trainer.config import TrainerConfig
from visact.trainer.sft_config import SFTConfig


def test_unset_settings_come_from_the_game_or_the_base() -> None:
    numberline = with_game_settings(parse_config(DemoConfig, []))
    assert (numberline.sft_steps, numberline.ppo_lr, numberline.format_penalty) == (
        GAME_SETTINGS["numberline"]["sft_steps"],
        GAME_SETTINGS["numberline"]["ppo_lr"],
        BASE_SETTINGS["format_penalty"],
    )
    blackjack = with_game_settings(parse_config(DemoConfig, ["--env", "blackjack"]))
    assert (blackjack.sft_steps, blackjack.ppo_lr) == (BASE_SETTINGS["sft_steps"], BASE_SETTINGS["ppo_lr"])
    ezpoints = with_game_settings(parse_config(DemoConfig, ["--env", "ezpoints"]))
    assert ezpoints.format_penalty == GAME_SETTINGS["ezpoints"]["format_penalty"] == 10.0
    assert isinstance(ezpoints.sft_steps, int) and ezpoints.sft_steps == 400
    assert ezpoints.demo_episodes == 1600 > BASE_SETTINGS["demo_episodes"]  # 400 were learned by heart
    # answers of ~110 tokens (a long Blackjack hand, a Points24 plan) are not cut off
    for game in ("blackjack", "points24"):
        config = with_game_settings(parse_config(DemoConfig, ["--env", game]))
        assert isinstance(config.max_new_tokens, int) and config.max_new_tokens >= 112
    assert numberline.max_new_tokens == 96 and numberline.fact_reward == BASE_SETTINGS["fact_reward"]


def test_numberline_keeps_its_budget_and_alfworld_gets_its_own_model_and_budget() -> None:
    numberline = with_game_settings(parse_config(DemoConfig, []))
    budget = ("model", "demo_episodes", "ppo_updates", "steps_per_update", "eval_episodes", "sampled_eval")
    assert [getattr(numberline, name) for name in budget] == ["tiny", 400, 30, 128, 200, True]
    alfworld = with_game_settings(parse_config(DemoConfig, ["--env", "alfworld"]))
    assert alfworld.model == "tiny-alfworld" and alfworld.sampled_eval is False
    for name in ("demo_episodes", "sft_steps", "ppo_updates", "steps_per_update", "eval_episodes"):
        value = getattr(alfworld, name)
        assert isinstance(value, int) and 0 < value == GAME_SETTINGS["alfworld"][name], name
    # CoT answers run to ~100 tokens with tiny-alfworld's tokenizer (docs/results.md#alfworld)
    assert isinstance(alfworld.max_new_tokens, int) and alfworld.max_new_tokens >= 112
    # a smaller budget than the card games': a failing policy plays 50 steps an episode
    assert alfworld.eval_episodes < numberline.eval_episodes
    assert (
        alfworld.ppo_updates * alfworld.steps_per_update
        < numberline.ppo_updates * numberline.steps_per_update
    )
    user = with_game_settings(
        parse_config(
            DemoConfig, ["--env", "alfworld", "--model", "tiny", "--sampled-eval", "--eval-episodes", "8"]
        )
    )
    assert (user.model, user.sampled_eval, user.eval_episodes) == ("tiny", True, 8)


def test_the_breakdown_table_shows_each_value_after_sft_and_after_ppo() -> None:
    sft = {"look": {"episodes": 2, "successes": 0, "success_rate": 0.0, "success_ci95": (0.0, 0.66)}}
    ppo = {
        "look": {"episodes": 2, "successes": 1, "success_rate": 0.5, "success_ci95": (0.09, 0.91)},
        "pick": {"episodes": 1, "successes": 1, "success_rate": 1.0, "success_ci95": (0.21, 1.0)},
    }
    lines = breakdown_table("task_type", sft, ppo).splitlines()
    assert lines[0].split() == ["task_type", "after", "SFT", "after", "PPO"]
    assert lines[1].split() == ["look", "0/2", "0%", "(0%-66%)", "1/2", "50%", "(9%-91%)"]
    assert lines[2].split() == ["pick", "-", "1/1", "100%", "(21%-100%)"]


def test_what_the_user_sets_wins_over_the_game() -> None:
    argv = ["--env", "ezpoints", "--sft-steps", "20", "--format-penalty", "0", "--ppo-lr", "0.001"]
    config = with_game_settings(parse_config(DemoConfig, argv))
    assert (config.sft_steps, config.format_penalty, config.ppo_lr) == (20, 0.0, 0.001)


def test_grpo_needs_groups_that_divide_the_sessions() -> None:
    config = parse_config(DemoConfig, ["--advantage", "grpo", "--group-size", "4"])
    assert (config.advantage, config.group_size, config.sessions) == ("grpo", 4, 8)
    with pytest.raises(ValueError, match="--group-size 3 must divide --sessions 8"):
        DemoConfig(advantage="grpo", group_size=3)
    with pytest.raises(ValueError, match="--advantage grpo needs --group-size 2 or more"):
        DemoConfig(advantage="grpo")


def test_the_ppo_trainer_gets_the_demo_settings_as_a_checked_config(tmp_path: Path) -> None:
    config = with_game_settings(
        parse_config(
            DemoConfig,
            ["--engine", "vllm", "--steps-per-update", "64", "--kl-coef", "0.5", "--no-normalize-advantages"],
        )
    )
    trainer = trainer_config(config, tmp_path / "model", tmp_path / "ppo", tmp_path / "trainer.port")
    assert (trainer.ppo.kl_coef, trainer.ppo.normalize_advantages) == (0.5, False)
    assert trainer.ppo.advantage_std_floor == GAME_SETTINGS["numberline"]["advantage_std_floor"] > 0
    assert parse_config(DemoConfig, ["--action-choice", "likeliest"]).action_choice == "likeliest"
    with pytest.raises(ValueError, match="--action-choice likeliest needs --engine transformers"):
        DemoConfig(engine="vllm", action_choice="likeliest")
    argv = to_argv(trainer)
    assert {"--no-lora-vision", "--no-lora-projector", "--minibatch-size=16", "--port=0"} <= set(argv)
    assert parse_config(TrainerConfig, argv) == trainer
    assert (
        trainer.ppo.lr_min == pytest.approx(config.ppo_lr / 10)
        and config.ppo_lr == GAME_SETTINGS["numberline"]["ppo_lr"]
    )
    with pytest.raises(ValueError, match="multiple of --micro-batch-size"):  # minibatch 25: checked here
        trainer_config(replace(config, steps_per_update=100), tmp_path, tmp_path, tmp_path / "port")


def test_alfworld_demonstrations_come_from_its_searcher_and_every_stage_resets_alike(tmp_path: Path) -> None:
    """`visact demo --env alfworld` records its searching demonstrator (reset option
    expert=search), and its evaluations and PPO agents reset their episodes the same way."""
    out = tmp_path / "demos.jsonl"
    for argv, options in (
        (["--env", "alfworld"], ["expert=search"]),
        (["--env", "alfworld", "--reset-option", "expert=oracle"], ["expert=oracle"]),
        ([], []),
    ):
        config = with_game_settings(parse_config(DemoConfig, argv))
        demos = demonstrations(config, out)
        assert demos.reset_option == options and demos.out == out
        assert parse_config(DemosConfig, to_argv(demos)) == demos  # what `visact demos` is given
        assert ("--reset-option=expert=search" in to_argv(demos)) == (options == ["expert=search"])
        for servers in (
            agent_servers(config, ["127.0.0.1:1"], sessions=32),
            agent_servers(config, ["127.0.0.1:1"], sessions=8, trainer="127.0.0.1:2"),
        ):
            assert servers.reset_option == options
            agent = AgentConfig(servers=servers)
            assert parse_config(AgentConfig, to_argv(agent)) == agent  # what agent-client is given
    with pytest.raises(ValueError, match="NAME=VALUE"):
        DemoConfig(reset_option=["search"])


def test_keep_reuses_an_sft_model_only_when_it_was_trained_the_same_way(tmp_path: Path) -> None:
    demos, model = tmp_path / "demos" / "numberline.jsonl", tmp_path / "sft" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    short = with_game_settings(DemoConfig(workdir=tmp_path, sft_steps=120))
    write_manifest(model, made_by(warm_start(short, demos, model.parent)))

    assert reusable(model, "config.json", made_by(warm_start(short, demos, model.parent)))
    longer = replace(short, sft_steps=300)
    assert not reusable(model, "config.json", made_by(warm_start(longer, demos, model.parent)))
    symbols = replace(short, sft_symbol_words="+-*/()")
    assert not reusable(model, "config.json", made_by(warm_start(symbols, demos, model.parent)))


def test_the_symbol_words_reach_trainer_sft_and_survive_its_command_line() -> None:
    for argv, expected in (
        (["--env", "numberline"], ""),
        (["--env", "ezpoints"], "+-*/()"),  # its "*" was drowned by "+" without them
        (["--env", "numberline", "--sft-symbol-words", "+-*/()"], "+-*/()"),
        (["--env", "points24", "--sft-symbol-words=-+"], "-+"),  # a leading "-" needs the "="
    ):
        sft = warm_start(with_game_settings(parse_config(DemoConfig, argv)), Path("d.jsonl"), Path("o"))
        assert sft.symbol_words == expected
        assert parse_config(SFTConfig, to_argv(sft)) == sft  # what `trainer sft` is given


def test_the_held_out_line_has_success_facts_and_agreement_with_the_expert() -> None:
    config = with_game_settings(DemoConfig(env="blackjack"))
    greedy = {"success_rate": 0.38, "fact_accuracy": 0.395, "expert_agreement": 0.462}
    line = held_out(config, greedy, {"success_rate": 0.375})
    assert line.startswith(
        f"38.0% (temperature 0.01), 37.5% sampling at {config.temperature:g} as in training"
    )
    assert line.endswith("; facts stated correctly 39.5%, the expert's move 46.2%")
    assert held_out(config, {"success_rate": 0.5}, None) == "50.0% (temperature 0.01)"
