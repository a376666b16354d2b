"""The benchmark's servers and client workers (``harness.py`` has the workers' protocol), and
the measurement: every configuration in turn, interleaved, repeated."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from systems import Config

from visact.orchestration.processes import launch, start, stop_all

REPO = Path(__file__).resolve().parents[2]


class Processes:
    """Every process this run starts (tied to it: ``visact.orchestration.processes``); stopped by
    their own ids at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[Any]] = []

    def server(self, name: str, command: Sequence[str], timeout: float = 120.0) -> int:
        ready = self.logs / f"{name}.port"
        ready.unlink(missing_ok=True)
        log = self.logs / f"{name}.server.log"
        process = start(name, [*command, "--ready-file", str(ready)], log, fresh_log=True, cwd=REPO)
        self.started.append(process.popen)
        return process.wait_ready(ready, timeout)

    def worker(self, name: str, command: Sequence[str]) -> Worker:
        with (self.logs / f"{name}.client.log").open("w") as log:
            process = launch(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO
            )
        self.started.append(process)
        return Worker(name, process, self.logs / f"{name}.client.log")

    def stop_all(self) -> None:
        stop_all(self.started, grace=15)


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[str]
    log: Path

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            tail = self.log.read_text()[-3000:]
            raise SystemExit(f"worker {self.name} died; its log ({self.log}) ends with:\n{tail}")
        return dict(json.loads(line))

    def quit(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(SystemExit):
                self.ask({"cmd": "quit"})


def measure(
    workers: dict[str, Worker], seconds: float, repeats: int
) -> tuple[dict[str, Config], dict[str, list[float]]]:
    configs: dict[str, Config] = {}
    owner: dict[str, Worker] = {}
    for system, worker in workers.items():
        for name in worker.ask({"cmd": "configs"})["configs"]:
            configs[name] = Config.parse(name, system)
            owner[name] = worker
    names = list(configs)
    print(f"warming up {len(names)} configurations", flush=True)
    for name in names:
        owner[name].ask({"cmd": "run", "config": name, "seconds": min(1.0, seconds / 2)})
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat * len(names) // max(repeats, 1)
        order = names[shift:] + names[:shift]  # rotate: no configuration always runs first or last
        for name in order:
            samples[name].append(owner[name].ask({"cmd": "run", "config": name, "seconds": seconds})["rate"])
        print(f"  repeat {repeat + 1}/{repeats} done", flush=True)
    return configs, samples
