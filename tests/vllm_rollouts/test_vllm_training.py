"""`trainer serve`, an env server and an `agent-client --engine vllm` as real processes on
loopback: the agent hot-loads every version the trainer publishes (written to its own disk, a new
LoRA id each) and ends on the newest; against a trainer whose LoRA adapts the vision tower it
refuses to start, saying how to fix it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.processes import TRAINER_ARGS, Process, command, start, start_agent, start_env, wait_for
from tests.vllm_rollouts.gate import require_vllm

require_vllm()

pytestmark = pytest.mark.slow

LANGUAGE_ONLY = ["--no-lora-vision", "--no-lora-projector"]


def start_trainer(tmp_path: Path, *extra: str) -> Process:
    return start(
        "trainer",
        [
            *command("trainer"), "serve", *TRAINER_ARGS, "--port", "0", "--agent-timeout", "120",
            "--checkpoint-dir", str(tmp_path / "run"), "--ready-file", str(tmp_path / "trainer.port"), *extra,
        ],
        tmp_path,
        ready_file=tmp_path / "trainer.port",
        timeout=180,
    )  # fmt: skip


def log_records(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


@pytest.mark.timeout(1200)  # three updates; a busy CI machine is slow
def test_versions_hot_swap_into_vllm_during_a_run(tmp_path: Path) -> None:
    env = start_env(tmp_path, "env")
    trainer = start_trainer(tmp_path, *LANGUAGE_ONLY, "--max-updates", "3")
    agent = start_agent(
        tmp_path, "agent", env, trainer, "--engine", "vllm", "--sessions", "4", "--log-format", "json"
    )
    try:
        # it trains to --max-updates, waits for the agent to run its newest version, and exits
        assert trainer.popen.wait(timeout=900) == 0, trainer.text()[-3000:]
        assert "agents on the newest version" in trainer.text(), trainer.text()[-3000:]
        run = tmp_path / "run"
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [int(row["update"]) for row in rows] == [1, 2, 3]
        final = json.loads((run / "status.json").read_text())
        assert [a["version"] for a in final["agents"].values()] == [final["latest_version"]] == [3], final

        records = log_records(agent.text())
        applied = [r for r in records if r.get("msg") == "weights applied"]
        assert all(r["engine"] == "vllm" for r in applied), applied
        versions = [int(r["version"]) for r in applied]
        assert versions == sorted(versions) and versions[-1] == 3 and len(versions) >= 3, versions
        for record in applied:
            print(f"version {record['version']}: applied in {float(record['seconds']) * 1000:.0f} ms")
        assert not [r for r in records if r.get("msg") == "weights refused"]
        assert agent.alive(), agent.text()[-2000:]
    finally:
        agent.stop(timeout=30)
        trainer.stop(timeout=60)
        env.stop(timeout=30)


def test_an_agent_on_vllm_refuses_a_trainer_that_adapts_the_vision_tower(tmp_path: Path) -> None:
    env = start_env(tmp_path, "env")
    trainer = start_trainer(tmp_path)  # the paper's LoRA: the vision tower too
    agent = start_agent(tmp_path, "agent", env, trainer, "--engine", "vllm", "--sessions", "2")
    try:
        wait_for(lambda: not agent.alive(), 300, lambda: agent.text()[-3000:])
        assert agent.popen.returncode == 2, agent.text()[-3000:]
        assert "--no-lora-vision --no-lora-projector" in agent.text(), agent.text()[-3000:]
        assert "vision tower" in agent.text()
    finally:
        agent.stop(timeout=30)
        trainer.stop(timeout=60)
        env.stop(timeout=30)
