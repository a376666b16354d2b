"""Environment steps per second: in-process vs one gRPC session vs 16 sessions (single and batched step).

    python bench/env_throughput.py --env numberline --seconds 3 --repeats 3

Starts a real ``env-server`` process on loopback, measures each configuration
``--repeats`` times, interleaved with the in-process baseline, and writes the
medians and their ratios to ``bench/results/env_throughput_<env>.json``.
Speed is a ratio against a baseline measured in the same run, never an absolute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from visact.env_server import games
from visact.env_server.client import EnvClient, ResetCall, StepCall, StepResult
from visact.orchestration.processes import launch, stop_all, wait_ready

RESULTS = Path(__file__).resolve().parent / "results"


def rate(run_for: Callable[[float], int], seconds: float) -> float:
    """Steps per second of ``run_for(seconds) -> steps``."""
    start = time.perf_counter()
    steps = run_for(seconds)
    return steps / (time.perf_counter() - start)


def in_process(env_name: str) -> Callable[[float], int]:
    """Step the game in this process: step + render + task text + legal actions, like an observation."""
    env = games.make(env_name)
    rng = np.random.default_rng(0)

    def run(seconds: float) -> int:
        env.reset(seed=0)
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            legal = env.legal_actions()
            outcome = env.step(legal[int(rng.integers(len(legal)))])
            np.ascontiguousarray(env.render()).tobytes()  # what the server sends
            env.task_text()
            steps += 1
            if outcome.terminated or outcome.truncated:
                env.reset(seed=steps)
        return steps

    return run


def one_session(client: EnvClient, encoding: str) -> Callable[[float], int]:
    sid = client.create_session(encoding=encoding)
    rng = np.random.default_rng(0)

    def run(seconds: float) -> int:
        legal = client.reset(sid, seed=0).observation.legal_actions
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            result = client.step(sid, legal[int(rng.integers(len(legal)))])
            legal = result.observation.legal_actions
            steps += 1
            if result.done:
                legal = client.reset(sid, seed=steps).observation.legal_actions
        return steps

    return run


def one_session_stream(client: EnvClient, encoding: str) -> Callable[[float], int]:
    """One session stepped through BatchStepStream (a batch of one per step)."""
    sid = client.create_session(encoding=encoding)
    rng = np.random.default_rng(0)

    def run(seconds: float) -> int:
        legal = client.reset(sid, seed=0).observation.legal_actions
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            (result,) = client.batch([StepCall(sid, legal[int(rng.integers(len(legal)))])])
            assert isinstance(result, StepResult), result
            legal = result.observation.legal_actions
            steps += 1
            if result.done:
                legal = client.reset(sid, seed=steps).observation.legal_actions
        return steps

    return run


def many_sessions(client: EnvClient, encoding: str, n: int, batched: bool) -> Callable[[float], int]:
    sids = [client.create_session(encoding=encoding) for _ in range(n)]
    rng = np.random.default_rng(0)

    def run(seconds: float) -> int:
        legal = {s: client.reset(s, seed=i).observation.legal_actions for i, s in enumerate(sids)}
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            calls = [StepCall(s, legal[s][int(rng.integers(len(legal[s])))]) for s in sids]
            if batched:
                results = client.batch(calls)
            else:
                results = [client.step(c.session_id, c.action) for c in calls]
            resets = []
            for call, result in zip(calls, results, strict=True):
                assert isinstance(result, StepResult), result
                legal[call.session_id] = result.observation.legal_actions
                if result.done:
                    resets.append(ResetCall(call.session_id, seed=steps))
            steps += len(calls)
            if resets:
                for reset_call, reset in zip(resets, client.batch(resets), strict=True):
                    legal[reset_call.session_id] = reset.observation.legal_actions  # type: ignore[union-attr]
        return steps

    return run


def start_server(env_name: str) -> tuple[subprocess.Popen[bytes], int]:
    """An env server of ``env_name`` on a free loopback port, tied to this process (its output to
    this console); returns it and its port."""
    ready = Path(tempfile.mkdtemp()) / "port"
    server = [sys.executable, "-m", "visact.env_server.server", "--env", env_name, "--host", "127.0.0.1"]
    process = launch([*server, "--port", "0", "--ready-file", str(ready), "--log-level", "WARNING"])
    return process, wait_ready(process, ready, name="env-server", timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="numberline")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=16)
    args = parser.parse_args()

    process, port = start_server(args.env)
    try:
        client = EnvClient(f"127.0.0.1:{port}")  # batches go over BatchStepStream
        unary = EnvClient(f"127.0.0.1:{port}", stream=False)  # batches are unary BatchStep calls
        n = args.sessions
        configs: dict[str, Callable[[float], int]] = {
            "in_process": in_process(args.env),
            "grpc_1_raw": one_session(client, "raw"),
            "grpc_1_raw_stream": one_session_stream(client, "raw"),
            "grpc_1_png": one_session(client, "png"),
            "grpc_1_png_stream": one_session_stream(client, "png"),
            f"grpc_{n}_single_raw": many_sessions(client, "raw", n, batched=False),
            f"grpc_{n}_batched_raw": many_sessions(unary, "raw", n, batched=True),
            f"grpc_{n}_batched_raw_stream": many_sessions(client, "raw", n, batched=True),
            f"grpc_{n}_single_png": many_sessions(client, "png", n, batched=False),
            f"grpc_{n}_batched_png": many_sessions(unary, "png", n, batched=True),
            f"grpc_{n}_batched_png_stream": many_sessions(client, "png", n, batched=True),
        }
        samples: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.repeats):
            for name, run in configs.items():  # interleaved, so drift hits all alike
                samples[name].append(rate(run, args.seconds))
    finally:
        stop_all([process], grace=30)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["in_process"]
    ratios = {
        "grpc_1_raw / in_process": medians["grpc_1_raw"] / base,
        "grpc_1_raw_stream / in_process": medians["grpc_1_raw_stream"] / base,
        "grpc_1_raw_stream / grpc_1_raw": medians["grpc_1_raw_stream"] / medians["grpc_1_raw"],
        "grpc_1_png / in_process": medians["grpc_1_png"] / base,
        f"grpc_{n}_batched_raw_stream / grpc_{n}_single_raw": medians[f"grpc_{n}_batched_raw_stream"]
        / medians[f"grpc_{n}_single_raw"],
        f"grpc_{n}_batched_raw / grpc_{n}_single_raw": medians[f"grpc_{n}_batched_raw"]
        / medians[f"grpc_{n}_single_raw"],
        f"grpc_{n}_batched_png / grpc_{n}_single_png": medians[f"grpc_{n}_batched_png"]
        / medians[f"grpc_{n}_single_png"],
        f"grpc_{n}_batched_raw / grpc_1_raw": medians[f"grpc_{n}_batched_raw"] / medians["grpc_1_raw"],
    }
    print(f"{'configuration':32s} {'steps/s (median)':>18s}")
    for name, value in medians.items():
        print(f"{name:32s} {value:18.0f}")
    for name, value in ratios.items():
        print(f"{name:45s} {value:6.2f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"env_throughput_{args.env}.json"
    out.write_text(
        json.dumps(
            {"args": vars(args), "steps_per_second": medians, "samples": samples, "ratios": ratios}, indent=2
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
