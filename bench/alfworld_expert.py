"""ALFWorld's expert by task type, in process, on the games ``agent-client eval --oracle`` plays.

    python bench/alfworld_expert.py --episodes 200

Seeds 10^9 .. 10^9 + episodes - 1 (``visact.agent.evaluation.EVAL_SEED_BASE`` on: alfworld's unseen
rooms under the default ``split="auto"``), the same games the server gives ``agent-client
eval``; each played by the expert to its end or to the 50-step limit. Writes
``bench/results/alfworld_expert.json``: wins, steps and return per task type and overall.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from visact.env_server.games.alfworld.env import HELD_OUT_SEEDS, AlfWorld

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    env = AlfWorld()
    games: dict[str, list[dict[str, float]]] = defaultdict(list)
    for seed in range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + args.episodes):
        env.reset(seed=seed)
        assert env.game is not None
        total, won, steps = 0.0, False, 0
        while steps < env.max_episode_steps:
            move = env.expert()
            assert move is not None
            outcome = env.step(move.action)
            total, steps = total + outcome.reward, steps + 1
            if outcome.terminated:
                won = True
                break
        games[env.game.goal.task_type].append({"won": won, "steps": steps, "return": total})
    table = {}
    for task_type, played in [*sorted(games.items()), ("all", [g for gs in games.values() for g in gs])]:
        table[task_type] = {
            "games": len(played),
            "won": sum(bool(g["won"]) for g in played),
            "mean_steps": sum(g["steps"] for g in played) / len(played),
            "mean_return": sum(g["return"] for g in played) / len(played),
        }
        row = table[task_type]
        print(f"{task_type:32s} {row['won']:4d}/{row['games']:<4d} {row['mean_steps']:5.2f} steps")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "alfworld_expert.json"
    out.write_text(json.dumps({"args": vars(args), "by_task_type": table}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
