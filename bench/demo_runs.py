"""Does `visact demo` land every time? N runs with different seeds, one after another, as a user runs it.

    python bench/demo_runs.py --env numberline --seeds 0 1 2 3 4 5 6 7 8 9 [-- extra visact demo options]

Each run is ``visact demo --seed S --workdir WORKDIR/ENV/seed-S`` (a fresh pipeline: demonstrations,
SFT, PPO, the held-out evaluations), as a separate process; a run whose ``summary.json`` exists is
reused (``--fresh`` reruns). Prints one row per run and the spread, and writes them to
``WORKDIR/ENV/runs.md`` and ``runs.json`` (the table the README quotes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from visact.orchestration import processes  # noqa: E402
from visact.orchestration.processes import command  # noqa: E402


def run(env: str, seed: int, work: Path, extra: Sequence[str], fresh: bool) -> dict[str, Any]:
    done = work / "summary.json"
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    if not done.exists():
        argv = [*command("visact"), "demo", "--env", env, "--seed", str(seed), "--workdir", str(work), *extra]
        print(f"-- {' '.join(argv[1:])}", flush=True)
        work.parent.mkdir(parents=True, exist_ok=True)
        if processes.run(argv, work.parent / f"seed-{seed}.log") != 0:
            raise RuntimeError(f"visact demo --seed {seed} failed; see {work.parent / f'seed-{seed}.log'}")
    return dict(json.loads(done.read_text()))


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table(env: str, summaries: dict[int, dict[str, Any]], goal: float) -> list[str]:
    lines = [
        f"`visact demo --env {env}`, {len(summaries)} runs (held-out success %, 200 episodes; goal {100 * goal:g}):",
        "",
        "| seed | after SFT | after PPO, ~greedy | after PPO, sampled at the PPO temperature | "
        "facts stated right after PPO | valid answers after PPO | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, s in summaries.items():
        lines.append(
            f"| {seed} | {pct(s['success_after_sft'])} | **{pct(s['success_after_ppo'])}** | "
            f"{pct(s['success_after_ppo_sampled'])} | {pct(s.get('fact_accuracy_after_ppo'))} | "
            f"{pct(s['valid_action_rate_after_ppo'])} | {s['minutes']} |"
        )
    greedy = [s["success_after_ppo"] for s in summaries.values()]
    minutes = [s["minutes"] for s in summaries.values()]
    landed = sum(g >= goal for g in greedy)
    lines += [
        "",
        f"{landed} of {len(greedy)} runs at or above {100 * goal:g}%: {pct(min(greedy))}-{pct(max(greedy))}%, "
        f"median {pct(statistics.median(greedy))}%; {min(minutes)}-{max(minutes)} min per run.",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_list:
        extra = args_list[args_list.index("--") + 1 :]
        args_list = args_list[: args_list.index("--")]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="numberline")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--goal", type=float, default=0.95, help="held-out success a run must reach")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "demo_runs")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(args_list)
    out = args.workdir.resolve() / args.env
    summaries = {seed: run(args.env, seed, out / f"seed-{seed}", extra, args.fresh) for seed in args.seeds}
    lines = table(args.env, summaries, args.goal)
    print("\n".join(lines))
    (out / "runs.md").write_text("\n".join(lines) + "\n")
    (out / "runs.json").write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
