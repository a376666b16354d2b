"""Side by side: NumberLine through visact, dm_env_rpc, OpenEnv and in-process; tiny-model rollouts.

    python bench/peers/run.py                   # everything, ~15 min here; rewrites docs/benchmarks*
    python bench/peers/run.py --seconds 1 --repeats 1 --skip-rollout --out /tmp/peers   # a quick look

Run it with the project's venv active (``pip install 'torch==2.13.*' -e '.[all,dev]'``). It makes
one venv per peer under ``.bench-venvs/`` (gitignored; reused while the pins are unchanged)
with ``dm-env-rpc==1.1.7`` or ``openenv-core==0.3.0`` from PyPI plus this checkout's
environment side (``pip install -e .``: grpcio, numpy, Pillow, Gymnasium; no torch), so that
every system serves the same game, ``visact.env_server.games.numberline.NumberLine`` (300x300 RGB).

Then it starts, on 127.0.0.1: ``env-server`` (visact), our dm_env_rpc server, our OpenEnv server
twice (WebSocket compression on, OpenEnv's default, and off), and one client worker per
system (see ``harness.py``: only action steps are counted; every client decodes every image
to a numpy array). Each configuration runs ``--seconds`` at a time, all configurations
interleaved (the order rotates each repeat), ``--repeats`` times; the medians and their ratios
go to ``<out>/peers.json``, ``<out>/peers.md`` and ``<out>/peers.png``. Then
``bench/rollout_throughput.py`` measures tiny-model rollouts (``<out>/rollout.json``), and the
generated part of ``docs/benchmarks.md`` is rewritten (only with the default ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ratios import summarize
from report import (
    BENCHMARKS_MD,
    DEFAULT_OUT,
    generated_section,
    machine_facts,
    markdown_goals,
    markdown_rollout,
    markdown_tables,
    plot,
    update_benchmarks_md,
    write_peers_md,
)
from systems import SYSTEMS, Config
from venvs import PEER_REQUIREMENTS, ensure_venv, venv_python
from workers import Processes, Worker, measure

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def rollout(out: Path, seconds: float, repeats: int, threads: int, logs: Path) -> dict[str, Any]:
    target = out / "rollout.json"
    command = [
        sys.executable,
        str(REPO / "bench" / "rollout_throughput.py"),
        "--seconds",
        str(seconds),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
        "--out",
        str(target),
    ]
    print("rollout: " + " ".join(command[1:]), flush=True)
    with (logs / "rollout.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return dict(json.loads(target.read_text()))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--venvs", type=Path, default=REPO / ".bench-venvs", help="peer venvs (a cache)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="*", choices=list(SYSTEMS), help="systems to measure (default all)")
    parser.add_argument("--skip-rollout", action="store_true")
    parser.add_argument("--rollout-seconds", type=float, default=30.0)
    parser.add_argument("--rollout-repeats", type=int, default=3)
    parser.add_argument(
        "--rollout-threads",
        type=int,
        default=1,
        help="torch threads for the rollouts (2 OpenMP threads on 2 busy shared cores spin-wait: "
        "generation ran 15-25x slower here)",
    )
    parser.add_argument(
        "--render", action="store_true", help="measure nothing: rewrite the docs from <out>/peers.json"
    )
    return parser.parse_args()


def render(out: Path) -> None:
    """Rewrite the docs from ``out/peers.json`` (the summary made again from its samples)."""
    result = json.loads((out / "peers.json").read_text())
    configs = {name: Config(**c) for name, c in result["configs"].items()}
    result["summary"] = summarize(configs, result["samples"])
    (out / "peers.json").write_text(json.dumps(result, indent=2) + "\n")
    write_peers_md(result["summary"], out / "peers.md")
    plot(result["summary"], out / "peers.png")
    update_benchmarks_md(generated_section(result))
    print(f"updated {BENCHMARKS_MD} and {out / 'peers.png'} from {out / 'peers.json'}")


def peer_versions(only: set[str], venvs: Path, logs: Path) -> dict[str, dict[str, str]]:
    """Make (or reuse) the venv of every peer measured; the versions of what matters in each."""
    print("peer venvs:", flush=True)
    versions = {}
    with (logs / "pip.log").open("a") as pip_log:
        for peer in PEER_REQUIREMENTS:
            if peer in only or (peer == "openenv" and "openenv_nodeflate" in only):
                versions[peer] = ensure_venv(venvs, peer, pip_log)
    return versions


def start_workers(processes: Processes, only: set[str], venvs: Path, sessions: int) -> dict[str, Worker]:
    """The servers and one client worker per system in ``only`` (in-process and floor always)."""
    workers: dict[str, Worker] = {}
    n = str(sessions)
    workers["inprocess"] = processes.worker("inprocess", [sys.executable, str(HERE / "inprocess_worker.py")])
    workers["floor"] = processes.worker("floor", [sys.executable, str(HERE / "floor_worker.py")])
    server = [sys.executable, "-m", "visact.env_server.server", "--env", "numberline", "--host", "127.0.0.1"]
    visact_worker = [sys.executable, str(HERE / "visact_worker.py")]
    if "visact" in only:
        port = processes.server("visact", [*server, "--port", "0", "--log-level", "WARNING"])
        workers["visact"] = processes.worker(
            "visact", [*visact_worker, "--address", f"127.0.0.1:{port}", "--sessions", n]
        )
    if "visact_nocache" in only:  # the same, every PNG compressed afresh (as the peers do)
        port = processes.server(
            "visact_nocache", [*server, "--port", "0", "--log-level", "WARNING", "--png-cache", "0"]
        )
        workers["visact_nocache"] = processes.worker(
            "visact_nocache",
            [*visact_worker, "--address", f"127.0.0.1:{port}", "--sessions", n, "--label", "visact_nocache"],
        )
    if "dm_env_rpc" in only:
        python, script = str(venv_python(venvs, "dm_env_rpc")), str(HERE / "dm_env_rpc_peer.py")
        port = processes.server("dm_env_rpc", [python, script, "serve"])
        workers["dm_env_rpc"] = processes.worker(
            "dm_env_rpc", [python, script, "client", "--address", f"127.0.0.1:{port}", "--sessions", n]
        )
    for label, flags in (("openenv", []), ("openenv_nodeflate", ["--no-deflate"])):
        if label in only:
            python, script = str(venv_python(venvs, "openenv")), str(HERE / "openenv_peer.py")
            port = processes.server(label, [python, script, "serve", *flags])
            workers[label] = processes.worker(
                label,
                [
                    python,
                    script,
                    "client",
                    "--address",
                    f"127.0.0.1:{port}",
                    "--sessions",
                    n,
                    "--label",
                    label,
                ],
            )
    return workers


def main() -> None:
    args = parse_args()
    if args.render:
        render(args.out)
        return
    started = time.monotonic()
    only = set(args.only or SYSTEMS) | {"inprocess", "floor"}
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.venvs / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    machine = machine_facts()
    versions = peer_versions(only, args.venvs, logs)

    processes = Processes(logs)
    workers: dict[str, Worker] = {}
    try:
        workers = start_workers(processes, only, args.venvs, args.sessions)
        configs, samples = measure(workers, args.seconds, args.repeats)
    finally:
        for worker in workers.values():
            worker.quit()
        processes.stop_all()
    machine["load_average_at_end_of_env_runs"] = list(os.getloadavg())
    (args.out / "samples.json").write_text(json.dumps(samples, indent=1) + "\n")  # kept if a step below fails

    summary = summarize(configs, samples)
    result: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine,
        "versions": versions,
        "configs": {name: vars(c) for name, c in configs.items()},
        "samples": samples,
        "summary": summary,
    }
    write_peers_md(summary, args.out / "peers.md")
    plot(summary, args.out / "peers.png")
    print(markdown_goals(summary))
    print(markdown_tables(summary))

    result["wall_seconds"] = time.monotonic() - started
    (args.out / "peers.json").write_text(json.dumps(result, indent=2) + "\n")  # again below, with rollouts
    if not args.skip_rollout:
        result["rollout"] = rollout(
            args.out, args.rollout_seconds, args.rollout_repeats, args.rollout_threads, logs
        )
        print(markdown_rollout(result["rollout"]))
    elif (args.out / "rollout.json").exists():
        result["rollout"] = json.loads((args.out / "rollout.json").read_text())
        print(f"(rollout not measured this run; the doc keeps {args.out / 'rollout.json'})")
    result["wall_seconds"] = time.monotonic() - started
    (args.out / "peers.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.out.resolve() == DEFAULT_OUT.resolve() and only == set(SYSTEMS):
        update_benchmarks_md(generated_section(result))
        print(f"updated {BENCHMARKS_MD}")
    print(f"wrote {args.out}/peers.json, peers.md, peers.png in {result['wall_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
