"""What one server holds while it still answers: unary latency and RSS against open streams.

    python bench/fleet.py                       # ~3 min here
    python bench/fleet.py --env-streams 0 1000 4000 --agents 0 500 2000 --calls 200

Starts a real ``env-server`` (default flags) and a real ``trainer serve`` (the tiny VLM) on
loopback. For each level it opens more streams from this process (``visact.orchestration.fleet``: grpc.aio,
protocol-level clients, spread over connections of 64 streams), then times unary calls made by
another client on a connection of its own, sequentially, and reads the server's RSS:

- env server: ``BatchStepStream`` calls held open after one round trip, plus half as many
  unauthenticated ``Health/Watch`` streams; timed: ``Describe`` and ``Reset`` (a game call and a
  300x300 frame, the work of a ``Step``);
- trainer: registered agents each holding ``WatchVersions``; timed: ``Heartbeat`` and
  ``Register``.

Writes ``bench/results/fleet.json`` (latency percentiles in ms per level, RSS in MiB, RSS per
stream from a least-squares fit) and ``docs/benchmarks/fleet.png``. Latencies are of this
machine under whatever else runs on it; the slope (how much latency and memory a held stream
adds) is the finding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visact.env.v1 import env_pb2, env_pb2_grpc
from visact.orchestration import fleet
from visact.orchestration.processes import Process, command, start
from visact.rpc import run_async
from visact.trainer.v1 import trainer_pb2, trainer_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "bench" / "results"
PLOT = ROOT / "docs" / "benchmarks" / "fleet.png"
#: `trainer serve` of the tiny VLM (its default) on loopback, one torch thread, a small LoRA: it
#: never trains here, it registers agents and answers them
TRAINER_ARGS = ["--host", "127.0.0.1", "--threads", "1", "--lora-r", "4", "--lora-alpha", "8"]


def untokened() -> dict[str, str]:
    """This environment without ``VISACT_TOKEN``: the servers here take no token."""
    return {k: v for k, v in os.environ.items() if k != "VISACT_TOKEN"}


def start_server(name: str, argv: list[str], workdir: Path, timeout: float = 120) -> Process:
    """``argv`` (a server taking ``--ready-file``) on loopback, logging to ``workdir/<name>.log``."""
    ready = workdir / f"{name}.port"
    ready.unlink(missing_ok=True)
    return start(
        name,
        [*argv, "--port", "0", "--ready-file", str(ready)],
        workdir / f"{name}.log",
        ready_file=ready,
        timeout=timeout,
        env=untokened(),
        cwd=workdir,
        start_new_session=True,
    )


def summary(latencies: Sequence[float]) -> dict[str, float]:
    """Percentiles in milliseconds."""
    ms = [x * 1000 for x in latencies]
    return {
        "p50_ms": round(fleet.percentile(ms, 0.50), 3),
        "p90_ms": round(fleet.percentile(ms, 0.90), 3),
        "p99_ms": round(fleet.percentile(ms, 0.99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs."""
    if len(set(xs)) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


async def time_calls(
    calls: dict[str, Callable[[], Awaitable[Any]]], repeats: int
) -> dict[str, dict[str, float]]:
    return {name: summary(await fleet.timed_unary(call, repeats)) for name, call in calls.items()}


def bench_env(levels: Sequence[int], repeats: int, workdir: Path) -> dict[str, Any]:
    argv = [*command("env-server"), "--env", "numberline", "--host", "127.0.0.1", "--log-format", "text"]
    env = start_server("env-server", [*argv, "--grace", "1"], workdir)
    rows = []
    held: list[Any] = []
    channels = fleet.Channels(env.address)
    probe_channel = fleet.Channels(env.address)
    try:
        stub = env_pb2_grpc.EnvironmentStub(run_async(_fresh(probe_channel)))
        session = run_async(stub.CreateSession(env_pb2.CreateSessionRequest(), timeout=30)).session_id
        reset = env_pb2.ResetRequest(session_id=session, seed=1)
        calls = {
            "Describe": lambda: stub.Describe(env_pb2.DescribeRequest(), timeout=60),
            "Reset": lambda: stub.Reset(reset, timeout=60),  # a game call and a 300x300 frame, as Step
        }
        streams = watches = 0
        for level in levels:
            more = level - streams
            if more > 0:
                held += run_async(fleet.hold_batch_streams(channels, more, timeout=120))
                held += run_async(fleet.hold_health_watches(channels, level // 2 - watches, timeout=120))
                streams, watches = level, level // 2
            time.sleep(1.0)  # let the server settle (and its allocator) before reading RSS
            latency = run_async(time_calls(calls, repeats))
            rss = fleet.rss_bytes(env.popen.pid)
            rows.append(
                {"batch_streams": streams, "health_watches": watches, "rss_mib": rss / 2**20, **latency}
            )
            print(
                f"env-server  streams={streams:5d} watches={watches:5d} rss={rss / 2**20:7.1f} MiB", latency
            )
    finally:
        run_async(fleet.close_calls(held))
        run_async(channels.close())
        run_async(probe_channel.close())
        env.stop()
    total = [r["batch_streams"] + r["health_watches"] for r in rows]
    return {
        "rows": rows,
        "rss_kib_per_stream": round(slope(total, [r["rss_mib"] * 1024 for r in rows]), 2),
        "p99_ms_per_1000_streams": {
            name: round(1000 * slope(total, [r[name]["p99_ms"] for r in rows]), 3)
            for name in ("Describe", "Reset")
        },
    }


async def _fresh(channels: fleet.Channels) -> Any:
    return channels.fresh()


def bench_trainer(levels: Sequence[int], repeats: int, workdir: Path) -> dict[str, Any]:
    from visact.model.loading import load_vlm, weights_fingerprint

    fingerprint = weights_fingerprint(load_vlm("tiny", device="cpu").model)
    argv = [*command("trainer"), "serve", *TRAINER_ARGS, "--checkpoint-dir", str(workdir / "run")]
    trainer = start_server("trainer", argv, workdir, timeout=300)
    rows = []
    agents: list[fleet.WatchingAgent] = []
    channels = fleet.Channels(trainer.address)
    probe_channel = fleet.Channels(trainer.address)
    try:
        stub = trainer_pb2_grpc.TrainerStub(run_async(_fresh(probe_channel)))
        register = trainer_pb2.RegisterRequest(
            agent_name="probe", model_name="tiny", base_fingerprint=fingerprint
        )
        agent_id = run_async(stub.Register(register, timeout=30)).agent_id
        beat = trainer_pb2.HeartbeatRequest(agent_id=agent_id)
        calls = {
            "Heartbeat": lambda: stub.Heartbeat(beat, timeout=60),
            "Register": lambda: stub.Register(
                trainer_pb2.RegisterRequest(
                    agent_name="probe",
                    model_name="tiny",
                    base_fingerprint=fingerprint,
                    previous_agent_id=agent_id,
                ),
                timeout=60,
            ),
        }
        for level in levels:
            more = level - len(agents)
            if more > 0:
                agents += run_async(
                    fleet.register_watching_agents(channels, more, fingerprint=fingerprint, timeout=120)
                )
            time.sleep(1.0)
            latency = run_async(time_calls(calls, repeats))
            rss = fleet.rss_bytes(trainer.popen.pid)
            rows.append({"agents": len(agents), "rss_mib": rss / 2**20, **latency})
            print(f"trainer     agents={len(agents):5d} rss={rss / 2**20:7.1f} MiB", latency)
    finally:
        run_async(fleet.close_calls([a.call for a in agents]))
        run_async(channels.close())
        run_async(probe_channel.close())
        trainer.stop()
    counts = [r["agents"] for r in rows]
    return {
        "rows": rows,
        "rss_kib_per_agent": round(slope(counts, [r["rss_mib"] * 1024 for r in rows]), 2),
        "p99_ms_per_1000_agents": {
            name: round(1000 * slope(counts, [r[name]["p99_ms"] for r in rows]), 3)
            for name in ("Heartbeat", "Register")
        },
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        (left, result["env_server"], "batch_streams", "health_watches", ("Describe", "Reset"), "env-server"),
        (right, result["trainer"], "agents", None, ("Heartbeat", "Register"), "trainer serve"),
    )
    for axis, part, key, extra, names, title in panels:
        xs = [r[key] + (r[extra] if extra else 0) for r in part["rows"]]
        for name, colour in zip(names, ("tab:blue", "tab:orange"), strict=True):
            axis.plot(xs, [r[name]["p50_ms"] for r in part["rows"]], "o-", color=colour, label=f"{name} p50")
            axis.plot(xs, [r[name]["p99_ms"] for r in part["rows"]], "s--", color=colour, label=f"{name} p99")
        axis.set_xlabel(
            "open streams (BatchStepStream + Health/Watch)" if extra else "agents holding WatchVersions"
        )
        axis.set_ylabel("unary call latency, ms")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        memory = axis.twinx()
        memory.plot(xs, [r["rss_mib"] for r in part["rows"]], "^:", color="tab:green", label="server RSS")
        memory.set_ylabel("server RSS, MiB", color="tab:green")
        lines = axis.get_legend_handles_labels()
        more = memory.get_legend_handles_labels()
        axis.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-streams", type=int, nargs="+", default=[0, 500, 1000, 2000, 4000])
    parser.add_argument("--agents", type=int, nargs="+", default=[0, 250, 500, 1000, 2000])
    parser.add_argument("--calls", type=int, default=200, help="timed calls per method and level")
    parser.add_argument("--out", type=Path, default=RESULTS / "fleet.json")
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="visact-fleet-") as tmp:
        workdir = Path(tmp)
        result = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f} at the start",
            "calls_per_level": args.calls,
            "env_server": bench_env(sorted(args.env_streams), args.calls, workdir),
            "trainer": bench_trainer(sorted(args.agents), args.calls, workdir),
        }
    result["seconds"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.plot)
    print(f"wrote {args.out} and {args.plot} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
