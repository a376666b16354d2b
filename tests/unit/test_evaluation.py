"""agent.evaluation.summarize on hand-made episodes: success with its interval, answer health and
fact accuracy, the actions played and how often they are the expert's."""

from __future__ import annotations

import numpy as np
import pytest

from visact.agent.evaluation import BAD_ANSWER_EXAMPLES, summarize, wilson_interval
from visact.wire.records import Episode, StepRecord


def record(
    *,
    success: bool | None = None,
    facts: tuple[tuple[str, bool], ...] = (),
    valid: bool = True,
    text: str = "{}",
    failure: str = "no_json",
    action: str = "+",
    expert_action: str = "",
) -> StepRecord:
    return StepRecord(
        image=np.zeros((2, 2, 3), dtype=np.uint8),
        prompt_ids=[1],
        generated_ids=[5, 6, 7],
        log_probs=[-0.1] * 3,
        action_start=2,
        text=text,
        action=action,
        parse_failure="" if valid else failure,
        format_penalty=0.0,
        reward=1.0 if success else 0.0,
        terminated=success is not None,
        truncated=False,
        policy_version=0,
        temperature=0.2,
        session="s",
        seed=0,
        episode_step=1,
        info={} if success is None else {"success": success},
        fact_checks=facts,
        expert_action=expert_action,
    )


def test_summary_reports_success_answer_health_and_fact_accuracy() -> None:
    won = Episode(
        "numberline",
        "s",
        1,
        [
            record(facts=(("current number", True), ("target number", True))),
            record(success=True, facts=(("current number", False), ("target number", True))),
        ],
    )
    lost = Episode(
        "numberline", "s", 2, [record(success=False, valid=False, facts=(("current number", False),))]
    )

    summary = summarize([won, lost], env="numberline", policy="p", seconds=2.0)

    assert summary.success_rate == 0.5 and summary.success_ci95 == wilson_interval(1, 2)
    assert summary.valid_action_rate == pytest.approx(2 / 3)
    assert summary.parse_failures == {"no_json": 1}
    assert summary.fact_accuracy == pytest.approx(3 / 5)
    assert summary.fact_accuracy_by_key == pytest.approx({"current number": 1 / 3, "target number": 1.0})
    assert any(line.startswith("fact accuracy      60.0%") for line in summary.lines()), summary.lines()


def test_summary_without_checked_facts_says_so() -> None:
    summary = summarize(
        [Episode("numberline", "s", 1, [record(success=True)])], env="numberline", policy="p", seconds=1.0
    )
    assert summary.fact_accuracy is None and summary.fact_accuracy_by_key == {}
    assert "no facts checked" in "\n".join(summary.lines())
    assert summary.to_dict()["fact_accuracy"] is None  # JSON has no NaN


def test_summary_keeps_the_first_bad_answers_of_each_kind() -> None:
    steps = [record(valid=False, text=f"broken {i}") for i in range(BAD_ANSWER_EXAMPLES + 2)]
    steps.append(record(valid=False, failure="not_legal", text='{"action": "7"}'))
    steps.append(record(text='{"action": "+"}'))
    summary = summarize([Episode("numberline", "s", 1, steps)], env="numberline", policy="p", seconds=1.0)

    assert summary.bad_answers == {
        "no_json": [f"broken {i}" for i in range(BAD_ANSWER_EXAMPLES)],
        "not_legal": ['{"action": "7"}'],
    }
    assert '  bad answer (not_legal): \'{"action": "7"}\'' in summary.lines()


def test_summary_shows_the_actions_played_and_the_agreement_with_the_expert() -> None:
    """A policy that stands on every hand (Blackjack's trap) shows as one action at 100%; agreement
    counts only the steps that had an expert move."""
    steps = [record(action="stand", expert_action="hit"), record(action="stand", expert_action="stand")]
    steps += [record(action="stand"), record(action="hit", expert_action="hit", success=True)]
    summary = summarize([Episode("blackjack", "s", 1, steps)], env="blackjack", policy="p", seconds=1.0)
    assert summary.action_shares == {"stand": 0.75, "hit": 0.25}
    assert list(summary.action_shares) == ["stand", "hit"]  # the most played first
    assert summary.expert_agreement == pytest.approx(2 / 3)
    lines = "\n".join(summary.lines())
    assert "actions played    stand 75.0%, hit 25.0%" in lines and "expert agreement   66.7%" in lines

    many = [record(action=str(i)) for i in range(10)]
    alone = summarize([Episode("points24", "s", 1, many)], env="points24", policy="p", seconds=1.0)
    assert alone.expert_agreement is None and "expert agreement" not in "\n".join(alone.lines())
    assert "(and 4 more)" in "\n".join(alone.lines()) and len(alone.action_shares) == 10
