"""Real env-server, `trainer serve` and `agent-client` processes for the fault tests, with the
fast flags of tests/e2e (tiny VLM, tiny updates), and readers of what they leave behind."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.processes import TRAINER_ARGS, Process, command, start, wait_for


def start_trainer(workdir: Path, run: Path, name: str = "trainer", port: int = 0, *extra: str) -> Process:
    ready = workdir / f"{name}.port"
    ready.unlink(missing_ok=True)
    argv = [
        *command("trainer"),
        "serve",
        *TRAINER_ARGS,
        "--port",
        str(port),
        "--checkpoint-dir",
        str(run),
        "--ready-file",
        str(ready),
        *extra,
    ]
    return start(name, argv, workdir, ready_file=ready, timeout=180)


def start_agent(workdir: Path, name: str, trainer: Process, servers: list[Process], sessions: int) -> Process:
    argv = [*command("agent-client")]
    for server in servers:
        argv += ["--server", server.address]
    argv += [
        "--trainer",
        trainer.address,
        "--sessions",
        str(sessions),
        "--name",
        name,
        "--threads",
        "1",
        "--timeout",
        "10",
        "--seed",
        str(sum(map(ord, name))),
    ]
    return start(name, argv, workdir)


def status(run: Path) -> dict[str, Any]:
    """The trainer's status.json (empty while it is being replaced or before the first)."""
    try:
        return dict(json.loads((run / "status.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def metrics(run: Path) -> list[dict[str, float]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return rows


def counter(run: Path, name: str) -> int:
    return int(status(run).get("counters", {}).get(name, 0))


def agent_ids(run: Path, name: str) -> list[str]:
    """Ids of the live agents called ``name`` in the trainer's status."""
    agents = status(run).get("agents", {})
    return [agent_id for agent_id, info in agents.items() if info["name"] == name]


def agent_info(run: Path, name: str) -> dict[str, Any]:
    agents = status(run).get("agents", {})
    found = [info for info in agents.values() if info["name"] == name]
    return dict(found[0]) if found else {}


def agent_steps(run: Path, name: str) -> int:
    return int(agent_info(run, name).get("steps", 0))


def applied_versions(agent: Process) -> list[int]:
    """The versions an agent applied, in order, from its log."""
    return [int(v) for v in re.findall(r"weights applied version=(\d+)", agent.text())]


def latest_checkpoint_state(run: Path) -> dict[str, Any]:
    latest = run / "checkpoints" / "LATEST"
    try:
        name = latest.read_text().strip()
        return dict(json.loads((run / "checkpoints" / name / "state.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_until(condition: Any, timeout: float, what: str, *watched: Process) -> None:
    """``tests.processes.wait_for`` with the tail of every watched process's log on failure."""

    def message() -> str:
        tails = "\n".join(f"--- {p.name}\n{p.text()[-1500:]}" for p in watched)
        return f"timed out after {timeout}s waiting for {what}\n{tails}"

    wait_for(condition, timeout, message, *watched)
