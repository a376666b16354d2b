"""The whole loop as real processes on loopback: an env server, `trainer serve`, two `agent-client`s.

After a few PPO updates the adapter has changed, both agents run the newest version, the
publish latency and bytes are in the metrics; the trainer is then killed (SIGKILL) and
resumed from its checkpoint, and the agents carry on with it. Both trainers log to an
offline Weights & Biases run, the resumed one into the same run id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load as load_safetensors

from tests.processes import TRAINER_ARGS as FAST_TRAINER_ARGS
from tests.processes import Process, command, start, start_agent, start_env, wait_for
from tests.vlm_families import build_tiny_qwen2_vl
from tests.wandb_records import offline_runs

pytestmark = pytest.mark.slow

TRAINER_ARGS = [*FAST_TRAINER_ARGS, "--agent-timeout", "120"]
#: W&B on disk only, nothing asked of the user
WANDB_OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true"}


def metrics(run: Path) -> list[dict[str, float]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def status(run: Path) -> dict:
    path = run / "status.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def adapter_tensors(run: Path, version: int) -> dict:
    return load_safetensors((run / "weights" / f"v{version:06d}" / "adapter.safetensors").read_bytes())


def test_two_agents_train_with_a_trainer_that_is_killed_and_resumed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = start_env(tmp_path, "env")
    trainer = start(
        "trainer",
        [
            *command("trainer"),
            "serve",
            *TRAINER_ARGS,
            "--port",
            "0",
            "--checkpoint-dir",
            str(run),
            "--ready-file",
            str(tmp_path / "trainer.port"),
            "--wandb-project",
            "visact-tests",
        ],
        tmp_path,
        ready_file=tmp_path / "trainer.port",
        timeout=180,
        env=WANDB_OFFLINE,
    )
    agents: list[Process] = []
    try:
        for name in ("a1", "a2"):
            agents.append(
                start_agent(
                    tmp_path,
                    name,
                    env,
                    trainer,
                    "--sessions",
                    "3",
                    "--name",
                    name,
                    "--seed",
                    str(len(agents)),
                )
            )
        first_adapter = adapter_tensors(run, 0)

        # a few updates: the adapter changed, and the metrics say what publishing cost
        wait_for(lambda: len(metrics(run)) >= 3, 600, lambda: trainer.text()[-3000:], trainer, *agents)
        rows = metrics(run)
        latest = int(rows[-1]["charts/version"])
        changed = adapter_tensors(run, latest)
        assert any(not (changed[k] == first_adapter[k]).all() for k in first_adapter), (
            "the adapter never changed"
        )
        assert all(row["perf/publish_seconds"] > 0 for row in rows)
        assert all(row["perf/weights_bytes"] > 1000 for row in rows)
        assert rows[-1]["counters/weights_bytes_sent"] >= 2 * rows[-1]["perf/weights_bytes"]
        assert any("perf/weight_sync_seconds" in row for row in rows)
        assert {
            "losses/policy",
            "losses/value",
            "losses/approx_kl",
            "losses/clip_frac",
            "losses/explained_variance",
            "charts/success_rate",
            "charts/valid_action_rate",
            "charts/cot_tokens",
            "charts/policy_lag_mean",
            "perf/samples_per_second",
        } <= set(rows[-1])
        assert (run / "tb").is_dir() and any((run / "tb").iterdir())

        # kill the trainer without warning; resume it on the same port from its checkpoint
        port = trainer.port
        trainer.kill()
        rows = metrics(run)
        updates_before = len(rows)
        latest = int(rows[-1]["charts/version"])
        checkpoint_state = json.loads(
            (
                run / "checkpoints" / (run / "checkpoints" / "LATEST").read_text().strip() / "state.json"
            ).read_text()
        )
        (tmp_path / "trainer.port").unlink()
        resume_updates = checkpoint_state["updates"] + 2
        trainer = start(
            "trainer-resumed",
            [
                *command("trainer"),
                "serve",
                *TRAINER_ARGS,
                "--port",
                str(port),
                "--checkpoint-dir",
                str(run),
                "--resume",
                str(run),
                "--max-updates",
                str(resume_updates),
                "--ready-file",
                str(tmp_path / "trainer.port"),
                "--wandb-project",
                "visact-tests",
            ],
            tmp_path,
            ready_file=tmp_path / "trainer.port",
            timeout=180,
            env=WANDB_OFFLINE,
        )
        # it trains to --max-updates, waits for both agents to run its newest version, and exits
        assert trainer.popen.wait(timeout=900) == 0, trainer.text()[-3000:]
        assert "resumed" in trainer.text()
        assert "agents on the newest version" in trainer.text(), trainer.text()[-3000:]
        resumed_rows = metrics(run)[updates_before:]
        assert resumed_rows[0]["update"] == checkpoint_state["updates"] + 1, (
            "the update count did not continue"
        )
        assert resumed_rows[-1]["update"] == resume_updates
        # W&B: the resumed trainer logged its updates into the killed one's run, config included
        # (the killed trainer's record file may lack what it had not flushed: only its name counts)
        run_dirs = sorted((run / "wandb").glob("offline-run-*"))
        assert len(run_dirs) == 2 and all(d.name.endswith(f"-{checkpoint_state['run_id']}") for d in run_dirs)
        resumed = offline_runs(run / "wandb")[-1]
        assert resumed.run_id == checkpoint_state["run_id"]
        assert (
            resumed.exited
            and resumed.config["lr"] == 1e-3
            and resumed.config["wandb_project"] == "visact-tests"
        )
        logged = [row for row in resumed.history if "charts/success_rate" in row]
        assert [row["_step"] for row in logged] == [row["update"] for row in resumed_rows]
        assert [row["losses/policy"] for row in logged] == pytest.approx(
            [row["losses/policy"] for row in resumed_rows]
        )
        final = status(run)
        assert final["latest_version"] > latest, "versions went backwards or stood still"
        # every agent registered with the resumed trainer runs its newest version; an agent still
        # in its reconnect backoff when the two updates were done is not waited for (under load
        # one agent can make both updates alone: tests/reliability covers reconnecting in full)
        assert final["agents"], final
        assert all(a["version"] == final["latest_version"] for a in final["agents"].values()), final
        for agent in agents:
            assert agent.alive(), agent.text()[-2000:]
    finally:
        for agent in agents:
            agent.stop(timeout=30)
        trainer.stop(timeout=60)
        env.stop(timeout=30)


def start_two_update_run(
    tmp_path: Path, trainer_args: list[str], agent_args: list[str]
) -> tuple[Process, Process, Process]:
    """An env server, `trainer serve` to 2 updates (run dir ``tmp_path/run``) and one agent."""
    env = start_env(tmp_path, "env")
    trainer = start(
        "trainer",
        [
            *command("trainer"), "serve", *TRAINER_ARGS, *trainer_args, "--port", "0",
            "--checkpoint-dir", str(tmp_path / "run"), "--max-updates", "2",
            "--ready-file", str(tmp_path / "trainer.port"),
        ],
        tmp_path,
        ready_file=tmp_path / "trainer.port",
        timeout=180,
    )  # fmt: skip
    agent = start_agent(tmp_path, "agent", env, trainer, *agent_args)
    return env, trainer, agent


def test_a_qwen2_vl_checkpoint_trains_across_processes(tmp_path: Path) -> None:
    """Another family by path, as a user brings one: `trainer serve --model DIR` (with activation
    checkpointing) and `agent-client --model DIR`; the agent runs every version it is sent,
    LoRA on Qwen's vision tower included."""
    model = str(build_tiny_qwen2_vl(tmp_path / "qwen2_vl"))
    run = tmp_path / "run"
    env, trainer, agent = start_two_update_run(
        tmp_path, ["--model", model, "--gradient-checkpointing"], ["--model", model, "--sessions", "3"]
    )
    try:
        # it trains to --max-updates, waits for the agent to run its newest version, and exits
        assert trainer.popen.wait(timeout=600) == 0, trainer.text()[-3000:]
        assert "agents on the newest version" in trainer.text(), trainer.text()[-3000:]
        assert [int(row["update"]) for row in metrics(run)] == [1, 2]
        first, last = adapter_tensors(run, 0), adapter_tensors(run, 2)
        assert any(".visual." in key for key in last), sorted(last)[:5]
        assert any(not (last[k] == first[k]).all() for k in first), "the adapter never changed"
        final = status(run)
        assert [a["version"] for a in final["agents"].values()] == [final["latest_version"]], final
        assert agent.alive(), agent.text()[-2000:]
    finally:
        agent.stop(timeout=30)
        trainer.stop(timeout=60)
        env.stop(timeout=30)


def test_grpo_trains_on_whole_groups_of_one_seed_across_processes(tmp_path: Path) -> None:
    """`trainer serve --advantage grpo --group-size 2`: the agent learns the group size from the
    trainer, plays each seed in a pair of sessions, and every update trains on whole pairs."""
    run = tmp_path / "run"
    env, trainer, agent = start_two_update_run(
        tmp_path, ["--advantage", "grpo", "--group-size", "2"], ["--sessions", "4"]
    )
    try:
        assert trainer.popen.wait(timeout=600) == 0, trainer.text()[-3000:]
        rows = metrics(run)
        assert [int(row["update"]) for row in rows] == [1, 2]
        assert all(row["charts/group_size_mean"] == 2.0 for row in rows), rows
        assert all(row["charts/groups"] * 2 == row["charts/episodes"] for row in rows), rows
        first, last = adapter_tensors(run, 0), adapter_tensors(run, 2)
        assert any(not (last[k] == first[k]).all() for k in first), "the adapter never changed"
        assert agent.alive(), agent.text()[-2000:]
    finally:
        agent.stop(timeout=30)
        trainer.stop(timeout=60)
        env.stop(timeout=30)


def test_the_trainer_has_its_agents_prefill_the_answers_opening(tmp_path: Path) -> None:
    """`trainer serve --no-cot --prefill-answer`: the agent takes both from the trainer, samples
    what follows `{"action":`, and the learner trains on those episodes (their prompt tokens end
    with the opening) to --max-updates."""
    run = tmp_path / "run"
    env, trainer, agent = start_two_update_run(
        tmp_path, ["--no-cot", "--prefill-answer"], ["--sessions", "2"]
    )
    try:
        assert trainer.popen.wait(timeout=600) == 0, trainer.text()[-3000:]
        assert [int(row["update"]) for row in metrics(run)] == [1, 2]
        registered = [line for line in agent.text().splitlines() if "registered" in line]
        assert registered and all(
            "cot=False" in line and "prefill_answer=True" in line for line in registered
        ), registered
        assert agent.alive(), agent.text()[-2000:]
    finally:
        agent.stop(timeout=30)
        trainer.stop(timeout=60)
        env.stop(timeout=30)
