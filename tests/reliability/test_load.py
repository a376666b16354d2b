"""Load: 256 concurrent sessions on one env-server process, and 8 agents on one `trainer serve`.

Clients run in their own processes (4 env clients of 64 sessions; 8 protocol agents in one
process, speaking the real trainer protocol: 8 real agents would need 8 model copies on 2 cores).
The server's RSS is sampled from /proc every 0.5 s; its growth after warm-up must stay under a
bound. Abandoned env sessions must be reaped; silent agents forgotten. Latency percentiles are
printed and written to load_env_server.json and load_trainer.json in the test's temporary
directory, or, with VISACT_RECORD_RESULTS=1, to bench/results/ (the figures docs/guarantees.md
quotes): a plain test run leaves the checkout as it found it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.processes import Process, command, start, wait_for
from tests.reliability.cluster import metrics, start_trainer, status
from visact.env.v1 import env_pb2 as pb
from visact.env.v1 import env_pb2_grpc as pb_grpc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc"),
]

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PYTHONPATH = {"PYTHONPATH": str(ROOT)}

SESSIONS, CLIENTS, SECONDS, IDLE_TIMEOUT = 256, 4, 20.0, 3.0
WARM_UP = 5.0  # seconds of play before the RSS baseline
ENV_RSS_GROWTH_MB = 32  # after the warm-up, playing 256 sessions must not grow memory more
AGENTS, AGENT_SECONDS, AGENT_TIMEOUT = 8, 30.0, 5.0
TRAINER_RSS_GROWTH_MB = 150  # after warm-up (first updates); torch's allocator caches some


class RssSampler:
    """VmRSS of one process every ``period`` seconds, in a thread, as (seconds, MiB)."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS line")

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.samples.append((time.monotonic() - self._started, self.now()))
            except (FileNotFoundError, ProcessLookupError):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def between(self, start: float, end: float = float("inf")) -> list[float]:
        return [mb for t, mb in self.samples if start <= t <= end]

    def elapsed(self) -> float:
        return time.monotonic() - self._started


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"calls": 0}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "calls": len(values),
        "p50_ms": round(cuts[49], 2),
        "p95_ms": round(cuts[94], 2),
        "p99_ms": round(cuts[98], 2),
        "max_ms": round(max(values), 2),
    }


def write_result(name: str, result: dict[str, Any], scratch: Path) -> Path:
    """Into bench/results/ when VISACT_RECORD_RESULTS=1, else into ``scratch``."""
    folder = RESULTS if os.environ.get("VISACT_RECORD_RESULTS") == "1" else scratch
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def test_256_concurrent_sessions_on_one_env_server(tmp_path: Path) -> None:
    ready = tmp_path / "env.port"
    env = start(
        "env",
        [
            *command("env-server"),
            *("--env", "numberline", "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready)),
            *("--max-sessions", str(SESSIONS), "--idle-timeout", str(IDLE_TIMEOUT), "--log-format", "text"),
        ],
        tmp_path,
        ready_file=ready,
    )
    rss = RssSampler(env.popen.pid)
    clients: list[Process] = []
    try:
        for n in range(CLIENTS):
            clients.append(
                start(
                    f"client-{n}",
                    [
                        *(sys.executable, "-m", "tests.reliability.load_env_client", "--server", env.address),
                        *(
                            "--sessions",
                            str(SESSIONS // CLIENTS),
                            "--threads",
                            "16",
                            "--seconds",
                            str(SECONDS),
                        ),
                        *(
                            "--opened",
                            str(tmp_path / f"opened-{n}"),
                            "--out",
                            str(tmp_path / f"client-{n}.json"),
                        ),
                        *("--label", f"client-{n}"),
                    ],
                    tmp_path,
                    env=PYTHONPATH,
                )
            )
        opened = [tmp_path / f"opened-{n}" for n in range(CLIENTS)]
        wait_for(
            lambda: all(p.exists() and p.read_text().strip() for p in opened), 60, "sessions opened", env
        )
        assert sum(int(p.read_text()) for p in opened) == SESSIONS
        all_open_at = rss.elapsed()
        with grpc.insecure_channel(env.address) as channel:  # all 256 at once: the server is full
            stub = pb_grpc.EnvironmentStub(channel)
            with pytest.raises(grpc.RpcError) as full:
                stub.CreateSession(pb.CreateSessionRequest(client_label="one too many"), timeout=10)
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        for client in clients:
            client.popen.wait(timeout=SECONDS + 120)
        played_at = rss.elapsed()
        results = [json.loads((tmp_path / f"client-{n}.json").read_text()) for n in range(CLIENTS)]
        errors = [e for r in results for e in r["errors"]]
        assert errors == [], errors[:10]
        assert all(c.popen.returncode == 0 for c in clients), [c.text()[-2000:] for c in clients]

        # abandoned, the sessions are reaped once idle; their slots free again
        wait_for(lambda: env.text().count("session reaped") >= SESSIONS, 30, lambda: env.text()[-2000:], env)
        reaped_at = rss.elapsed()
        with grpc.insecure_channel(env.address) as channel:
            stub = pb_grpc.EnvironmentStub(channel)
            for session_id in [s for r in results for s in r["sessions"]][::32]:
                with pytest.raises(grpc.RpcError) as gone:
                    stub.Reset(pb.ResetRequest(session_id=session_id), timeout=10)
                assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            fresh = [
                stub.CreateSession(pb.CreateSessionRequest(), timeout=10).session_id for _ in range(SESSIONS)
            ]
            assert len(set(fresh)) == SESSIONS
        time.sleep(1.0)
    finally:
        rss.stop()
        for client in clients:
            client.kill()
        env.stop(timeout=20)

    latencies = {
        method: percentiles([x for r in results for x in r["latencies_ms"][method]])
        for method in ("CreateSession", "Reset", "Step")
    }
    steps = latencies["Step"]["calls"] + latencies["Reset"]["calls"]
    warm_at = all_open_at + WARM_UP  # the first seconds of play fill caches, buffers and thread arenas
    warm = rss.between(warm_at - 1, warm_at + 1)
    playing = rss.between(warm_at, played_at)
    result = {
        "sessions": SESSIONS,
        "client_processes": CLIENTS,
        "seconds": SECONDS,
        "steps_and_resets_per_second": round(steps / SECONDS, 1),
        "errors": 0,
        "latency": latencies,
        "rss_mb": {
            "start": round(rss.samples[0][1], 1),
            "all_sessions_open": round(rss.between(all_open_at)[0], 1),
            "after_warm_up": round(statistics.median(warm), 1),
            "peak_while_playing": round(max(playing), 1),
            "after_reaping": round(rss.between(reaped_at)[-1], 1),
        },
        "sessions_reaped": SESSIONS,
    }
    path = write_result("load_env_server.json", result, tmp_path)
    print(f"\n{json.dumps(result, indent=2)}\n(wrote {path})")
    growth = result["rss_mb"]["peak_while_playing"] - result["rss_mb"]["after_warm_up"]
    assert growth < ENV_RSS_GROWTH_MB, (
        f"env-server RSS grew {growth:.0f} MiB while playing: {result['rss_mb']}"
    )


def test_8_agents_on_one_trainer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = start_trainer(
        tmp_path, run, "trainer", 0, "--agent-timeout", str(AGENT_TIMEOUT), "--buffer-steps", "36"
    )
    rss = RssSampler(trainer.popen.pid)
    out = tmp_path / "agents.json"
    agents = start(
        "agents",
        [
            *(
                sys.executable,
                "-m",
                "tests.reliability.protocol_agent",
                "--trainer",
                trainer.address,
            ),
            *("--agents", str(AGENTS), "--seconds", str(AGENT_SECONDS), "--out", str(out)),
        ],
        tmp_path,
        env=PYTHONPATH,
    )
    try:
        wait_for(
            lambda: len(status(run).get("agents", {})) == AGENTS, 90, lambda: agents.text()[-2000:], trainer
        )
        wait_for(lambda: len(metrics(run)) >= 2, 90, lambda: trainer.text()[-2000:], trainer, agents)
        warm_at, warm_updates = rss.elapsed(), len(metrics(run))
        assert agents.popen.wait(timeout=AGENT_SECONDS + 120) == 0, agents.text()[-3000:]
        done_at = rss.elapsed()
        # the agents are gone: silent for --agent-timeout, they are forgotten and their slots freed
        wait_for(
            lambda: status(run).get("agents") == {}, AGENT_TIMEOUT + 30, lambda: str(status(run)), trainer
        )
        final = status(run)
    finally:
        rss.stop()
        agents.kill()
        trainer.stop(timeout=30)

    summary = json.loads(out.read_text())
    assert summary["errors"] == {} and summary["failures"] == [], summary["failures"]
    accepted = summary["episodes_accepted"]
    assert min(accepted) > 0, f"an agent was starved: {accepted}"
    updates = len(metrics(run))
    assert updates >= warm_updates + 3
    assert final["counters"]["agents_expired"] == AGENTS
    assert final["counters"]["episodes_refused"] == 0
    warm = rss.between(warm_at - 1, warm_at + 1)[:1] or rss.between(warm_at)[:1]
    loaded = rss.between(warm_at, done_at)
    result = {
        "agents": AGENTS,
        "seconds": summary["seconds"],
        "episodes_accepted_per_agent": accepted,
        "updates": updates,
        "errors": 0,
        "latency": {m: percentiles(v) for m, v in sorted(summary["latencies_ms"].items())},
        "rss_mb": {
            "start": round(rss.samples[0][1], 1),
            "after_warm_up": round(warm[0], 1),
            "peak_under_load": round(max(loaded), 1),
            "end": round(rss.samples[-1][1], 1),
        },
    }
    path = write_result("load_trainer.json", result, tmp_path)
    print(f"\n{json.dumps(result, indent=2)}\n(wrote {path})")
    growth = result["rss_mb"]["peak_under_load"] - result["rss_mb"]["after_warm_up"]
    assert growth < TRAINER_RSS_GROWTH_MB, f"trainer RSS grew {growth:.0f} MiB under load: {result['rss_mb']}"
