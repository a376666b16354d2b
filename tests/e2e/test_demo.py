"""`visact demo` as a user runs it, with a tiny budget: demonstrations, SFT, evaluation, PPO
with `trainer serve` and two `agent-client`s, evaluation again, the plot and the summary.

It asserts the plumbing, not the learning (a few updates on a barely fine-tuned model): the
PPO adapter changed from version 0, every update's metrics were written, and the demo ended
with learning_curve.png and summary.json. The learning itself is measured by bench/learning.py.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load as load_safetensors

from tests.processes import command, descendants, running, start, wait_for
from visact.cache import write_manifest
from visact.model.tiny_vlm import ensure_tiny_vlm
from visact.orchestration.demo import DemoConfig, demonstrations, made_by, warm_start, with_game_settings

pytestmark = pytest.mark.slow

UPDATES = 2
METRIC_KEYS = (
    "charts/success_rate",
    "charts/valid_action_rate",
    "charts/cot_tokens",
    "charts/fact_accuracy",  # the agents check their CoT's facts against the env's expert
    "charts/episodes",
    "charts/steps",
    "losses/policy",
    "losses/value",
    "losses/approx_kl",
    "perf/publish_seconds",
)


def adapter(run: Path, version: int) -> dict:
    return load_safetensors((run / "weights" / f"v{version:06d}" / "adapter.safetensors").read_bytes())


def test_demo_runs_every_stage_and_changes_the_adapter(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    budget = [
        "--demo-episodes", "20",
        "--sft-steps", "20",
        "--sft-vision-warmup-steps", "10",
        "--ppo-updates", str(UPDATES),
        "--steps-per-update", "16",
        "--sessions", "4",
        "--max-new-tokens", "48",
        "--eval-episodes", "8",
    ]  # fmt: skip
    result = subprocess.run(
        [*command("visact"), "demo", "--workdir", str(work), *budget],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    summary = json.loads((work / "summary.json").read_text())
    assert summary["ppo_updates"] == UPDATES
    keys = (
        "success_after_sft",
        "success_after_ppo",
        "success_after_sft_sampled",
        "success_after_ppo_sampled",
    )
    for key in (*keys, "training_success_last_200_episodes"):
        assert 0.0 <= summary[key] <= 1.0, (key, summary[key])
    assert (work / "learning_curve.png").stat().st_size > 1000

    run = work / "ppo"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["update"] for row in rows] == list(range(1, UPDATES + 1))
    for row in rows:
        missing = [key for key in METRIC_KEYS if key not in row]
        assert not missing, f"update {row['update']} lacks {missing}"

    status = json.loads((run / "status.json").read_text())
    assert status["latest_version"] == UPDATES
    first, last = adapter(run, 0), adapter(run, UPDATES)
    assert first.keys() == last.keys()
    assert any(not (first[k] == last[k]).all() for k in first), "PPO never changed the adapter"
    assert "held-out success after PPO" in result.stdout
    assert summary["sampling_temperature"] == 0.7  # the PPO temperature: both evaluations ran
    assert "sampling at 0.7 as in training" in result.stdout


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_demos_processes_die_with_it(tmp_path: Path, sig: signal.Signals) -> None:
    """Stopped or killed while its env servers and an evaluation run, the demo leaves none running."""
    work = tmp_path / "demo"
    # An earlier run's demonstrations and SFT model, kept: the demo goes straight to stage 3.
    config = with_game_settings(DemoConfig(workdir=work))
    demos = work.resolve() / "demos" / "numberline.jsonl"
    demos.parent.mkdir(parents=True)
    demos.write_text("{}\n")
    write_manifest(demos.parent, made_by(demonstrations(config, demos)))
    shutil.copytree(ensure_tiny_vlm(), work / "sft" / "model")
    write_manifest(work / "sft" / "model", made_by(warm_start(config, demos, work.resolve() / "sft")))
    demo = start("demo", [*command("visact"), "demo", "--keep", "--workdir", str(work)], tmp_path)

    def evaluating() -> bool:
        return any("agent-client eval" in command_line(pid) for pid in descendants(demo.popen.pid))

    wait_for(evaluating, 120, lambda: f"the demo did not start its evaluation:\n{demo.text()[-3000:]}", demo)
    children = descendants(demo.popen.pid)
    assert len(children) >= 3, [command_line(pid) for pid in children]  # 2 env servers, the evaluation
    demo.popen.send_signal(sig)
    wait_for(
        lambda: not any(running(pid) for pid in children),
        60,
        lambda: f"still running: {[command_line(pid) for pid in children if running(pid)]}",
    )
    assert demo.popen.wait(timeout=30) != 0
