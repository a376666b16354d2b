"""What an agent produces: one typed record per environment step, grouped into episodes.

A ``StepRecord`` holds everything the trainer needs to recompute the policy's
log-probs and values without re-tokenizing text: the image, the prompt token
ids, the generated token ids with their sampling log-probs (fp32), where the
action part of the answer begins, the parsed action and its outcome, the
reward and flags, and the policy version that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StepRecord:
    """One environment step taken by a sampled answer."""

    image: np.ndarray  # (H, W, 3) uint8, the observation the answer was sampled for
    prompt_ids: list[int]  # the full prompt as the model saw it (chat template applied)
    generated_ids: list[int]  # sampled tokens, never re-tokenized text
    log_probs: list[float]  # fp32 log-prob of each sampled token under the sampling policy
    action_start: int  # index into generated_ids where the action part begins (len when absent)
    text: str  # the decoded answer, for people and metrics
    action: str  # the action sent to the environment
    parse_failure: str  # "" when the answer parsed to a legal action, else the failure kind
    format_penalty: float  # added to the reward when the answer did not parse
    reward: float  # the environment's reward (penalty not included)
    terminated: bool
    truncated: bool
    policy_version: int  # the weights version that sampled this answer
    temperature: float  # the sampling temperature the log-probs were taken at
    session: str  # "<server address>/<session id>"
    seed: int  # the episode's reset seed
    episode_step: int  # 1-based step index within the episode
    info: dict[str, object] = field(default_factory=dict)
    task: str = ""  # the observation's task text (for demonstrations and people)
    legal_actions: tuple[str, ...] = ()  # the actions that were legal at this step
    #: (fact key, stated correctly) for each fact of the environment's expert, checked against
    #: the answer's (agent.parsing.check_facts); empty when unchecked
    fact_checks: tuple[tuple[str, bool], ...] = ()
    #: the environment's expert's action at this step (servers with an expert, when asked); "" otherwise
    expert_action: str = ""

    def __post_init__(self) -> None:
        if len(self.generated_ids) != len(self.log_probs):
            raise ValueError(
                f"{len(self.generated_ids)} generated tokens but {len(self.log_probs)} log-probs; "
                "they must pair one to one"
            )
        if not 0 <= self.action_start <= len(self.generated_ids):
            raise ValueError(f"action_start {self.action_start} outside 0..{len(self.generated_ids)}")

    @property
    def valid(self) -> bool:
        """The answer parsed to a legal action."""
        return not self.parse_failure

    @property
    def total_reward(self) -> float:
        """What the learner optimizes: the env reward plus any format penalty."""
        return self.reward + self.format_penalty


@dataclass
class Episode:
    """The steps of one finished episode of one session."""

    env: str
    session: str
    seed: int
    steps: list[StepRecord]
    #: the observation after a truncated last step, for the learner's value bootstrap
    bootstrap_image: np.ndarray | None = None
    bootstrap_prompt_ids: list[int] | None = None

    @property
    def success(self) -> bool:
        return bool(self.steps) and bool(self.steps[-1].info.get("success", False))

    @property
    def episode_return(self) -> float:
        return float(sum(s.reward for s in self.steps))

    @property
    def truncated(self) -> bool:
        return bool(self.steps) and self.steps[-1].truncated
