"""ALFWorld's speed: reset and step times in process against textworld's stock PddlEnv on the same
games, and episodes per second of 16 sessions of one env-server stepped with BatchStep.

    python bench/alfworld_speed.py --episodes 60 --baseline-games 8 --seconds 120 --warmup 30

In process: ``--episodes`` games per split (train rooms, seeds from 0; unseen rooms, seeds from
10^9, as ``agent-client eval`` plays them), each reset, then 10 random commands and the expert
to the end; every reset and step is timed (a warm-up game first: imports and the first engine).
The baseline: the first ``--baseline-games`` of those games loaded into textworld's unmodified
``PddlEnv`` (``load`` + ``reset``, what the probe measured at 2.9 s median) and stepped with the
same random commands. Server: a real ``env-server --env alfworld`` on loopback, ``--sessions``
sessions with the expert, every round one ``BatchStep`` of all their steps and one of the
resets of the episodes that ended, for ``--seconds``. Writes ``bench/results/alfworld.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from env_throughput import start_server

from visact.env_server.client import EnvClient, ResetCall, ResetResult, StepCall, StepResult
from visact.env_server.games.alfworld import problem, wheel
from visact.env_server.games.alfworld.env import HELD_OUT_SEEDS, AlfWorld

RESULTS = Path(__file__).resolve().parent / "results"
RANDOM_STEPS = 10


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.array(values)
    return {
        "n": len(values),
        "p50": float(np.percentile(array, 50)),
        "p90": float(np.percentile(array, 90)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
        "mean": float(array.mean()),
    }


def play_in_process(env: AlfWorld, seed: int, resets: list[float], steps: list[float]) -> list[str]:
    """One game: reset, random commands, then the expert; the commands it sent."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    env.reset(seed=seed)
    env.render()
    env.task_text()
    resets.append(time.perf_counter() - started)
    sent = []
    for number in range(env.max_episode_steps):
        legal = env.legal_actions()
        move = env.expert() if number >= RANDOM_STEPS else None
        action = move.action if move is not None else legal[int(rng.integers(len(legal)))]
        started = time.perf_counter()
        outcome = env.step(action)
        env.render()
        env.task_text()
        steps.append(time.perf_counter() - started)
        sent.append(action)
        if outcome.terminated:
            break
    return sent


def stock_baseline(env: AlfWorld, seed: int, commands: list[str]) -> tuple[float, list[float]]:
    """The same game in textworld's unmodified PddlEnv: load + reset time, and step times."""
    from textworld.envs.pddl import PddlEnv

    env.reset(seed=seed)
    game = env.game
    assert game is not None
    names = {r.pddl_id: r.name for r in game.room.receptacles} | {i.pddl_id: i.name for i in game.items}
    data = {
        "pddl_domain": wheel.domain_text(),
        "grammar": wheel.grammar_text().replace("UNKNOWN GOAL", game.goal.sentence),
        "pddl_problem": problem.problem_text(game),
    }
    argv = list(sys.argv)
    stock = PddlEnv()
    started = time.perf_counter()
    try:
        stock.load(data)
        for info in stock._entity_infos.values():
            info.name = names.get(info.id, info.id)
        stock.reset()
    finally:
        sys.argv = argv
    reset = time.perf_counter() - started
    steps = []
    for command in commands[:RANDOM_STEPS]:
        started = time.perf_counter()
        stock.step(command)
        steps.append(time.perf_counter() - started)
    return reset, steps


def expert_action(result: object) -> str:
    """The expert's move in a batch result (an error fails the benchmark)."""
    assert isinstance(result, ResetResult | StepResult), result
    assert result.observation.expert is not None
    return result.observation.expert.action


def server_episodes(sessions: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Episodes/s and steps/s of ``sessions`` expert sessions, batched, against a real env-server
    (after ``warmup`` seconds of the same, not counted: engines made, rooms' commands worded)."""
    process, port = start_server("alfworld")
    try:
        client = EnvClient(f"127.0.0.1:{port}", timeout=600)
        sids = [client.create_session(want_expert=True) for _ in range(sessions)]
        seeds = iter(range(10_000, 10_000_000))
        results = client.batch([ResetCall(s, seed=next(seeds)) for s in sids])
        moves = {s: expert_action(r) for s, r in zip(sids, results, strict=True)}
        counts = {"episodes": 0, "wins": 0, "steps": 0}
        started = time.perf_counter()
        measuring = False
        while time.perf_counter() - started < seconds:
            if not measuring and time.perf_counter() - started >= warmup:
                measuring, started = True, time.perf_counter()
                counts = dict.fromkeys(counts, 0)
            calls = [StepCall(s, moves[s]) for s in sids]
            ended = []
            for call, result in zip(calls, client.batch(calls), strict=True):
                assert isinstance(result, StepResult), result
                counts["steps"] += 1
                if result.done:
                    counts["episodes"] += 1
                    counts["wins"] += bool(result.info.get("success"))
                    ended.append(call.session_id)
                else:
                    moves[call.session_id] = expert_action(result)
            if ended:
                resets = client.batch([ResetCall(s, seed=next(seeds)) for s in ended])
                for session_id, reset in zip(ended, resets, strict=True):
                    moves[session_id] = expert_action(reset)
        elapsed = time.perf_counter() - started
        client.close()
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {
        "sessions": sessions,
        "warmup_seconds": warmup,
        "seconds": elapsed,
        **counts,
        "episodes_per_second": counts["episodes"] / elapsed,
        "steps_per_second": counts["steps"] / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60, help="games per split, in process")
    parser.add_argument("--baseline-games", type=int, default=8, help="of those, also in the stock PddlEnv")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=120.0, help="of the server measurement")
    parser.add_argument("--warmup", type=float, default=30.0, help="server seconds played before measuring")
    args = parser.parse_args()

    env = AlfWorld()
    play_in_process(env, 999_999, [], [])  # warm-up: imports, the first engine, the grammar
    timings: dict[str, dict[str, list[float]]] = {}
    commands: dict[int, list[str]] = {}
    first_steps: dict[int, list[float]] = {}
    for split, base in (("train", 0), ("unseen", HELD_OUT_SEEDS)):
        resets: list[float] = []
        steps: list[float] = []
        for seed in range(base, base + args.episodes):
            before = len(steps)
            commands[seed] = play_in_process(env, seed, resets, steps)
            first_steps[seed] = steps[before : before + RANDOM_STEPS]
        timings[split] = {"reset": resets, "step": steps}
    ours_resets = [t for split in timings.values() for t in split["reset"]]
    ours_steps = [t for split in timings.values() for t in split["step"]]

    baseline_seeds = list(range(args.baseline_games))  # the first train games, measured cold above
    stock_resets, stock_steps = [], []
    for seed in baseline_seeds:
        reset, steps = stock_baseline(env, seed, commands[seed])
        stock_resets.append(reset)
        stock_steps += steps
    same_resets = timings["train"]["reset"][: len(baseline_seeds)]
    same_steps = [t for seed in baseline_seeds for t in first_steps[seed]]
    server = server_episodes(args.sessions, args.seconds, args.warmup)

    summary: dict[str, Any] = {
        "reset_seconds": {split: percentiles(t["reset"]) for split, t in timings.items()}
        | {"all": percentiles(ours_resets)},
        "step_seconds": {split: percentiles(t["step"]) for split, t in timings.items()}
        | {"all": percentiles(ours_steps)},
        "baseline": {
            "games": len(baseline_seeds),
            "stock_reset_seconds": percentiles(stock_resets),
            "ours_reset_seconds_same_games": percentiles(same_resets),
            "reset_speedup_median": statistics.median(stock_resets) / statistics.median(same_resets),
            "stock_step_seconds": percentiles(stock_steps),
            "ours_step_seconds_same_commands": percentiles(same_steps),
            "step_speedup_median": statistics.median(stock_steps) / statistics.median(same_steps),
        },
        f"server_{args.sessions}_sessions_batched": server,
    }
    for split, t in summary["reset_seconds"].items():
        print(f"reset {split:7s} p50 {t['p50']:.3f} s  p90 {t['p90']:.3f} s  max {t['max']:.3f} s")
    for split, t in summary["step_seconds"].items():
        print(f"step  {split:7s} p50 {t['p50']:.3f} s  p90 {t['p90']:.3f} s  max {t['max']:.3f} s")
    base = summary["baseline"]
    print(
        f"stock PddlEnv on {base['games']} games: reset p50 {base['stock_reset_seconds']['p50']:.2f} s "
        f"({base['reset_speedup_median']:.1f}x ours), step p50 {base['stock_step_seconds']['p50']:.3f} s "
        f"({base['step_speedup_median']:.1f}x ours)"
    )
    print(
        f"server, {server['sessions']} sessions batched: {server['episodes_per_second']:.2f} episodes/s, "
        f"{server['steps_per_second']:.1f} steps/s ({server['wins']}/{server['episodes']} won)"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "alfworld.json"
    out.write_text(json.dumps({"args": vars(args), **summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
