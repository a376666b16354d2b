"""`visact demo` picks each game's settings for what the user left unset, and keeps what was set."""

from __future__ import annotations

import pytest

from visact.configcli import parse_config
from visact.orchestration.demo import BASE_SETTINGS, GAME_SETTINGS, DemoConfig, with_game_settings


def test_unset_settings_come_from_the_game_or_the_base() -> None:
    numberline = with_game_settings(parse_config(DemoConfig, []))
    assert (numberline.sft_steps, numberline.ppo_lr, numberline.format_penalty) == (
        BASE_SETTINGS["sft_steps"],
        BASE_SETTINGS["ppo_lr"],
        BASE_SETTINGS["format_penalty"],
    )
    ezpoints = with_game_settings(parse_config(DemoConfig, ["--env", "ezpoints"]))
    assert ezpoints.format_penalty == GAME_SETTINGS["ezpoints"]["format_penalty"] == 10.0
    assert isinstance(ezpoints.sft_steps, int) and ezpoints.sft_steps == 400
    # answers of ~110 tokens (a long Blackjack hand, a Points24 plan) are not cut off
    for game in ("blackjack", "points24"):
        config = with_game_settings(parse_config(DemoConfig, ["--env", game]))
        assert isinstance(config.max_new_tokens, int) and config.max_new_tokens >= 112
    assert numberline.max_new_tokens == 96 and numberline.fact_reward == BASE_SETTINGS["fact_reward"]


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
