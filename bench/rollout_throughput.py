"""Rollout throughput with the tiny VLM: 16 sessions with batched generation and BatchStep,
against the original RL4VLM loop (one session at a time, batch-1 generation).

    python bench/rollout_throughput.py --sessions 16 --seconds 30 --repeats 3

Both run the same policy (the tiny model, same sampling settings) against the same
`env-server` process; measurements are interleaved and the medians compared. Writes
``bench/results/rollout_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from env_throughput import start_server

from agent.models import load_vlm
from agent.policy import VLMPolicy
from agent.rollout import Rollout, SeedSchedule
from env_server.client import EnvClient

RESULTS = Path(__file__).resolve().parent / "results"


def steps_per_second(client: EnvClient, policy: VLMPolicy, sessions: int, seconds: float) -> float:
    """Env steps per second of one rollout with ``sessions`` sessions, over about ``seconds``."""
    rollout = Rollout([client], policy, sessions=sessions, seed=0)
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    rollout.run(
        SeedSchedule(rng_seed=0),
        lambda _episode: None,
        stop=stop,
        between_rounds=lambda: stop.set() if time.monotonic() > deadline else None,
    )
    elapsed = time.monotonic() - started
    rollout.close()
    return rollout.stats.steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="numberline")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    process, port = start_server(args.env)
    try:
        client = EnvClient(f"127.0.0.1:{port}")
        policy = VLMPolicy(load_vlm(args.model), temperature=0.2, max_new_tokens=args.max_new_tokens, seed=0)
        samples: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}
        for _ in range(args.repeats):
            samples["batched"].append(steps_per_second(client, policy, args.sessions, args.seconds))
            samples["one_at_a_time"].append(steps_per_second(client, policy, 1, args.seconds))
    finally:
        process.terminate()
        process.wait(timeout=30)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["batched"] / medians["one_at_a_time"]
    print(f"{'configuration':28s} {'env steps/s (median)':>22s}")
    print(f"{f'{args.sessions} sessions, batched':28s} {medians['batched']:22.2f}")
    print(f"{'1 session, batch-1 (RL4VLM)':28s} {medians['one_at_a_time']:22.2f}")
    print(f"ratio {ratio:.2f}x (goal >= 6x)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "rollout_throughput.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "samples": samples,
                "medians": medians,
                "ratio": ratio,
                "torch_threads": torch.get_num_threads(),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
