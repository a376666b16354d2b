"""Evaluation summaries: success rate with a 95% Wilson interval, returns, answer health, fact
accuracy (the facts the chains of thought state, against the environment's truth), and the success
broken down by the values of an info key the environment reports (``--by task_type``: ALFWorld's
six task types)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from visact.wire.facts import FactStats
from visact.wire.records import Episode

#: Episode seeds at or above this are held out for evaluation; training uses seeds below it.
EVAL_SEED_BASE = 1_000_000_000
#: answers kept per parse-failure kind in ``EvalSummary.bad_answers``
BAD_ANSWER_EXAMPLES = 5
#: the most played actions printed (all are in the JSON summary)
ACTIONS_SHOWN = 6


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95% by default)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EvalSummary:
    """What `agent-client eval` prints and writes."""

    env: str
    policy: str
    episodes: int
    success_rate: float
    success_ci95: tuple[float, float]
    mean_return: float
    valid_action_rate: float
    mean_cot_tokens: float
    mean_answer_tokens: float
    steps: int
    steps_per_second: float
    seconds: float
    parse_failures: dict[str, int] = field(default_factory=dict)
    policy_version: int = 0
    #: facts of the answers' chains of thought stated correctly / checked against the
    #: environment's expert; None when none was checked (no expert, action-only answers)
    fact_accuracy: float | None = None
    fact_accuracy_by_key: dict[str, float] = field(default_factory=dict)
    #: info key -> its value in an episode's last step -> that group's episodes, successes, rate,
    #: 95% interval and mean steps (only keys some episode reported)
    breakdown: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: failure kind -> the first answers that failed so (up to ``BAD_ANSWER_EXAMPLES`` each, as
    #: sampled): what a broken answer looks like, to tell a cut-off answer from a drifted one
    bad_answers: dict[str, list[str]] = field(default_factory=dict)
    #: with ``--action-choice likeliest``: the share of answers whose chosen legal action is not
    #: the one their text named (or their text named none); None otherwise
    actions_changed_rate: float | None = None
    #: action -> the share of steps that played it, the most played first: a policy that plays
    #: one action whatever it sees shows here
    action_shares: dict[str, float] = field(default_factory=dict)
    #: the share of steps whose played action is the environment's expert's at that state (steps
    #: with an expert move: servers with an expert); None when no step had one
    expert_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        low, high = self.success_ci95
        return [
            f"env {self.env}  policy {self.policy}  episodes {self.episodes}  steps {self.steps}",
            f"success rate      {self.success_rate:6.1%}  (95% CI {low:.1%} .. {high:.1%})",
            f"mean return       {self.mean_return:7.3f}",
            f"valid-action rate {self.valid_action_rate:6.1%}  failures {dict(self.parse_failures) or '-'}",
            f"fact accuracy     {self._facts()}",
            *(
                [
                    f"actions changed   {self.actions_changed_rate:6.1%}  (likeliest legal action, not the text's)"
                ]
                if self.actions_changed_rate is not None
                else []
            ),
            f"actions played    {self._actions()}",
            *(
                [f"expert agreement  {self.expert_agreement:6.1%}  (steps that played the expert's action)"]
                if self.expert_agreement is not None
                else []
            ),
            f"mean CoT tokens   {self.mean_cot_tokens:7.1f}  (answer {self.mean_answer_tokens:.1f})",
            f"steps per second  {self.steps_per_second:7.2f}  ({self.seconds:.1f} s)",
            *(
                f"  {key} {value:<32} {group['successes']:4d}/{group['episodes']:<4d} {group['success_rate']:6.1%}"
                f"  (95% CI {group['success_ci95'][0]:.1%} .. {group['success_ci95'][1]:.1%})"
                for key, groups in self.breakdown.items()
                for value, group in groups.items()
            ),
            *(
                f"  bad answer ({kind}): {text!r}"
                for kind, texts in self.bad_answers.items()
                for text in texts[:1]
            ),
        ]

    def _actions(self) -> str:
        shown = list(self.action_shares.items())[:ACTIONS_SHOWN]
        text = ", ".join(f"{action} {share:.1%}" for action, share in shown) or "-"
        more = len(self.action_shares) - len(shown)
        return f"{text} (and {more} more)" if more > 0 else text

    def _facts(self) -> str:
        if self.fact_accuracy is None:
            return "     -  (no facts checked: no expert on the server, or action-only answers)"
        keys = ", ".join(f"{key} {rate:.1%}" for key, rate in self.fact_accuracy_by_key.items())
        return f"{self.fact_accuracy:6.1%}  ({keys})"


def breakdown(episodes: Sequence[Episode], key: str) -> dict[str, dict[str, Any]]:
    """Success by the value of info ``key`` in each episode's last step, values sorted; episodes
    without it are left out (an empty result when none has it)."""
    groups: dict[str, list[Episode]] = {}
    for episode in episodes:
        info = episode.steps[-1].info if episode.steps else {}
        if key in info:
            groups.setdefault(str(info[key]), []).append(episode)
    out = {}
    for value in sorted(groups):
        members = groups[value]
        wins = sum(e.success for e in members)
        out[value] = {
            "episodes": len(members),
            "successes": wins,
            "success_rate": wins / len(members),
            "success_ci95": wilson_interval(wins, len(members)),
            "mean_steps": sum(len(e.steps) for e in members) / len(members),
        }
    return out


def summarize(
    episodes: Sequence[Episode],
    *,
    env: str,
    policy: str,
    seconds: float,
    policy_version: int = 0,
    by: Sequence[str] = (),
) -> EvalSummary:
    """Aggregate finished episodes into an EvalSummary, broken down by each info key of ``by``."""
    steps = [s for e in episodes for s in e.steps]
    wins = sum(e.success for e in episodes)
    n = len(episodes)
    failures = Counter(s.parse_failure for s in steps if s.parse_failure)
    bad_answers: dict[str, list[str]] = {}
    for step in steps:
        if not step.parse_failure:
            continue
        examples = bad_answers.setdefault(step.parse_failure, [])
        if len(examples) < BAD_ANSWER_EXAMPLES:
            examples.append(step.text)
    facts = FactStats()
    for step in steps:
        facts.add(step.fact_checks)
    played = Counter(s.action for s in steps)
    judged = [s for s in steps if s.expert_action]
    return EvalSummary(
        env=env,
        policy=policy,
        episodes=n,
        success_rate=wins / n if n else 0.0,
        success_ci95=wilson_interval(wins, n),
        mean_return=sum(e.episode_return for e in episodes) / n if n else 0.0,
        valid_action_rate=sum(s.valid for s in steps) / len(steps) if steps else 0.0,
        mean_cot_tokens=sum(s.action_start for s in steps) / len(steps) if steps else 0.0,
        mean_answer_tokens=sum(len(s.generated_ids) for s in steps) / len(steps) if steps else 0.0,
        steps=len(steps),
        steps_per_second=len(steps) / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        parse_failures=dict(failures),
        policy_version=policy_version,
        fact_accuracy=None if math.isnan(facts.accuracy) else facts.accuracy,
        fact_accuracy_by_key=facts.by_key(),
        breakdown={key: groups for key in by if (groups := breakdown(episodes, key))},
        bad_answers=bad_answers,
        action_shares={action: count / len(steps) for action, count in played.most_common()},
        expert_agreement=sum(s.action == s.expert_action for s in judged) / len(judged) if judged else None,
    )
