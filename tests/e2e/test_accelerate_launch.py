"""Two learner processes train one policy together: `torchrun --nproc_per_node 2 trainer serve` on CPU
(gloo), the same code path as `accelerate launch --multi_gpu trainer serve` on GPUs.

With a tiny --target-kl each update ends after its first minibatch: both processes must agree
on that (a process stepping on alone would hang in DDP's gradient all-reduce). Both run with
--gradient-checkpointing, as a 7B model on several GPUs would.

And two learner processes drop the same samples the model cannot score, even one that only one
of them fails on (tests/e2e/drop_together.py), and end their update with the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.processes import command, start, start_agent, start_env

ROOT = Path(__file__).resolve().parents[2]

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


def test_two_learner_processes_drop_the_same_unscorable_samples_and_stay_in_step(tmp_path: Path) -> None:
    launch = subprocess.Popen(
        [*command("torchrun"), "--nproc_per_node", "2", "-m", "tests.e2e.drop_together", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # torchrun and its two processes: one group to kill
    )
    try:
        log, _ = launch.communicate(timeout=600)  # one waiting in a collective the other never joins hangs
    except subprocess.TimeoutExpired:
        os.killpg(launch.pid, signal.SIGKILL)
        launch.communicate()
        raise
    assert launch.returncode == 0, log[-4000:]
    ranks = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["processes"] for r in ranks] == [2, 2]
    for result in ranks:
        metrics = result["metrics"]
        # the episode no process can score, and the one only the second process could not
        assert metrics["counters/episodes_dropped"] == 2 and metrics["charts/episodes"] == 4, metrics
        assert metrics["charts/optimizer_steps"] == 2  # 4 samples in minibatches of 2
    assert ranks[0]["episode_ids"] == ranks[1]["episode_ids"]  # the ids travel with the batch
    assert ranks[0]["lora_sum"] == ranks[1]["lora_sum"]  # the same update on both: still in step
    assert "sample dropped" in log and "agent=a episode=e1" in log, log[-3000:]
