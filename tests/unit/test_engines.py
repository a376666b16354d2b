"""The engine interface without vLLM (tests/vllm_rollouts runs vLLM itself): the trainer's LoRA layout
reaches the engine at Register, episodes finish under the version they began with, the trainer
can leave the projector out of LoRA, and the checkpoint export vLLM needs."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from visact.agent.config import AgentConfig, ServersConfig
from visact.agent.policy import VLMPolicy
from visact.agent.rollout import Rollout, SeedSchedule
from visact.agent.trainer_link import TrainerLink
from visact.env_server.client import EnvClient
from visact.model.engines import EngineError, SamplingSettings
from visact.model.engines.vllm_checkpoint import renamed, vllm_checkpoint
from visact.model.generation import Sample
from visact.model.loading import load_vlm
from visact.trainer.config import LoraConfig, TrainerConfig
from visact.trainer.learner import Learner
from visact.trainer.v1 import trainer_pb2 as pb

ANSWER = '{"action": "+"}'


class FakeEngine:
    """Answers '+' to everything, as the newest version or the pinned one while it is 'loaded'."""

    name = "fake"

    def __init__(self) -> None:
        self.loaded: Any = SimpleNamespace(name_or_path="fake")
        self.version = 0
        self.kept = 1
        self.fingerprint = "f" * 64
        self.layouts: list[tuple[list[str], int]] = []

    def sample(
        self,
        images: Sequence[Any],
        prompts: Sequence[Any],
        settings: SamplingSettings,
        versions: Sequence[int | None] | None = None,
    ) -> list[Sample]:
        oldest = self.version - self.kept + 1
        return [
            Sample(
                prompt_ids=[1],
                generated_ids=[ord(c) for c in ANSWER],
                log_probs=[-0.1] * len(ANSWER),
                text=ANSWER,
                token_spans=[(i, i + 1) for i in range(len(ANSWER))],
                finished=True,
                version=v if v is not None and oldest <= v <= self.version else self.version,
            )
            for v in (versions or [None] * len(prompts))
        ]

    def prompt_ids(self, images: Sequence[Any], prompts: Sequence[Any]) -> list[list[int]]:
        return [[1] for _ in prompts]

    def check_lora(self, target_modules: Sequence[str], rank: int) -> None:
        self.layouts.append((list(target_modules), rank))
        if any("vision_tower" in m for m in target_modules):
            raise EngineError("no tower")

    def keep_versions(self, count: int) -> None:
        self.kept = count

    def load_version(self, version: int, tensors: dict[str, Any], lora: dict[str, Any]) -> None:
        self.version = version


def test_an_episode_finishes_under_the_version_it_began_with(counter_server: Any) -> None:
    engine = FakeEngine()
    engine.keep_versions(2)
    client = EnvClient(f"127.0.0.1:{counter_server.port}")
    rollout = Rollout([client], VLMPolicy(engine), sessions=2, seed=0)
    episodes: list[Any] = []
    rounds = 0

    def between_rounds() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 2:
            engine.load_version(1, {}, {})  # mid-episode: every CounterEnv episode is >= 2 steps
        if rounds == 4:
            engine.load_version(2, {}, {})
            engine.load_version(3, {}, {})  # version 1 is no longer kept

    try:
        rollout.run(SeedSchedule(rng_seed=0), episodes.append, max_episodes=8, between_rounds=between_rounds)
    finally:
        rollout.close()
        client.close()
    by_episode = [[s.policy_version for s in e.steps] for e in episodes]
    first = by_episode[:2]  # the two episodes in flight when version 1 arrived
    assert all(versions[0] == 0 and set(versions) <= {0, 3} for versions in first), by_episode
    assert any(0 in versions for versions in first) and any(v == 1 for vs in by_episode for v in vs), (
        by_episode
    )
    for versions in by_episode:
        assert versions == sorted(versions), by_episode  # never back to an older version
        assert len(set(versions) - {3}) <= 1, by_episode  # one version, or the newest once its was dropped


def test_register_hands_the_trainers_lora_layout_and_lag_to_the_engine() -> None:
    engine = FakeEngine()
    config = AgentConfig(ServersConfig(server=["127.0.0.1:1"], trainer="127.0.0.1:2"))
    link = TrainerLink(config, VLMPolicy(engine), ["counter"], threading.Event())
    tower = "model.vision_tower.encoder.layers.0.mlp.fc1"

    class Stub:
        def Register(self, request: pb.RegisterRequest, **_: Any) -> pb.RegisterResponse:
            assert request.base_fingerprint == engine.fingerprint
            return pb.RegisterResponse(
                agent_id="a-1",
                max_policy_lag=2,
                sampling=pb.SamplingConfig(temperature=0.5, max_new_tokens=8),
                lora=pb.LoraLayout(target_modules=["q_proj", tower], rank=8),
            )

    link._stub = Stub()  # type: ignore[assignment]
    try:
        with pytest.raises(EngineError):
            link.register()
        assert engine.layouts == [(["q_proj", tower], 8)] and engine.kept == 3
    finally:
        link.close()


def test_the_trainer_can_leave_the_projector_and_the_tower_out_of_lora() -> None:
    def targets(**lora: bool) -> list[str]:
        config = TrainerConfig(lora=LoraConfig(r=4, alpha=8, **lora))
        return sorted(Learner(config, load_vlm("tiny", device="cpu"), Accelerator(cpu=True)).lora_modules)

    everything, language = targets(), targets(vision=False, projector=False)
    assert any("multi_modal_projector" in m for m in everything)
    assert any("vision_tower" in m for m in everything)
    assert language and not [m for m in language if "multi_modal_projector" in m or "vision_tower" in m]
    assert set(language) < set(everything)


def test_renamed_puts_back_the_vision_model_level_vllm_loads() -> None:
    assert renamed("vision_tower.embeddings.patch_embedding.weight") == (
        "vision_tower.vision_model.embeddings.patch_embedding.weight"
    )
    assert renamed("model.vision_tower.encoder.layers.0.mlp.fc1.weight") == (
        "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"
    )
    for unchanged in ("vision_tower.vision_model.encoder.x", "language_model.model.norm.weight"):
        assert renamed(unchanged) == unchanged


def test_a_checkpoint_with_a_flat_tower_is_exported_once_and_others_used_as_they_are(tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (source / "tokenizer.json").write_text("{}")
    weights = {"vision_tower.embeddings.w": torch.ones(2), "language_model.model.norm.weight": torch.zeros(3)}
    save_file(weights, str(source / "model.safetensors"))
    cache = tmp_path / "cache"

    exported = Path(vllm_checkpoint(str(source), cache))
    assert exported.parent == cache and (exported / "tokenizer.json").is_file()
    tensors = load_file(str(exported / "model.safetensors"))
    assert sorted(tensors) == ["language_model.model.norm.weight", "vision_tower.vision_model.embeddings.w"]
    assert torch.equal(tensors["vision_tower.vision_model.embeddings.w"], torch.ones(2))
    assert vllm_checkpoint(str(source), cache) == str(exported)  # made once
    assert vllm_checkpoint(str(exported), cache) == str(exported)  # nothing to rename: as it is
    assert vllm_checkpoint("org/some-hub-model", cache) == "org/some-hub-model"
