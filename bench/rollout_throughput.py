"""Rollout throughput with the tiny VLM: 16 sessions with batched generation and BatchStep,
against the original RL4VLM loop (one env in the agent's process, batch-1 generation).

    python bench/rollout_throughput.py --sessions 16 --seconds 30 --repeats 3

Three configurations, the same policy (the tiny model, same sampling settings) in each:
``batched`` (visact's agent: ``visact.agent.rollout.Rollout`` over 16 sessions of one `env-server`
process), ``in_process`` (RL4VLM's loop: the game in this process, one observation per
generation) and ``one_at_a_time`` (visact's agent with one session, batch-1 generation over
gRPC). Measurements are interleaved and the medians compared. Writes
``bench/results/rollout_throughput.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from env_throughput import start_server

from visact.agent.parsing import BadAnswerPolicy, resolve
from visact.agent.policy import PolicyInput, VLMPolicy
from visact.agent.rollout import Rollout, SeedSchedule
from visact.env_server import games
from visact.env_server.client import EnvClient
from visact.model.loading import load_vlm

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


def in_process_steps_per_second(env_name: str, policy: VLMPolicy, seconds: float) -> float:
    """RL4VLM's loop: one env in this process; observe, generate for that one observation, step."""
    env = games.make(env_name)
    rng, bad_answer = random.Random(0), BadAnswerPolicy()
    seed, steps = 0, 0
    env.reset(seed=seed)
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        legal = tuple(env.legal_actions())
        item = PolicyInput(env.render(), env.task_text(), legal, tuple(env.fact_keys))
        (answer,) = policy.act([item])
        action, _penalty = resolve(answer.parsed, list(legal), bad_answer, rng)
        outcome = env.step(action)
        steps += 1
        if outcome.terminated or outcome.truncated:
            seed += 1
            env.reset(seed=seed)
    return steps / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="numberline")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "rollout_throughput.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    process, port = start_server(args.env)
    try:
        client = EnvClient(f"127.0.0.1:{port}")
        policy = VLMPolicy(load_vlm(args.model), temperature=0.2, max_new_tokens=args.max_new_tokens, seed=0)
        samples: dict[str, list[float]] = {"batched": [], "in_process": [], "one_at_a_time": []}
        for _ in range(args.repeats):
            samples["batched"].append(steps_per_second(client, policy, args.sessions, args.seconds))
            samples["in_process"].append(in_process_steps_per_second(args.env, policy, args.seconds))
            samples["one_at_a_time"].append(steps_per_second(client, policy, 1, args.seconds))
    finally:
        process.terminate()
        process.wait(timeout=30)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["batched"] / medians["in_process"]
    print(f"{'configuration':36s} {'env steps/s (median)':>22s}")
    print(f"{f'{args.sessions} sessions, batched (visact)':36s} {medians['batched']:22.2f}")
    print(f"{'1 env in-process, batch-1 (RL4VLM)':36s} {medians['in_process']:22.2f}")
    print(f"{'1 session over gRPC, batch-1':36s} {medians['one_at_a_time']:22.2f}")
    print(f"batched / in-process RL4VLM loop: {ratio:.2f}x")
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "samples": samples,
                "medians": medians,
                "ratio": ratio,
                "ratio_to_one_session_over_grpc": medians["batched"] / medians["one_at_a_time"],
                "torch_threads": torch.get_num_threads(),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
