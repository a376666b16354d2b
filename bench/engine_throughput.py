"""Rollout throughput of the two engines: the same 16 sessions, the same policy settings, driven
by visact's agent with transformers' generate and with vLLM. Runs in the vLLM venv:

    "$(python3 deploy/vllm_cpu_venv.py)" bench/engine_throughput.py --seconds 30 --repeats 3

Both engines hold the same model (``--model``, the tiny VLM by default) in this process, fp32,
with ``--threads`` torch threads; measurements alternate between them and the medians are
compared (env steps per second of ``visact.agent.rollout.Rollout`` over one `env-server` process, as
``bench/rollout_throughput.py`` measures its batched configuration). Writes
``bench/results/engine_throughput.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from env_throughput import start_server
from rollout_throughput import steps_per_second

from visact.agent.policy import VLMPolicy
from visact.env_server.client import EnvClient
from visact.model.engines.transformers_engine import TransformersEngine
from visact.model.engines.vllm_engine import VLLMEngine
from visact.model.loading import load_vlm

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="numberline")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both engines")
    parser.add_argument("--out", type=Path, default=RESULTS / "engine_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    process, port = start_server(args.env)
    try:
        client = EnvClient(f"127.0.0.1:{port}")
        settings = {"temperature": 0.2, "max_new_tokens": args.max_new_tokens, "seed": 0}
        started = time.monotonic()
        policies = {
            "transformers": VLMPolicy(
                TransformersEngine(load_vlm(args.model, dtype="float32", device="cpu")), **settings
            ),
            "vllm": VLMPolicy(
                VLLMEngine(args.model, dtype="float32", seed=0, threads=args.threads), **settings
            ),
        }
        steps_per_second(client, policies["vllm"], args.sessions, 5.0)  # builds vLLM's engine, warms both
        steps_per_second(client, policies["transformers"], args.sessions, 5.0)
        print(f"engines ready in {time.monotonic() - started:.0f} s", flush=True)
        samples: dict[str, list[float]] = {name: [] for name in policies}
        for _ in range(args.repeats):
            for name, policy in policies.items():
                samples[name].append(steps_per_second(client, policy, args.sessions, args.seconds))
                print(f"  {name}: {samples[name][-1]:.2f} env steps/s", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["vllm"] / medians["transformers"]
    print(f"{'engine':14s} {'env steps/s (median)':>22s}")
    for name, value in medians.items():
        print(f"{name:14s} {value:22.2f}")
    print(f"vllm / transformers: {ratio:.2f}x ({args.sessions} sessions, {args.threads} torch threads)")
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "samples": samples,
                "medians": medians,
                "ratio_vllm_to_transformers": ratio,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
