"""Other VLM families through the same ``load_vlm``, sampling, log-prob recompute and PPO update.

Tiny random checkpoints of Idefics3, PaliGemma, SmolVLM, Qwen2-VL and Qwen2.5-VL
(``vlm_families``), built offline, go through exactly the code a real checkpoint of that
family goes through: the family table, the processor (without torchvision: without its video
part), multimodal RoPE positions (Qwen), prefix token types (PaliGemma), LoRA targets and the
learner's update with its value head, and the SFT warm start whose result loads again.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from tests.vlm_families import FAMILY_BUILDERS
from visact.model.generation import (
    _encode,
    _token_extras,
    generate_batch,
    prompt_token_ids,
    teacher_forced_log_probs,
)
from visact.model.loading import LoadedVLM, ModelLoadError, load_vlm, lora_target_modules
from visact.orchestration.demos import DemosConfig, write_demos
from visact.orchestration.sampled_episodes import answered_episodes, numberline_frames, one_step_message
from visact.trainer.admission import model_admission
from visact.trainer.config import LoraConfig, PPOConfig, TrainerConfig
from visact.trainer.learner import Learner
from visact.trainer.sft import train_sft, vision_parameters
from visact.trainer.sft_config import SFTConfig
from visact.trainer.v1 import trainer_pb2 as pb
from visact.wire.episodes import InvalidEpisode

FAMILIES = sorted(FAMILY_BUILDERS)
PROMPTS = ["Read the numbers.", "What is the target number? Answer in json.", "Go"]
NO_TORCHVISION = importlib.util.find_spec("torchvision") is None
#: the families whose processors also take videos, and their processor classes
PROCESSOR_CLASS = {
    "qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor",
    "smolvlm": "SmolVLMProcessor", "internvl": "InternVLProcessor", "llava_onevision": "LlavaOnevisionProcessor",
}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: builder(root / family) for family, (builder, _) in FAMILY_BUILDERS.items()}


def assert_recomputed_log_probs_match(loaded: LoadedVLM, images: list[np.ndarray], samples: list) -> None:
    with torch.no_grad():
        forced = teacher_forced_log_probs(
            loaded, images, [s.prompt_ids for s in samples], [s.generated_ids for s in samples], 0.7
        )
    for row, sample in enumerate(samples):
        n = len(sample.generated_ids)
        assert int(forced.mask[row].sum()) == n
        torch.testing.assert_close(
            forced.log_probs[row, :n], torch.tensor(sample.log_probs), atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_samples_and_recomputes_the_same_log_probs(
    checkpoints: dict[str, Path], family: str
) -> None:
    loaded = load_vlm(str(checkpoints[family]), device="cpu")
    assert loaded.traits.family == family
    assert loaded.tokenizer.padding_side == "left"
    images = numberline_frames(3)  # prompts of three lengths: left padding differs per row
    samples = generate_batch(loaded, images, PROMPTS, 10, 0.7, generator=torch.Generator().manual_seed(7))
    assert all(len(s.generated_ids) == len(s.log_probs) >= 1 for s in samples)
    image_tokens = set(
        getattr(loaded.processor, "image_token_ids", None) or [loaded.processor.image_token_id]
    )
    assert all(sum(t in image_tokens for t in s.prompt_ids) >= 4 for s in samples)  # the image reached it
    assert_recomputed_log_probs_match(loaded, images, samples)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_familys_trainer_accepts_its_answers_and_refuses_them_without_their_image_tokens(
    checkpoints: dict[str, Path], family: str
) -> None:
    """The trainer's admission, with the family's own processor: a sampled answer is accepted; the
    same prompt without its image tokens, or an answer holding one, would fail the learner's
    forward ("Image features and image tokens do not match") and is refused."""
    loaded = load_vlm(str(checkpoints[family]), device="cpu")
    vocab = int(loaded.base_model.get_output_embeddings().weight.shape[0])
    admission = model_admission(
        loaded, vocab_size=vocab, max_tokens=4096, temperature=0.7, max_image_pixels=0, buffer_bytes=1 << 30
    )
    assert 64 * 64 <= admission.max_image_pixels <= 4096 * 4096
    [frame] = numberline_frames(1)  # 300x300: resized, cropped or tiled by each processor its own way
    [answer] = generate_batch(loaded, [frame], ["Go"], 6, 0.7, generator=torch.Generator().manual_seed(5))
    sound = one_step_message(frame, answer, 0.7)
    admission.episode(sound, agent_id="a", latest_version=0)

    assert admission.rules is not None
    image_ids = admission.rules.image_ids
    without = pb.Episode()
    without.CopyFrom(sound)
    kept = [t for t in without.steps[0].prompt_ids if t not in image_ids]
    without.steps[0].ClearField("prompt_ids")
    without.steps[0].prompt_ids.extend(kept)
    with pytest.raises(InvalidEpisode, match="image tokens"):
        admission.episode(without, agent_id="a", latest_version=0)
    holding = pb.Episode()
    holding.CopyFrom(sound)
    holding.steps[0].generated_ids.append(min(image_ids))
    holding.steps[0].log_probs.append(-1.0)
    with pytest.raises(InvalidEpisode, match="special token that sampling never draws"):
        admission.episode(holding, agent_id="a", latest_version=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_familys_answers_depend_on_the_image(checkpoints: dict[str, Path], family: str) -> None:
    """The same prompt and answer scored under two frames: the image must reach the language model
    (a tiny checkpoint with a zero projector, or an image token left out, would not)."""
    loaded = load_vlm(str(checkpoints[family]), device="cpu")
    images = numberline_frames(2)
    prompt = prompt_token_ids(loaded, images[:1], ["Answer in json."])[0]
    answer = loaded.tokenizer("the target is 3", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        forced = teacher_forced_log_probs(loaded, images, [prompt, prompt], [answer, answer], 1.0)
    assert (forced.log_probs[0] - forced.log_probs[1]).abs().max() > 1e-5


#: families whose forward takes per-token types, and the key it takes them under
TOKEN_TYPES = {
    "qwen2_vl": "mm_token_type_ids", "qwen2_5_vl": "mm_token_type_ids", "qwen3_vl": "mm_token_type_ids",
    "gemma3": "token_type_ids", "paligemma": "token_type_ids",
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(TOKEN_TYPES))
def test_token_types_are_rebuilt_exactly_as_the_processor_makes_them(
    checkpoints: dict[str, Path], family: str
) -> None:
    """Sampling and the recompute rebuild token types from the ids (the answer has none from the
    processor); a family whose types were left out would still match itself, so compare with the
    processor's own."""
    loaded = load_vlm(str(checkpoints[family]), device="cpu")
    encoded = _encode(loaded, numberline_frames(3), PROMPTS)
    key = TOKEN_TYPES[family]
    rebuilt = _token_extras(loaded, encoded["input_ids"], None)
    assert key in encoded and key in rebuilt
    torch.testing.assert_close(rebuilt[key].long(), encoded[key].long(), rtol=0, atol=0)
    if family != "paligemma":  # PaliGemma's types mark the answer (none here): all 0
        assert int(rebuilt[key].sum()) >= 3 * 4


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_targets_include_or_exclude_each_familys_vision_tower(
    checkpoints: dict[str, Path], family: str
) -> None:
    loaded = load_vlm(str(checkpoints[family]), device="cpu")
    vision = FAMILY_BUILDERS[family][1]
    every = lora_target_modules(loaded.model)
    text_only = lora_target_modules(loaded.model, include_vision=False)
    assert any(vision in name.split(".") for name in every)
    assert not any(vision in name.split(".") for name in text_only)
    assert any(".layers.0." in name for name in text_only)  # the language model stays


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_vision_warmup_trains_each_familys_tower_and_projector_alone(
    checkpoints: dict[str, Path], family: str
) -> None:
    loaded = load_vlm(str(checkpoints[family]), device="cpu")
    tower, projector = FAMILY_BUILDERS[family][1], set(loaded.traits.projector_modules)
    chosen = {id(p) for p in vision_parameters(loaded)}
    names = {n: id(p) in chosen for n, p in loaded.model.named_parameters()}
    in_tower = [n for n in names if tower in n.split(".")]
    assert in_tower and all(names[n] for n in in_tower)  # the whole tower
    assert any(names[n] for n in names if projector & set(n.split(".")))  # the projector
    outside = [n for n in names if tower not in n.split(".") and not projector & set(n.split("."))]
    assert outside and not any(names[n] for n in outside)  # nothing of the language model


@pytest.mark.skipif(not NO_TORCHVISION, reason="with torchvision the processors are built whole")
@pytest.mark.parametrize("family", sorted(PROCESSOR_CLASS))
def test_without_torchvision_video_processors_are_left_out_and_the_rest_kept(
    checkpoints: dict[str, Path], family: str, tmp_path: Path
) -> None:
    loaded = load_vlm(str(checkpoints[family]), device="cpu")
    processor = loaded.processor
    assert "video_processor" not in type(processor).get_attributes()
    assert "{% for message in messages %}" in processor.chat_template  # the checkpoint's template
    if family == "smolvlm":
        assert processor.image_seq_len == 4  # from processor_config.json, not the class default 169
    if family == "internvl":
        assert processor.image_seq_length == 4  # likewise, not 256
    with pytest.raises(ModelLoadError, match="torchvision"):
        processor.video_processor([np.zeros((2, 32, 32, 3), np.uint8)])

    # What it saves (trainer sft --mode full does) names the real class and keeps its settings.
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    written = json.loads((saved / "processor_config.json").read_text())
    assert written["processor_class"] == PROCESSOR_CLASS[family]
    assert "video_processor" not in written
    if family == "smolvlm":
        assert written["image_seq_len"] == 4
    if family == "internvl":
        assert written["image_seq_length"] == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_a_ppo_update_trains_each_familys_lora_and_value_head(
    checkpoints: dict[str, Path], family: str
) -> None:
    loaded = load_vlm(str(checkpoints[family]), device="cpu")
    episodes = answered_episodes(
        loaded, 4, prompt="Answer in json.", max_new_tokens=8, action_start=lambda _: 0
    )
    config = TrainerConfig(
        lora=LoraConfig(r=4, alpha=8),
        ppo=PPOConfig(ppo_epochs=1, minibatch_size=2, micro_batch_size=2, lr=1e-2),
    )
    learner = Learner(config, load_vlm(str(checkpoints[family]), device="cpu"), Accelerator(cpu=True))
    before = [p.detach().clone() for p in learner.lora_parameters]
    value_before = [p.detach().clone() for p in learner.value_head.parameters()]

    metrics = learner.update(episodes)

    assert metrics["charts/optimizer_steps"] == 2
    assert all(np.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, learner.lora_parameters, strict=True))
    assert any(
        not torch.equal(b, p) for b, p in zip(value_before, learner.value_head.parameters(), strict=True)
    )


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Expert NumberLine demonstrations, written by `visact demos`' own code (a real server)."""
    out = tmp_path_factory.mktemp("demos") / "numberline.jsonl"
    write_demos(DemosConfig(env="numberline", episodes=3, out=out, sessions=3))
    return out


@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sft_warm_starts_each_family_and_its_result_loads(
    checkpoints: dict[str, Path], demos: Path, tmp_path: Path, family: str, mode: str
) -> None:
    config = SFTConfig(
        data=demos, model=str(checkpoints[family]), out=tmp_path / "sft", mode=mode, steps=2, batch_size=2,
        warmup_steps=0, vision_warmup_steps=2, eval_fraction=0.3, device="cpu", progress=False, lora_r=4,
        lora_alpha=8,
    )  # fmt: skip
    summary = train_sft(config)

    assert [point["step"] for point in summary["curve"]] == [2]
    assert np.isfinite(summary["curve"][0]["loss"])
    assert any(key.startswith("vision_warmup/") for key in summary)  # the vision warm-up ran on it
    if mode == "full":
        loaded = load_vlm(summary["output"], device="cpu")
    else:
        loaded = load_vlm(str(checkpoints[family]), device="cpu", adapter=summary["output"])
    assert loaded.traits.family == family
    answers = generate_batch(
        loaded, numberline_frames(1), ["Go"], 4, 1.0, generator=torch.Generator().manual_seed(0)
    )
    assert len(answers[0].generated_ids) >= 1


def test_sft_with_gradient_checkpointing_recomputes_layers_and_learns_the_same(
    checkpoints: dict[str, Path], demos: Path, tmp_path: Path, checkpoint_calls: list[int]
) -> None:
    losses = {}
    for checkpointing in (False, True):
        config = SFTConfig(
            data=demos, model=str(checkpoints["qwen2_vl"]), out=tmp_path / str(checkpointing), steps=3,
            batch_size=2, warmup_steps=0, vision_warmup_steps=2, eval_fraction=0.3, device="cpu", progress=False,
            gradient_checkpointing=checkpointing,
        )  # fmt: skip
        losses[checkpointing] = train_sft(config)["curve"][-1]["loss"]
        assert (checkpoint_calls[0] > 0) == checkpointing
    assert losses[True] == pytest.approx(losses[False], abs=2e-4)  # the curve rounds to 4 decimals


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_continues_a_prefilled_answer_with_the_learners_log_probs(
    checkpoints: dict[str, Path], family: str
) -> None:
    """``--prefill-answer`` through the family's own chat template: the prompt ends with the
    answer's opening (no end of turn after it), the sampled rest recomputes to the same log-probs;
    a family without a chat template (PaliGemma) refuses it, saying so."""
    from visact.model.generation import render_prompt
    from visact.model.prompts import build_messages

    loaded = load_vlm(str(checkpoints[family]), device="cpu")
    plain = build_messages("Go", ["-", "+"], cot=False)
    prefilled = build_messages("Go", ["-", "+"], cot=False, prefill=True)
    if not loaded.traits.chat_template or not getattr(loaded.processor, "chat_template", None):
        with pytest.raises(ValueError, match="no chat template"):
            render_prompt(loaded, prefilled)
        return
    text = render_prompt(loaded, prefilled)
    assert (
        text.endswith('{"action":')
        and text[: -len('{"action":')].rstrip() == render_prompt(loaded, plain).rstrip()
    )
    images = numberline_frames(2)
    samples = generate_batch(
        loaded, images, [prefilled, prefilled], 6, 0.7, generator=torch.Generator().manual_seed(3)
    )
    assert_recomputed_log_probs_match(loaded, images, samples)
