"""The vLLM engine on the tiny VLM, in this process (fp32, CPU): what it samples is what the
learner re-scores, versions load, pin and unload, and a bad adapter is refused while the engine
runs on."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.vllm_rollouts.gate import require_vllm
from visact.env_server import games
from visact.model.adapters import AdapterError, adapter_bytes, attach_lora, lora_config, read_adapter
from visact.model.engines import EngineError, SamplingSettings
from visact.model.engines.transformers_engine import TransformersEngine
from visact.model.engines.vllm_engine import VLLMEngine
from visact.model.generation import teacher_forced_log_probs
from visact.model.loading import LoadedVLM, load_vlm, lora_target_modules
from visact.model.prompts import build_messages

require_vllm()

#: fp32 on CPU; measured here: ~2e-6 (base) and ~1.3e-5 (LoRA r=4, random B)
BASE_TOLERANCE = 1e-4
LORA_TOLERANCE = 1e-4
SETTINGS = SamplingSettings(max_new_tokens=40, temperature=0.7)


@pytest.fixture(scope="module")
def engine() -> Iterator[VLLMEngine]:
    built = VLLMEngine("tiny", dtype="float32", seed=0, threads=1)
    built.check_lora(language_targets(learner()), rank=4)
    built.keep_versions(2)
    yield built


def learner() -> LoadedVLM:
    """The model as the trainer holds it: transformers, fp32, CPU."""
    return load_vlm("tiny", dtype="float32", device="cpu")


def language_targets(loaded: LoadedVLM) -> list[str]:
    return lora_target_modules(loaded.model, loaded.traits, include_vision=False, include_projector=False)


def observations(count: int) -> tuple[list[Any], list[Any]]:
    env = games.make("numberline")
    images, prompts = [], []
    for seed in range(count):
        env.reset(seed=seed)
        images.append(env.render())
        prompts.append(build_messages(env.task_text(), tuple(env.legal_actions()), tuple(env.fact_keys)))
    return images, prompts


def adapter(seed: int) -> tuple[LoadedVLM, dict[str, torch.Tensor], dict[str, Any]]:
    """A language-model LoRA (r=4) with random B, as a published version: the learner holding it,
    and its tensors and config as the agent reads them off the wire."""
    loaded = learner()
    torch.manual_seed(seed)
    loaded.model = attach_lora(loaded.model, lora_config(language_targets(loaded), r=4, alpha=8, dropout=0.0))
    for name, parameter in loaded.model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.3)
    loaded.model.eval()
    tensors, config = read_adapter(adapter_bytes(loaded.model))
    return loaded, tensors, config


def max_abs_diff(loaded: LoadedVLM, images: list[Any], samples: list[Any], temperature: float) -> float:
    with torch.no_grad():
        recomputed = teacher_forced_log_probs(
            loaded, images, [s.prompt_ids for s in samples], [s.generated_ids for s in samples], temperature
        )
    return max(
        (torch.tensor(s.log_probs) - recomputed.log_probs[i, : len(s.log_probs)]).abs().max().item()
        for i, s in enumerate(samples)
    )


def test_sampled_log_probs_match_the_learners_recompute(engine: VLLMEngine) -> None:
    images, prompts = observations(8)
    loaded = learner()
    assert engine.fingerprint == TransformersEngine(loaded).fingerprint
    # the prompts the learner re-scores are the ones the transformers engine makes
    assert engine.prompt_ids(images, prompts) == TransformersEngine(loaded).prompt_ids(images, prompts)
    for temperature in (1.0, 0.2):
        samples = engine.sample(images, prompts, SamplingSettings(40, temperature))
        assert [s.prompt_ids for s in samples] == engine.prompt_ids(images, prompts)
        assert all(len(s.log_probs) == len(s.generated_ids) > 0 for s in samples)
        diff = max_abs_diff(loaded, images, samples, temperature)
        print(f"base, temperature {temperature}: max abs diff {diff:.2e}")
        assert diff < BASE_TOLERANCE
    # stop tokens end an answer and are part of it, as with transformers
    stop = set(loaded.stop_ids)
    for s in engine.sample(images, prompts, SamplingSettings(200, 1.0)):
        assert s.finished == (s.generated_ids[-1] in stop)
        assert not any(token in stop for token in s.generated_ids[:-1])


def test_versions_load_pin_and_unload(engine: VLLMEngine) -> None:
    images, prompts = observations(4)
    holders = {}
    for version in (1, 2, 3):
        holders[version], tensors, config = adapter(seed=version)
        engine.load_version(version, tensors, config)
        assert engine.version == version
    assert engine.loaded_versions() == [2, 3]  # keep_versions(2): version 1 unloaded
    assert len(engine._engine().llm_engine.list_loras()) == 2

    pinned = engine.sample(images, prompts, SETTINGS, versions=[2, 3, 1, None])
    assert [s.version for s in pinned] == [2, 3, 3, 3]  # 1 is gone: the newest answers
    for version in (2, 3):
        mine = [(images[i], s) for i, s in enumerate(pinned) if s.version == version]
        diff = max_abs_diff(
            holders[version], [m[0] for m in mine], [m[1] for m in mine], SETTINGS.temperature
        )
        print(f"LoRA version {version}: max abs diff {diff:.2e}")
        assert diff < LORA_TOLERANCE
    base_diff = max_abs_diff(learner(), images[1:2], pinned[1:2], SETTINGS.temperature)
    assert base_diff > 100 * LORA_TOLERANCE, "the adapter changed nothing: the test could not tell"


def test_a_bad_adapter_is_refused_and_the_engine_runs_on(engine: VLLMEngine, tmp_path: Path) -> None:
    _, tensors, config = adapter(seed=7)
    engine.load_version(10, tensors, config)
    images, prompts = observations(2)

    wrong_shape = {k: (v[:, :-1] if k.endswith("lora_A.weight") else v) for k, v in tensors.items()}
    with pytest.raises(AdapterError, match="shape"):
        engine.load_version(11, wrong_shape, config)
    with pytest.raises(AdapterError, match="not a linear layer"):
        engine.load_version(11, {k.replace("q_proj", "nope"): v for k, v in tensors.items()}, config)
    # bytes that vLLM itself cannot read, on this machine's disk
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_model.safetensors").write_bytes(b"not a safetensors file" * 8)
    shutil.copy(engine._versions[10][1] / "adapter_config.json", corrupt / "adapter_config.json")
    with pytest.raises(AdapterError, match="vLLM refused"):
        engine.load_adapter_dir(11, corrupt)
    assert not corrupt.exists()

    assert engine.version == 10 and 11 not in engine.loaded_versions()
    samples = engine.sample(images, prompts, SETTINGS)
    assert [s.version for s in samples] == [10, 10] and all(s.generated_ids for s in samples)


def test_lora_on_the_vision_tower_or_projector_is_refused(engine: VLLMEngine) -> None:
    loaded = learner()
    everything = lora_target_modules(loaded.model, loaded.traits)
    with pytest.raises(EngineError, match="--no-lora-vision --no-lora-projector"):
        engine.check_lora(everything, rank=4)
    projector_only = [m for m in everything if "multi_modal_projector" in m]
    with pytest.raises(EngineError, match="projector"):
        engine.check_lora(projector_only, rank=4)
    engine.check_lora(language_targets(loaded), rank=4)
