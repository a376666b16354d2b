"""Two learner processes train one policy together: `torchrun --nproc_per_node 2 trainer serve` on CPU
(gloo), the same code path as `accelerate launch --multi_gpu trainer serve` on GPUs.

With a tiny --target-kl each update ends after its first minibatch: both processes must agree
on that (a process stepping on alone would hang in DDP's gradient all-reduce). Both run with
--gradient-checkpointing, as a 7B model on several GPUs would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.processes import command, start, start_agent, start_env

pytestmark = pytest.mark.slow


def test_two_learner_processes_share_each_batch(tmp_path: Path) -> None:
    env = start_env(tmp_path, "env")
    run = tmp_path / "run"
    trainer = start(
        "trainer",
        [
            *command("torchrun"),
            "--nproc_per_node",
            "2",
            command("trainer")[0],
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ready-file",
            str(tmp_path / "trainer.port"),
            "--checkpoint-dir",
            str(run),
            "--steps-per-update",
            "12",
            "--minibatch-size",
            "6",
            "--micro-batch-size",
            "6",
            "--ppo-epochs",
            "1",
            "--target-kl",
            "1e-7",
            "--gradient-checkpointing",  # recomputed layers under DDP's gradient all-reduce
            "--lr",
            "1e-3",
            "--max-new-tokens",
            "24",
            "--temperature",
            "1.0",
            "--lora-r",
            "4",
            "--lora-alpha",
            "8",
            "--threads",
            "1",
            "--max-updates",
            "3",
        ],
        tmp_path,
        ready_file=tmp_path / "trainer.port",
        timeout=300,
    )
    agent = start_agent(tmp_path, "agent", env, trainer, "--sessions", "3")
    try:
        assert trainer.popen.wait(timeout=600) == 0, trainer.text()[-4000:]
        log = trainer.text()
        assert "processes=2" in log, log[-3000:]
        assert "learner process done rank=1 updates=3" in log, log[-3000:]
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [row["update"] for row in rows] == [1, 2, 3]
        # >= 12 steps in minibatches of 6: two or more per update, the second stopped by the KL
        assert [row["charts/optimizer_steps"] for row in rows] == [1.0, 1.0, 1.0], rows
        assert all(row["charts/kl_stopped_early"] == 1.0 and row["losses/stop_kl"] > 1e-7 for row in rows)
        assert json.loads((run / "status.json").read_text())["latest_version"] == 3
    finally:
        agent.stop(timeout=30)
        trainer.stop(timeout=30)
        env.stop(timeout=30)
