"""The learning benchmark: does SFT + PPO learn, does PPO beat SFT alone, does CoT beat action-only?

    python bench/learning.py --games numberline ezpoints blackjack [points24] --budget-minutes 20
    python bench/learning.py --games alfworld --variants cot

Per game, every row evaluated on the same held-out seeds (agent/evaluation.py EVAL_SEED_BASE)
with a 95% Wilson interval:

- ``random``: uniformly random legal actions (the floor);
- ``oracle``: the game's expert (the ceiling the demonstrations come from);
- ``SFT only (CoT)`` and ``SFT + PPO (CoT)``: one `visact demo` run with the CoT prompt;
- ``SFT only (action only)`` and ``SFT + PPO (action only)``: one `visact demo --no-cot` run
  (its SFT learns from action-only demonstrations), the paper's no-CoT ablation, with the
  answer's opening ``{"action":`` in the prompt (the demo's default for action-only answers:
  without it PPO unlearns the opening and the answers stop parsing);

plus the running training success over the last 200 training episodes (the paper's number;
1000 for Blackjack, as the paper) from the trainer's metrics. Each `visact demo` run is real
processes on loopback, exactly as a user runs it; ``--budget-minutes`` bounds each run's PPO
stage (``visact demo --ppo-minutes``), the update count of the game's plan bounds it too.

Writes ``docs/results.md`` (the part between the ``learning`` markers for the card games, the
``learning-alfworld`` markers for ALFWorld, with its success by task type; text around them is
kept) and ``docs/results/<game>.png`` (training curves of both runs against the held-out
rows). Resumable: a run whose ``summary.json`` exists is not run again (``--fresh`` reruns);
work directories live under ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from visact.orchestration.demo import (  # noqa: E402
    DemoConfig,
    evaluate,
    evaluation_config,
    run_demo,
    start_env_servers,
    with_game_settings,
)
from visact.orchestration.processes import stop_all  # noqa: E402
from visact.trainer.metrics import read_metrics, trailing_success  # noqa: E402


def markers(section: str) -> tuple[str, str]:
    """The comments that open and close a generated block of docs/results.md."""
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"


@dataclass(frozen=True)
class Plan:
    """How a game is benchmarked: `visact demo` settings, the paper's numbers and our goal."""

    demo: Mapping[str, Any] = field(default_factory=dict)  # DemoConfig fields over its defaults
    paper_cot: float | None = None  # RL4VLM, LLaVA-1.6-7B, SFT then PPO (success %)
    paper_no_cot: float | None = None
    paper_sft: float | None = None
    goal: float | None = None  # held-out success % the issue asks of SFT + PPO (CoT)
    running_window: int = 200  # training episodes in the running mean (paper: 1000 for Blackjack)
    best: str = "-"  # the best published success % we found (CoT), with who reached it
    goal_vs_oracle: float | None = None  # points SFT + PPO (CoT) may lie below the oracle's rate
    section: str = "learning"  # the markers of the docs/results.md block its rows go to


PLANS: dict[str, Plan] = {
    "numberline": Plan({}, 89.4, 26.9, 24.8, goal=95.0, best="100 (GiGPO, Qwen2.5-VL-3B; CoSo, 7B)"),
    # EZPoints and Points24 get their own settings from visact.orchestration.demo.GAME_SETTINGS
    "ezpoints": Plan({}, 50.0, 29.9, 23.0, goal=90.0, best="100 (GiGPO, Qwen2.5-VL-3B)"),
    # 200 hands give +-7 points: Blackjack is measured on 2,000, against the oracle on the same hands
    "blackjack": Plan(
        {"eval_episodes": 2000},
        40.2,
        40.4,
        23.1,
        goal=41.5,
        running_window=1000,
        best="41.5 (CoSo, 7B)",
        goal_vs_oracle=1.0,
    ),
    "points24": Plan(
        {}, 2.3, 0.0, 2.6, goal=17.5, best="53.5 (GTR-Turbo, Qwen2.5-VL-7B); 17.5 (GTR, LLaVA-7B)"
    ),
    # the paper's ALFWorld is THOR frames of ALFWorld's own games; ours are generated games on its
    # engine with Pillow frames (docs/alfworld.md), its own budget (GAME_SETTINGS), unseen rooms
    "alfworld": Plan({}, 21.7, 16.3, 17.7, best="26.5 (CoSo, 7B)", section="learning-alfworld"),
}

VARIANTS = (("cot", True), ("action_only", False))


def demo_config(game: str, variant: str, cot: bool, args: argparse.Namespace) -> DemoConfig:
    plan = PLANS[game]
    config = DemoConfig(
        env=game,
        workdir=args.workdir / game / variant,
        cot=cot,
        keep=True,  # resume finished stages (demonstrations, SFT) of an interrupted run
        eval_episodes=args.eval_episodes,
        seed=args.seed,
        ppo_minutes=args.budget_minutes,
    )
    return replace(config, **dict(plan.demo))


def run_variant(game: str, variant: str, cot: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One `visact demo` run (SFT, eval, PPO, eval), or its summary if it already finished."""
    config = demo_config(game, variant, cot, args)
    done = config.workdir / "summary.json"
    if done.exists():
        print(f"-- {game} {variant}: done before, reusing {done}", flush=True)
        return dict(json.loads(done.read_text()))
    print(f"\n==== {game} {variant}", flush=True)
    return run_demo(config)


def run_baselines(game: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The random and oracle rows on the same held-out seeds (their own env servers)."""
    work = args.workdir / game / "baselines"
    wanted: dict[str, dict[str, bool]] = {"random": {"random_policy": True}, "oracle": {"oracle": True}}
    out = {name: work / f"eval_{name}.json" for name in wanted}
    missing = [name for name, path in out.items() if not path.exists()]
    if missing:
        work.mkdir(parents=True, exist_ok=True)
        config = with_game_settings(replace(demo_config(game, "baselines", True, args), workdir=work))
        processes: list[Any] = []
        try:
            servers = start_env_servers(game, 1, work, processes)
            for name in missing:
                evaluate(
                    evaluation_config(config, servers, str(config.model), None, out[name], **wanted[name])
                )
        finally:
            stop_all(processes)
    return {name: dict(json.loads(path.read_text())) for name, path in out.items()}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def ci(interval: Sequence[float]) -> str:
    """A 95% interval in percent: whole percents, one decimal below 1% (0 of 2,000 is "0-0.2")."""
    return "-".join(f"{100 * x:.1f}" if 0.05 <= 100 * x < 1 else f"{100 * x:.0f}" for x in interval)


def game_rows(game: str, runs: Mapping[str, dict[str, Any]], base: Mapping[str, dict[str, Any]]) -> list[str]:
    """Markdown table rows for one game."""
    plan = PLANS[game]
    rows = []

    def row(
        name: str,
        ev: Mapping[str, Any],
        running: float | None,
        paper: float | None,
        note: str,
        best: str = "-",
    ) -> None:
        rows.append(
            f"| {game} | {name} | **{pct(ev['success_rate'])}** ({ci(ev['success_ci95'])}) | "
            f"{pct(ev.get('fact_accuracy'))} | {pct(running)} | {pct(ev['valid_action_rate'])} | "
            f"{'-' if paper is None else paper} | {best} | {note} |"
        )

    row("random", base["random"], None, None, "")
    row("oracle (expert)", base["oracle"], None, None, "")
    for variant, label, paper_ppo in (
        ("cot", "CoT", plan.paper_cot),
        ("action_only", "action only", plan.paper_no_cot),
    ):
        summary = runs.get(variant)
        if summary is None:
            continue
        work = Path(summary["config"]["workdir"])
        after_sft = json.loads((work / "eval_after_sft.json").read_text())
        after_ppo = json.loads((work / "eval_after_ppo.json").read_text())
        running = trailing_success(read_metrics(work / "ppo"), plan.running_window)
        row(f"SFT only ({label})", after_sft, None, plan.paper_sft if variant == "cot" else None, "")
        note = f"{summary['ppo_updates']} updates, {summary['minutes']} min"
        if variant == "cot":
            note += goal_note(plan, after_ppo, base["oracle"])
        row(
            f"SFT + PPO ({label})",
            after_ppo,
            running,
            paper_ppo,
            note,
            plan.best if variant == "cot" else "-",
        )
    return rows


def goal_note(plan: Plan, ev: Mapping[str, Any], oracle: Mapping[str, Any]) -> str:
    """``; goal G: met`` or ``missed by X``; against the oracle on the same seeds where asked."""
    ours = 100 * ev["success_rate"]
    note = ""
    if plan.goal_vs_oracle is not None:
        gap = ours - 100 * oracle["success_rate"]
        within = gap >= -plan.goal_vs_oracle
        note += f"; {gap:+.1f} vs the oracle (goal: within {plan.goal_vs_oracle:g}: {'met' if within else 'missed'})"
        if 100 * oracle["success_rate"] < (plan.goal or 0):
            note += f"; the oracle itself wins {100 * oracle['success_rate']:.1f} on these seeds, below {plan.goal:g}"
    if plan.goal is not None:
        gap = ours - plan.goal
        note += f"; goal {plan.goal:g}: {'met' if gap >= 0 else f'missed by {-gap:.1f}'}"
    return note


def curves_png(
    game: str, runs: Mapping[str, dict[str, Any]], base: Mapping[str, dict[str, Any]], out: Path
) -> Path:
    from visact.orchestration.plots import compare_curves

    series = {
        label: read_metrics(Path(runs[variant]["config"]["workdir"]) / "ppo")
        for variant, label in (("cot", "PPO, CoT"), ("action_only", "PPO, action only"))
        if variant in runs
    }
    levels = {"random (held-out)": base["random"]["success_rate"]}
    if "cot" in runs:
        levels["SFT only, CoT (held-out)"] = runs["cot"]["success_after_sft"]
    return compare_curves(
        series,
        out,
        title=f"{game}: training success (running mean)",
        levels=levels,
        window=PLANS[game].running_window,
    )


def write_report(results: Mapping[str, tuple[dict[str, Any], dict[str, Any]]], out: Path) -> None:
    """Each section's block of ``out`` from the games in ``results`` that belong to it; a section
    with no game in ``results`` is left as it is."""
    text = out.read_text() if out.exists() else "# Results\n"
    for section in dict.fromkeys(PLANS[game].section for game in results):
        games = {game: result for game, result in results.items() if PLANS[game].section == section}
        text = replace_block(text, section, section_block(games))
    out.write_text(text)


def section_block(results: Mapping[str, tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    lines = [
        "| game | policy | held-out success % (95% CI) | facts stated right % | training success %, last 200 "
        "episodes* | valid answers % | RL4VLM 7B % | best published % | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for game, (runs, base) in results.items():
        lines += game_rows(game, runs, base)
    if "blackjack" in results:
        lines += ["", "\\* Blackjack: last 1000 episodes, as the paper."]
    for game, (runs, base) in results.items():
        lines += breakdown_rows(game, runs, base)
    lines.append("")
    lines += [f"![{game}](results/{game}.png)" for game in results]
    return lines


def breakdown_rows(
    game: str, runs: Mapping[str, dict[str, Any]], base: Mapping[str, dict[str, Any]]
) -> list[str]:
    """Held-out success by task type (games whose info reports one: ALFWorld), every policy."""
    columns = {"random": base["random"], "oracle": base["oracle"]}
    for variant, summary in runs.items():
        work = Path(summary["config"]["workdir"])
        for stage, label in (("after_sft", "SFT"), ("after_ppo", "SFT + PPO")):
            columns[f"{label} ({variant})"] = json.loads((work / f"eval_{stage}.json").read_text())
    by_type = {name: ev.get("breakdown", {}).get("task_type", {}) for name, ev in columns.items()}
    types = sorted({task for groups in by_type.values() for task in groups})
    if not types:
        return []

    def cell(group: Mapping[str, Any] | None) -> str:
        if group is None:
            return "-"
        return f"{group['successes']}/{group['episodes']} ({ci(group['success_ci95'])})"

    lines = ["", f"{game}: held-out successes by task type (95% CI, %)", ""]
    lines.append("| task type | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for task in types:
        lines.append(f"| {task} | " + " | ".join(cell(by_type[name].get(task)) for name in columns) + " |")
    return lines


def replace_block(text: str, section: str, lines: Sequence[str]) -> str:
    """``text`` with the block between ``section``'s markers replaced (appended if it has none)."""
    begin, end = markers(section)
    block = "\n".join([begin, "", *lines, "", end])
    if begin in text and end in text:
        return text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    return text.rstrip() + "\n\n" + block + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--games", nargs="+", default=["numberline", "ezpoints", "blackjack"], choices=list(PLANS)
    )
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="PPO wall-time cap per run")
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=None,
        help="held-out episodes per evaluation (default: the game's)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[variant for variant, _ in VARIANTS],
        choices=[variant for variant, _ in VARIANTS],
        help="which runs per game: with CoT, action only",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "learning")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--fresh", action="store_true", help="rerun runs that finished before")
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()
    if args.fresh:
        for game in args.games:
            shutil.rmtree(args.workdir / game, ignore_errors=True)
    started = time.monotonic()
    for game in args.games:
        base = run_baselines(game, args)
        runs = {
            variant: run_variant(game, variant, cot, args)
            for variant, cot in VARIANTS
            if variant in args.variants
        }
        curves_png(game, runs, base, args.docs / "results" / f"{game}.png")
        # after every game, with every game finished so far (this call or earlier ones)
        write_report(finished(args.workdir), args.docs / "results.md")
        print(f"-- {game} done ({(time.monotonic() - started) / 60:.0f} min so far)", flush=True)
    print(f"wrote {args.docs / 'results.md'}")
    return 0


def finished(workdir: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Every game under ``workdir`` with its baselines and at least one finished run, in PLANS order."""
    results = {}
    for game in PLANS:
        base_files = {
            name: workdir / game / "baselines" / f"eval_{name}.json" for name in ("random", "oracle")
        }
        runs = {
            variant: json.loads((workdir / game / variant / "summary.json").read_text())
            for variant, _ in VARIANTS
            if (workdir / game / variant / "summary.json").exists()
        }
        if runs and all(path.exists() for path in base_files.values()):
            base = {name: json.loads(path.read_text()) for name, path in base_files.items()}
            results[game] = (runs, base)
    return results


if __name__ == "__main__":
    sys.exit(main())
