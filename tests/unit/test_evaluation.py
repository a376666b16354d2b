"""agent.evaluation.summarize on hand-made episodes: success with its interval, answer health and
fact accuracy."""

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
) -> StepRecord:
    return StepRecord(
        image=np.zeros((2, 2, 3), dtype=np.uint8),
        prompt_ids=[1],
        generated_ids=[5, 6, 7],
        log_probs=[-0.1] * 3,
        action_start=2,
        text=text,
        action="+",
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
