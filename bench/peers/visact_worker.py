"""Benchmark worker for visact: steps an ``env-server`` through ``visact.env_server.client.EnvClient``.

    python bench/peers/visact_worker.py --address 127.0.0.1:PORT --sessions 16

Runs in the project's venv. Configurations: one session (unary Step), N sessions
stepped one call after another, and N sessions in one BatchStep per round, over the
unary RPC and over the BatchStepStream RPC; each with raw and PNG images. Every
observation is decoded to a numpy array by the client, as an agent gets it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's env_server
sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness
import harness

from visact.env_server.client import EnvClient, ResetCall, ResetResult, StepCall, StepResult


class VisactSession:
    def __init__(self, client: EnvClient, encoding: str, seed: int) -> None:
        self.client = client
        self.session_id = client.create_session(encoding=encoding)
        self.seed = seed

    def reset(self) -> Sequence[str]:
        self.seed += 1
        return self.client.reset(self.session_id, seed=self.seed).observation.legal_actions

    def step(self, action: str) -> tuple[Sequence[str], bool]:
        result = self.client.step(self.session_id, action)
        return result.observation.legal_actions, result.done


def batched(client: EnvClient, encoding: str, n: int) -> harness.Runner:
    """N sessions, one BatchStep per round, then one batched Reset for the sessions that ended
    (what ``visact.agent.rollout`` does)."""
    sids = [client.create_session(encoding=encoding) for _ in range(n)]
    rng = np.random.default_rng(0)
    seeds = iter(range(10**9))

    def legal_of(result: object) -> Sequence[str]:
        assert isinstance(result, StepResult | ResetResult), result
        return result.observation.legal_actions

    def run(seconds: float) -> int:
        resets = client.batch([ResetCall(s, seed=next(seeds)) for s in sids])
        legal = {s: legal_of(r) for s, r in zip(sids, resets, strict=True)}
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            calls = [StepCall(s, legal[s][int(rng.integers(len(legal[s])))]) for s in sids]
            ended = []
            for call, result in zip(calls, client.batch(calls), strict=True):
                legal[call.session_id] = legal_of(result)
                if isinstance(result, StepResult) and result.done:
                    ended.append(ResetCall(call.session_id, seed=next(seeds)))
            steps += len(calls)
            if ended:
                for call, result in zip(ended, client.batch(ended), strict=True):
                    legal[call.session_id] = legal_of(result)
        return steps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument(
        "--label",
        default="visact",
        help="visact_nocache: only the PNG configurations Step and BatchStep (a server run with "
        "--png-cache 0, a client without its decode cache)",
    )
    args = parser.parse_args()
    n = args.sessions

    # visact_nocache: no PNG kept on either side (the server runs with --png-cache 0 and the
    # client decodes every file), so every frame is compressed and decoded as the peers do
    keep = 0.0 if args.label == "visact_nocache" else 64.0
    stream = EnvClient(args.address, png_decode_cache_mb=keep)  # batches over BatchStepStream
    unary = EnvClient(args.address, stream=False, png_decode_cache_mb=keep)  # batches as unary BatchStep
    stream.wait_ready()
    configs: dict[str, harness.Runner] = {}
    if args.label != "visact":
        configs[f"{args.label}_1_png"] = harness.one_session(VisactSession(unary, "png", 0))
        configs[f"{args.label}_{n}_png_batch"] = batched(unary, "png", n)
    for encoding in ("raw", "png") if args.label == "visact" else ():
        configs[f"visact_1_{encoding}"] = harness.one_session(VisactSession(unary, encoding, 0))
        # one session the way visact's agent steps it: a batch of one over the stream
        configs[f"visact_1_{encoding}_batch_stream"] = batched(stream, encoding, 1)
        configs[f"visact_{n}_{encoding}_in_turn"] = harness.sessions_in_turn(
            [VisactSession(unary, encoding, 1000 * i) for i in range(n)]
        )
        configs[f"visact_{n}_{encoding}_batch"] = batched(unary, encoding, n)
        configs[f"visact_{n}_{encoding}_batch_stream"] = batched(stream, encoding, n)

    def close() -> None:
        stream.close()
        unary.close()

    harness.serve_commands(configs, close)


if __name__ == "__main__":
    main()
