"""agent.evaluation: the success breakdown by an info key (ALFWorld's task types)."""

from __future__ import annotations

import numpy as np
import pytest

from visact.agent.evaluation import breakdown, summarize, wilson_interval
from visact.wire.records import Episode, StepRecord


def episode(seed: int, steps: int, won: bool, info: dict[str, object]) -> Episode:
    records = [
        StepRecord(
            image=np.zeros((2, 2, 3), dtype=np.uint8),
            prompt_ids=[1],
            generated_ids=[2],
            log_probs=[-0.1],
            action_start=0,
            text='{"action": "look"}',
            action="look",
            parse_failure="",
            format_penalty=0.0,
            reward=51.0 if won and i == steps - 1 else 0.0,
            terminated=won and i == steps - 1,
            truncated=not won and i == steps - 1,
            policy_version=0,
            temperature=0.7,
            session="s",
            seed=seed,
            episode_step=i + 1,
            info={**info, **({"success": True} if won and i == steps - 1 else {})},
        )
        for i in range(steps)
    ]
    return Episode(env="alfworld", session="s", seed=seed, steps=records)


def test_breakdown_counts_successes_per_value_of_the_key() -> None:
    episodes = [
        episode(0, 4, True, {"task_type": "pick_two_obj_and_place"}),
        episode(1, 50, False, {"task_type": "pick_two_obj_and_place"}),
        episode(2, 6, True, {"task_type": "look_at_obj_in_light"}),
        episode(3, 2, True, {}),  # no task type: counted overall only
    ]
    summary = summarize(episodes, env="alfworld", policy="p", seconds=1.0, by=["task_type", "absent"])
    assert summary.success_rate == 0.75
    groups = summary.breakdown["task_type"]
    assert list(groups) == ["look_at_obj_in_light", "pick_two_obj_and_place"]
    two = groups["pick_two_obj_and_place"]
    assert (two["episodes"], two["successes"], two["success_rate"], two["mean_steps"]) == (2, 1, 0.5, 27.0)
    assert two["success_ci95"] == wilson_interval(1, 2)
    assert groups["look_at_obj_in_light"]["success_rate"] == 1.0
    assert "absent" not in summary.breakdown  # a key no episode reported gives no group
    assert any("pick_two_obj_and_place" in line and "1/2" in line for line in summary.lines())


def test_no_breakdown_unless_asked() -> None:
    episodes = [episode(0, 3, True, {"task_type": "a"})]
    assert summarize(episodes, env="e", policy="p", seconds=1.0).breakdown == {}
    assert breakdown(episodes, "task_type")["a"]["successes"] == 1


@pytest.mark.parametrize("value", [3, True])
def test_breakdown_values_are_strings(value: object) -> None:
    groups = breakdown([episode(0, 1, False, {"level": value})], "level")
    assert list(groups) == [str(value)]
