"""Where a model fails at a points game (Points24, EZPoints), stage by stage, on the expert's states.

    python bench/points_stages.py --model runs/p24/sft/model [--adapter A] --env points24 --episodes 100

The expert plays held-out seeds (agent/evaluation.py EVAL_SEED_BASE, as `agent-client eval`);
the model answers every state the expert passes through, ~greedily, and each stage of a good
answer is scored given the truth of the state, so a stage's failures are its own:

- ``valid``: the answer parses to a legal action;
- ``cards``: the "cards" fact states the true values in order (``card_i``: the i-th value);
- ``formula``: the "formula" fact copies the formula so far (it is in the task text);
- ``plan_*``: the formula in the thoughts ("..., and PLAN = 24."): present, using exactly the true
  card values, equal to the target, a valid solution (both), the expert's own plan, and a
  solution for the cards the model itself stated (planning right on a misread);
- ``plan_extends``: the plan starts with the formula written so far (keeping the state);
- ``action``: the expert's next token; ``action_follows_plan``: the next token of its own plan.

Also teacher-forced on the expert's answers: per segment of the answer (the card values, the
formula, the plan, the action...), the share of tokens the model predicts with p > 0.5 (hence
greedily), and every stage by step of the episode. Prints a table, writes ``--out`` JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from visact.agent.evaluation import EVAL_SEED_BASE  # noqa: E402
from visact.agent.parsing import answer_values, parse_action  # noqa: E402
from visact.env_server import formula  # noqa: E402
from visact.env_server.games import make  # noqa: E402
from visact.env_server.games.points import PointsGame  # noqa: E402
from visact.model.generation import generate_batch, prompt_token_ids, teacher_forced_log_probs  # noqa: E402
from visact.model.loading import LoadedVLM, load_vlm  # noqa: E402
from visact.model.prompts import build_messages, format_target  # noqa: E402

#: the plan in the expert's thoughts: "The cards are [..], and PLAN = 24." while building,
#: "The formula PLAN equals 24 and uses every card" once it is complete
PLAN = re.compile(r"and (?P<plan>[^=]+?) = \d+|The formula (?P<done>\S+) equals \d+")
#: the parts of an expert answer scored teacher-forced, by the regex of their characters
SEGMENTS: dict[str, re.Pattern[str]] = {
    "cards value": re.compile(r'"cards": "(\[[^"]*\])"'),
    "formula value": re.compile(r'"formula": "([^"]*)"'),
    "thoughts: cards": re.compile(r"The cards are (\[[^\]]*\])"),
    "thoughts: plan": re.compile(r"and ([^=]+?) = \d+"),
    "thoughts: formula so far": re.compile(r"The formula is ('[^']*') so far"),
    "thoughts: next token": re.compile(r"so I append ('[^']*')"),
    "action value": re.compile(r'"action": "([^"]*)"'),
}


@dataclass
class State:
    """One state the expert passed through."""

    seed: int
    step: int  # 1-based
    image: np.ndarray
    task: str
    legal: tuple[str, ...]
    fact_keys: tuple[str, ...]
    cards: list[int]  # true values, in the image's order
    written: list[str]  # the formula's tokens so far (no blanks)
    action: str
    plan: list[str]  # the expert's plan, as tokens
    answer: str  # the expert's answer


def expert_states(env_name: str, episodes: int) -> list[State]:
    states = []
    for index in range(episodes):
        seed = EVAL_SEED_BASE + index
        env = make(env_name)
        assert isinstance(env, PointsGame)
        env.reset(seed=seed)
        step = 0
        while env.running:
            step += 1
            move = env.expert()
            match = PLAN.search(move.thoughts)
            states.append(
                State(
                    seed=seed,
                    step=step,
                    image=env.render(),
                    task=env.task_text(),
                    legal=tuple(env.action_vocabulary),
                    fact_keys=tuple(env.fact_keys),
                    cards=[card.value for card in env.cards],
                    written=env.written(),
                    action=move.action,
                    plan=_plan(match) if match else env.written(),
                    answer=format_target(move.facts, move.thoughts, move.action),
                )
            )
            env.step(move.action)
    return states


def _plan(match: re.Match[str]) -> list[str]:
    return formula.tokenize(match["plan"] or match["done"])


def _values(text: str) -> list[int] | None:
    try:
        values = json.loads(text)
    except ValueError:
        return None
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        return None
    return values


def _uses_exactly(tokens: Sequence[str], values: Sequence[int]) -> bool:
    return Counter(int(t) for t in tokens if formula.is_number(t)) == Counter(values)


def _equals(tokens: Sequence[str], target: int) -> bool:
    result = formula.evaluate(list(tokens))
    return isinstance(result, formula.Value) and result.value == target


def score_answer(state: State, text: str, target: int) -> dict[str, bool]:
    """Every stage of one free-running answer, against the state's truth."""
    parsed = parse_action(text, state.legal)
    values = answer_values(text)
    stated = _values(values.get("cards", ""))
    thoughts = values.get("thoughts", "")
    match = PLAN.search(thoughts)
    plan = _plan(match) if match else []
    out = {
        "valid": parsed.ok,
        "cards": stated == state.cards,
        "formula": "".join(values.get("formula", "").split()) == "".join(state.written),
        "plan_present": bool(match),
        "plan_uses_cards": bool(match) and _uses_exactly(plan, state.cards),
        "plan_equals_target": bool(match) and _equals(plan, target),
        "plan_solves": bool(match) and _uses_exactly(plan, state.cards) and _equals(plan, target),
        "plan_is_experts": plan == state.plan,
        "plan_solves_own_cards": bool(match and stated)
        and _uses_exactly(plan, stated or [])
        and _equals(plan, target),
        "plan_extends": bool(match) and plan[: len(state.written)] == state.written,
        "action": parsed.action == state.action,
        "action_follows_plan": parsed.ok
        and (
            parsed.action == (plan[len(state.written)] if len(plan) > len(state.written) else "=")
            if plan[: len(state.written)] == state.written and match
            else False
        ),
    }
    for i, value in enumerate(state.cards):
        out[f"card_{i + 1}"] = stated is not None and len(stated) > i and stated[i] == value
    return out


def teacher_forced_segments(loaded: LoadedVLM, states: Sequence[State], batch: int) -> dict[str, float]:
    """Per answer segment: the share of its tokens the model gives p > 0.5 after the expert's prefix."""
    hits: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for start in range(0, len(states), batch):
        chunk = states[start : start + batch]
        messages = [build_messages(s.task, s.legal, s.fact_keys) for s in chunk]
        prompts = prompt_token_ids(loaded, [s.image for s in chunk], messages)
        encoded = [
            loaded.tokenizer(s.answer, add_special_tokens=False, return_offsets_mapping=True) for s in chunk
        ]
        with torch.no_grad():
            forced = teacher_forced_log_probs(
                loaded,
                [s.image for s in chunk],
                prompts,
                [list(e["input_ids"]) for e in encoded],
                temperature=1.0,
            )
        for row, (state, enc) in enumerate(zip(chunk, encoded, strict=True)):
            confident = (forced.log_probs[row] > float(np.log(0.5))).tolist()
            spans: dict[str, list[tuple[int, int]]] = {
                name: [m.span(1) for m in pattern.finditer(state.answer)]
                for name, pattern in SEGMENTS.items()
            }
            for j, (a, b) in enumerate(enc["offset_mapping"]):
                names = [n for n, ss in spans.items() if any(s < b and a < e for s, e in ss)]
                for name in names or ["format (the rest)"]:
                    seen[name] += 1
                    hits[name] += int(confident[j])
                seen["all tokens"] += 1
                hits["all tokens"] += int(confident[j])
    return {name: hits[name] / seen[name] for name in seen}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--env", default="points24", choices=["points24", "ezpoints"])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    loaded = load_vlm(args.model, adapter=args.adapter)
    target = make(args.env).target  # type: ignore[attr-defined]
    states = expert_states(args.env, args.episodes)
    scores: list[dict[str, bool]] = []
    for start in range(0, len(states), args.batch):
        chunk = states[start : start + args.batch]
        samples = generate_batch(
            loaded,
            [s.image for s in chunk],
            [build_messages(s.task, s.legal, s.fact_keys) for s in chunk],
            max_new_tokens=args.max_new_tokens,
            temperature=0.0,
        )
        scores += [score_answer(s, sample.text, target) for s, sample in zip(chunk, samples, strict=True)]
    stages = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
    by_step: dict[int, dict[str, float]] = {}
    grouped: dict[int, list[dict[str, bool]]] = defaultdict(list)
    for state, score in zip(states, scores, strict=True):
        grouped[state.step].append(score)
    for step, rows in sorted(grouped.items()):
        by_step[step] = {"states": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]}}
    segments = teacher_forced_segments(loaded, states, args.batch)
    result = {
        "model": args.model,
        "adapter": args.adapter,
        "env": args.env,
        "episodes": args.episodes,
        "states": len(states),
        "greedy_stages": stages,
        "greedy_by_step": by_step,
        "teacher_forced_segments": segments,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"{args.env}: {len(states)} expert states of {args.episodes} held-out episodes")
    print("greedy answers, stage by stage:")
    for key, value in stages.items():
        print(f"  {key:24s} {value:6.1%}")
    print("teacher-forced, tokens with p > 0.5 per answer segment:")
    for key, value in segments.items():
        print(f"  {key:24s} {value:6.1%}")
    print("by step (cards / plan_solves / plan_extends / action):")
    for step, row in by_step.items():
        print(
            f"  step {step:2d} ({row['states']:4.0f} states)  {row['cards']:6.1%} {row['plan_solves']:6.1%} "
            f"{row['plan_extends']:6.1%} {row['action']:6.1%}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
