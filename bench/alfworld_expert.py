"""ALFWorld's expert by task type, in process, on the games ``agent-client eval --oracle`` plays.

    python bench/alfworld_expert.py --episodes 200
    python bench/alfworld_expert.py --episodes 200 --expert search   # the searching demonstrator

Seeds 10^9 .. 10^9 + episodes - 1 (``visact.agent.evaluation.EVAL_SEED_BASE`` on: alfworld's unseen
rooms under the default ``split="auto"``), the same games the server gives ``agent-client
eval``; each played by the expert (reset option ``expert``: the oracle, or the searching
demonstrator) to its end or to the 50-step limit. Writes ``bench/results/alfworld_expert.json``
(``alfworld_search.json`` for ``--expert search``): wins, steps and return per task type and overall.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from visact.env_server.games.alfworld.env import EXPERTS, HELD_OUT_SEEDS, AlfWorld

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--expert", choices=list(EXPERTS), default="oracle", help="the reset option")
    args = parser.parse_args()
    env = AlfWorld()
    games: dict[str, list[dict[str, float]]] = defaultdict(list)
    for seed in range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + args.episodes):
        env.reset(seed=seed, options={"expert": args.expert})
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
        won = [g for g in played if g["won"]]
        table[task_type] = {
            "games": len(played),
            "won": len(won),
            "mean_steps": sum(g["steps"] for g in played) / len(played),  # a game lost: 50
            "mean_steps_won": sum(g["steps"] for g in won) / max(1, len(won)),
            "max_steps_won": max((g["steps"] for g in won), default=0),
            "mean_return": sum(g["return"] for g in played) / len(played),
        }
        row = table[task_type]
        print(
            f"{task_type:32s} {row['won']:4d}/{row['games']:<4d} {row['mean_steps']:5.2f} steps "
            f"({row['mean_steps_won']:5.2f} in a game won, at most {row['max_steps_won']})"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("alfworld_expert.json" if args.expert == "oracle" else f"alfworld_{args.expert}.json")
    out.write_text(json.dumps({"args": vars(args), "by_task_type": table}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
