"""`trainer serve`: wire the learner, the hub and the gRPC service, then learn until stopped.

The main thread runs the learning loop: take a batch of whole episodes from the hub, update,
publish the adapter as the next version, log, checkpoint every N updates. The gRPC service
serves the agents meanwhile, as coroutines on the process's event loop (``visact.rpc``).
SIGTERM/SIGINT: checkpoint, stop taking calls, exit.
Runs the same on CPU, on one GPU, and under `accelerate launch` (the main process serves).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visact import rpc
from visact.configcli import as_options
from visact.memory import tune_allocator
from visact.model.adapters import ADAPTER_FILE, save_adapter_file
from visact.trainer.admission import model_admission
from visact.trainer.checkpoint import highest_published_version, load_checkpoint, save_checkpoint, weights_dir
from visact.trainer.config import TrainerConfig
from visact.trainer.distributed import share_batch
from visact.trainer.hub import Hub, PublishedVersion
from visact.trainer.learner import Learner
from visact.trainer.metrics import MetricsLogger, open_wandb
from visact.trainer.service import SERVICE, ModelIdentity, TrainerServicer
from visact.trainer.v1 import trainer_pb2 as pb

log = logging.getLogger("trainer")


@dataclass
class Trainer:
    """A running trainer: its parts, for the loop, the CLI and in-process tests."""

    config: TrainerConfig
    learner: Learner
    hub: Hub
    server: rpc.Server
    port: int
    metrics: MetricsLogger
    run_id: str
    stop: threading.Event
    last_publish_seconds: float = 0.0

    # ------------------------------------------------------------------ versions
    def publish(self) -> PublishedVersion:
        """Save the learner's adapter as its current version and announce it."""
        started = time.monotonic()
        directory = weights_dir(self.config.run.checkpoint_dir) / f"v{self.learner.version:06d}"
        path, sha = save_adapter_file(self.learner.peft_model, directory)
        published = PublishedVersion(self.learner.version, path, sha, path.stat().st_size, time.time())
        for old in self.hub.publish(published):
            _remove_version(old.path.parent)
        self.last_publish_seconds = time.monotonic() - started
        log.info(
            "published",
            extra={
                "version": published.version,
                "bytes": published.size_bytes,
                "sha256": sha[:12],
                "seconds": round(self.last_publish_seconds, 4),
            },
        )
        return published

    def write_status(self) -> None:
        """``run_dir/status.json``: the newest version and what each agent runs (for people and tests)."""
        status = {
            "run_id": self.run_id,
            "updates": self.learner.updates,
            "port": self.port,
            **self.hub.status(),
        }
        path = self.config.run.checkpoint_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        tmp.replace(path)

    def checkpoint(self) -> Path:
        state = {"run_id": self.run_id, "trained_episodes": self.hub.trained_episodes()}
        path = save_checkpoint(self.learner, self.config.run.checkpoint_dir, state)
        log.info("checkpoint", extra={"path": str(path), "version": self.learner.version})
        return path

    # ------------------------------------------------------------------ the loop
    def learn(self) -> None:
        """Update whenever a batch is ready, until stopped or --max-updates."""
        config = self.config
        while not self.stop.is_set():
            for agent_id in self.hub.expire_agents():  # its finished episodes stay in the buffer
                kept = self.hub.buffered_episodes_of(agent_id)
                log.warning("agent expired", extra={"agent": agent_id, "episodes_kept": kept})
            batch = self.hub.take_batch(config.rollout.steps_per_update, timeout=0.5)
            self.write_status()
            if batch is None:
                continue
            share_batch(self.learner.accelerator, batch)  # to the other learner processes, if any
            metrics = self.learner.update(batch)
            self.publish()
            metrics["perf/publish_seconds"] = self.last_publish_seconds
            metrics["perf/weights_bytes"] = float(self.hub.latest.size_bytes if self.hub.latest else 0)
            metrics["charts/version"] = float(self.learner.version)
            metrics["charts/agents"] = float(len(self.hub.agents))
            synced = self.hub.take_sync_seconds()
            if synced:
                metrics["perf/weight_sync_seconds"] = sum(synced) / len(synced)
            metrics.update({f"counters/{k}": float(v) for k, v in self.hub.counters.items()})
            self.metrics.log(self.learner.updates, metrics)
            if config.run.checkpoint_every and self.learner.updates % config.run.checkpoint_every == 0:
                self.checkpoint()
            if config.run.max_updates and self.learner.updates >= config.run.max_updates:
                log.info("reached --max-updates", extra={"updates": self.learner.updates})
                self.wait_for_agents(timeout=60.0)
                break

    def wait_for_agents(self, timeout: float) -> bool:
        """Keep serving until every live agent reports the newest version (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        latest = self.learner.version
        while time.monotonic() < deadline and not self.stop.is_set():
            self.write_status()
            agents = self.hub.status()["agents"]
            assert isinstance(agents, dict)
            if all(a["version"] == latest for a in agents.values()):
                log.info("agents on the newest version", extra={"version": latest, "agents": len(agents)})
                return True
            time.sleep(0.2)
        log.warning("agents did not all reach the newest version", extra={"version": latest})
        return False

    def shutdown(self, grace: float = 5.0) -> None:
        """Checkpoint, refuse new calls, let running ones finish."""
        self.server.health.enter_graceful_shutdown()
        self.checkpoint()
        self.hub.close()
        self.server.stop(grace)
        self.metrics.close()


def build_learner(config: TrainerConfig) -> tuple[Learner, dict[str, Any]]:
    """The model with its adapter and value head on this process's device, restored if asked."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from visact.model.loading import load_vlm

    tune_allocator()
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    # Other processes wait for the main one between batches, which may take long without agents.
    # cpu=True without CUDA: several CPU processes (torchrun) then form a gloo group (MULTI_CPU).
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=24))],
    )
    loaded = load_vlm(
        config.vlm.model,
        dtype=config.vlm.dtype,
        device=accelerator.device,
        attn_implementation=config.vlm.attn_implementation,
    )
    learner = Learner(config, loaded, accelerator)
    state: dict[str, Any] = {}
    if config.run.resume is not None:
        state = load_checkpoint(learner, config.run.resume)
        # Versions never go backwards: weights published after the checkpoint get a successor.
        newest = highest_published_version(config.run.checkpoint_dir)
        if newest >= learner.version:
            learner.version = newest + 1
    return learner, state


def build_trainer(config: TrainerConfig, learner: Learner, state: dict[str, Any]) -> Trainer:
    """The main process: the hub and the gRPC service around the learner; publishes the first version."""
    hub = Hub(
        buffer_steps=config.rollout.buffer_steps,
        buffer_bytes=config.rollout.buffer_bytes,
        max_policy_lag=config.rollout.max_policy_lag,
        agent_timeout=config.network.agent_timeout,
        keep_versions=config.run.keep_versions,
        group_size=config.rollout.group_size,
        max_agents=config.network.max_agents,
    )
    run_id = str(state.get("run_id", secrets.token_hex(6)))
    # episodes the checkpointed weights were trained on: a retry of one after the restart counts once
    hub.restore_trained_episodes(state.get("trained_episodes", []))
    if config.run.resume is not None:
        log.info(
            "resumed",
            extra={"from": str(config.run.resume), "updates": learner.updates, "version": learner.version},
        )
    sampling = pb.SamplingConfig(
        temperature=config.rollout.temperature,
        max_new_tokens=config.rollout.max_new_tokens,
        chain_of_thought=config.rollout.cot,
        prefill_answer=config.rollout.prefill_answer,
        format_penalty=config.rollout.format_penalty,
        group_size=config.rollout.group_size,
    )
    admission = model_admission(
        learner.loaded,
        vocab_size=learner.vocab_size,
        max_tokens=learner.max_tokens,
        temperature=config.rollout.temperature,
        max_image_pixels=config.rollout.max_image_pixels,
        buffer_bytes=config.rollout.buffer_bytes,
    )
    log.info(
        "episodes", extra={"max_image_pixels": admission.max_image_pixels, "buffer_bytes": hub.buffer_bytes}
    )
    identity = ModelIdentity(config.vlm.model, learner.fingerprint, admission)
    lora = pb.LoraLayout(target_modules=learner.lora_modules, rank=int(learner.lora.r))
    workers = rpc.Workers(config.network.workers, "trainer-work")
    servicer = TrainerServicer(hub, identity, sampling, run_id, lora, workers)
    server = start_server(config, servicer)
    trainer = Trainer(
        config,
        learner,
        hub,
        server,
        server.port,
        MetricsLogger(
            config.run.checkpoint_dir,
            open_wandb(
                config.run.wandb_project,
                config.run.wandb_entity,
                run_id,
                config.run.checkpoint_dir,
                as_options(config),
            ),
        ),
        run_id,
        threading.Event(),
    )
    trainer.publish()
    return trainer


def start_server(config: TrainerConfig, servicer: TrainerServicer) -> rpc.Server:
    """The Trainer service (with health and reflection) listening as ``config`` says."""
    listen = rpc.Listen(
        host=config.network.host,
        port=config.network.port,
        max_message_bytes=config.network.max_message_bytes,
        token=config.network.token,
        tls_cert=config.network.tls_cert,
        tls_key=config.network.tls_key,
        tls_client_ca=config.network.tls_client_ca,
        max_health_watchers=config.network.max_health_watchers,
    )
    return rpc.Server(listen, [rpc.Service(SERVICE, servicer)], servicer.workers)


def follow(learner: Learner) -> None:
    """A learner process other than the main one: update on each shared batch until told to stop."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)  # the main process decides when to stop
    while True:
        batch = share_batch(
            learner.accelerator,
            None,
            latest_version=learner.version,
            vocab_size=learner.vocab_size,
            max_tokens=learner.max_tokens,
        )
        if batch is None:
            log.info(
                "learner process done",
                extra={"rank": learner.accelerator.process_index, "updates": learner.updates},
            )
            return
        learner.update(batch)


def serve(config: TrainerConfig) -> int:
    """The `trainer serve` process (each process, under `accelerate launch`)."""
    learner, state = build_learner(config)
    if not learner.accelerator.is_main_process:
        follow(learner)
        return 0
    trainer = build_trainer(config, learner, state)
    log.info(
        "serving",
        extra={
            "port": trainer.port,
            "model": config.vlm.model,
            "version": trainer.learner.version,
            "run_dir": str(config.run.checkpoint_dir),
            "processes": learner.accelerator.num_processes,
        },
    )
    if config.network.ready_file:
        config.network.ready_file.write_text(f"{trainer.port}\n")

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        trainer.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        trainer.learn()
    finally:
        share_batch(learner.accelerator, None)  # the other learner processes stop too
        trainer.shutdown()
    return 0


def _remove_version(directory: Path) -> None:
    (directory / ADAPTER_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: leave it
        directory.rmdir()
