"""visact.model.loading / visact.model.tiny_vlm / visact.model.generation: the tiny VLM, the loader, sampling and log-probs.

Everything is built offline in temporary directories. Other families through the same
``load_vlm``: ``test_model_families.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from visact.model import tiny_vlm
from visact.model.generation import (
    Sample,
    _SampleAndRecord,
    generate_batch,
    sampling_log_probs,
    suppressed_token_ids,
    teacher_forced_log_probs,
    token_char_spans,
)
from visact.model.loading import (
    LoadedVLM,
    ModelLoadError,
    load_vlm,
    lora_target_modules,
    resolve_device,
    resolve_dtype,
    weights_fingerprint,
)

#: sha256 of the tiny tokenizer's vocabulary and merges. If you changed MERGE_CORPUS or the
#: layout on purpose, bump tiny_vlm.RECIPE_VERSION and update this value.
TOKENIZER_SHA256 = "0bdd28f79c15b338bc7bac92ba248bd8754e45027652d53c0e7b715d27475a5c"

ANSWER = '{"current number": "3", "target number": "5", "thoughts": "3 < 5, so add one.", "action": "+"}'


def numberline_image(target: int, current: int) -> Image.Image:
    image = Image.new("RGB", (300, 300), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=60)
    draw.text((24, 95), f"Target: {target}", font=font, fill="black", anchor="lm")
    draw.text((24, 205), f"Current: {current}", font=font, fill="black", anchor="lm")
    return image


@pytest.fixture(scope="module")
def tiny(cache_dir: Path) -> LoadedVLM:
    return load_vlm("tiny", dtype="float32", device="cpu")


def dir_digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def test_tokenizer_is_byte_identical_when_built_twice(tmp_path: Path) -> None:
    for name in ("a", "b"):
        tiny_vlm.build_tokenizer().save_pretrained(tmp_path / name)
    first, second = dir_digest(tmp_path / "a"), dir_digest(tmp_path / "b")
    assert "tokenizer.json" in first
    assert first == second


def test_tokenizer_vocabulary_and_merges_are_pinned() -> None:
    model = json.loads(tiny_vlm.build_tokenizer().backend_tokenizer.to_str())["model"]
    payload = json.dumps(
        {"vocab": sorted(model["vocab"].items(), key=lambda kv: kv[1]), "merges": model["merges"]}
    )
    assert hashlib.sha256(payload.encode()).hexdigest() == TOKENIZER_SHA256


def test_tokenizer_layout_specials_then_bytes() -> None:
    tokenizer = tiny_vlm.build_tokenizer()
    assert [tokenizer.convert_tokens_to_ids(t) for t in tiny_vlm.SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "left"
    assert tokenizer("A", add_special_tokens=False).input_ids == [len(tiny_vlm.SPECIAL_TOKENS) + ord("A")]


@pytest.mark.parametrize(
    "text",
    [
        "héllo wörld",
        "数字 3 と 5",
        "emoji 🙂🃏 ♠♥",
        "tab\tnew\nline\r\x00\x7f",
        ANSWER,
        " leading and trailing  ",
    ],
)
def test_tokenizer_round_trips_unicode(text: str) -> None:
    tokenizer = tiny_vlm.build_tokenizer()
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == text


def test_merges_shorten_answers_but_never_touch_digits() -> None:
    tokenizer = tiny_vlm.build_tokenizer()
    ids = tokenizer(ANSWER, add_special_tokens=False).input_ids
    assert len(ids) < len(ANSWER) / 2
    for digits in ("0123456789", " 10", '"24"'):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(digits, add_special_tokens=False).input_ids)
        assert all(len(t) == 1 for t in tokens if any(c.isdigit() for c in t)), tokens
    no_merges = tiny_vlm.build_tokenizer(num_merges=0)
    assert len(no_merges(ANSWER, add_special_tokens=False).input_ids) == len(ANSWER.encode())


def test_chat_template_puts_the_image_in_the_user_turn() -> None:
    tokenizer = tiny_vlm.build_tokenizer()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Go"}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\n<image>Go<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------------------------------------
# The tiny model: build, cache, load, fingerprint
# ---------------------------------------------------------------------------------------------


def test_tiny_builds_with_the_spec_and_seeded_weights(tmp_path: Path, tiny: LoadedVLM) -> None:
    spec = tiny_vlm.DEFAULT_SPEC
    config = tiny.model.config
    assert config.model_type == "llava"
    assert config.vision_config.image_size == spec.image_size
    assert config.text_config.vocab_size == len(tiny.tokenizer)
    # Building again elsewhere gives the very same weights.
    rebuilt = load_vlm(str(tiny_vlm.build_tiny_vlm(tmp_path / "again")), device="cpu")
    assert weights_fingerprint(rebuilt.model) == weights_fingerprint(tiny.model)


def test_ensure_tiny_vlm_builds_once_and_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: LoadedVLM
) -> None:
    first = tiny_vlm.ensure_tiny_vlm(cache_dir=tmp_path)
    assert first.parent == tmp_path and first.name.startswith("tiny-vlm-")
    assert sorted(p.name for p in first.iterdir()) == sorted([*tiny_vlm.BUILT_FILES, "visact-manifest.json"])

    def must_not_build(*args: Any, **kwargs: Any) -> Path:
        raise AssertionError("rebuilt although the cache holds the model")

    monkeypatch.setattr(tiny_vlm, "build_in_child", must_not_build)
    assert tiny_vlm.ensure_tiny_vlm(cache_dir=tmp_path) == first
    # no staging directory left behind; the lock file stays
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{first.name}.lock", first.name]
    # "tiny" resolves through $VISACT_CACHE (set by the module fixture) to the same kind of entry.
    assert Path(tiny.path).parent == Path(os.environ["VISACT_CACHE"])
    assert Path(tiny.path).name == first.name


def test_cache_root_is_visact_cache_else_xdg_cache_home_else_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISACT_CACHE", str(tmp_path / "v"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert tiny_vlm.cache_root() == tmp_path / "v"
    monkeypatch.delenv("VISACT_CACHE")
    assert tiny_vlm.cache_root() == tmp_path / "x" / "visact"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tiny_vlm.cache_root() == tmp_path / "home" / ".cache" / "visact"


def test_a_build_that_saved_no_weights_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What rank 1 of torchrun did: transformers' save_pretrained wrote nothing there."""
    from transformers import LlavaForConditionalGeneration

    monkeypatch.setattr(LlavaForConditionalGeneration, "save_pretrained", lambda self, out: None)
    with pytest.raises(
        RuntimeError, match=r"save_pretrained wrote no config\.json, generation_config\.json, model"
    ):
        tiny_vlm.build_tiny_vlm(tmp_path)


def test_fingerprint_changes_when_a_weight_changes(tiny: LoadedVLM) -> None:
    before = weights_fingerprint(tiny.model)
    assert len(before) == 64 and weights_fingerprint(tiny.model) == before
    weight = tiny.model.get_output_embeddings().weight
    with torch.no_grad():
        old = weight[5, 7].item()
        weight[5, 7] += 1e-3
        try:
            assert weights_fingerprint(tiny.model) != before
        finally:
            weight[5, 7] = old
    assert weights_fingerprint(tiny.model) == before
    assert weights_fingerprint(tiny.model, as_dtype=torch.bfloat16) != before


def test_dtype_and_device_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("float32") == torch.float32
    assert resolve_dtype(torch.float16) == torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == cpu
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        resolve_device("cuda")


def test_load_in_bfloat16(cache_dir: Path) -> None:
    loaded = load_vlm("tiny", dtype="bfloat16", device="cpu")
    assert loaded.dtype == torch.bfloat16
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    [sample] = generate_batch(loaded, [numberline_image(1, 2)], ["Go"], max_new_tokens=16, temperature=0.2)
    assert len(sample.generated_ids) == len(sample.log_probs) >= 1
    assert all(lp <= 0.0 for lp in sample.log_probs)  # the trainer refuses > 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_recorded_log_probs_are_never_above_zero_whatever_the_logits(
    tiny: LoadedVLM, dtype: torch.dtype
) -> None:
    """The trainer refuses log-probs above 0 beyond float rounding (1e-6); what the sampler records
    never exceeds 0, for logits of any scale, peaked or flat, in fp32 or bf16."""
    generator = torch.Generator().manual_seed(0)
    for temperature, top_p in [(1.0, 1.0), (0.2, 1.0), (0.7, 0.9), (0.0, 1.0)]:
        recorder = _SampleAndRecord(temperature, top_p, True, tiny, generator)
        for scale in (0.01, 1.0, 30.0, 1e4):
            logits = torch.randn(64, 512, generator=generator) * scale
            logits[:32, 7] += 20 * scale  # half the rows near-certain of one token
            recorder(torch.zeros(64, 1, dtype=torch.long), logits.to(dtype))
        recorded = torch.cat(recorder.log_probs)
        assert bool(torch.isfinite(recorded).all()) and float(recorded.max()) <= 0.0


def test_attention_implementations_give_the_same_log_probs(tiny: LoadedVLM) -> None:
    eager = load_vlm("tiny", dtype="float32", device="cpu", attn_implementation="eager")
    images = images_for(3)
    samples = generate_batch(tiny, images, PROMPTS[:3], 10, 1.0, generator=torch.Generator().manual_seed(3))
    assert_log_probs_match(eager, images, samples, 1.0)  # sampled with sdpa, recomputed with eager


def test_an_unusable_attention_implementation_is_refused_with_the_fix(cache_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="Leave it unset"):
        load_vlm("tiny", device="cpu", attn_implementation="no_such_kernel")


def test_load_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="save_pretrained"):
        load_vlm(str(tmp_path / "missing"), device="cpu")


# ---------------------------------------------------------------------------------------------
# Generation and log-probs
# ---------------------------------------------------------------------------------------------

PROMPTS = ["Read the numbers.", "What is the target number? Answer in json.", "Go", "数字?"]


def images_for(count: int) -> list[Image.Image]:
    return [numberline_image(i % 6, (i + 2) % 6) for i in range(count)]


def assert_log_probs_match(
    loaded: LoadedVLM, images: list[Any], samples: list[Sample], temperature: float
) -> None:
    with torch.no_grad():
        forced = teacher_forced_log_probs(
            loaded, images, [s.prompt_ids for s in samples], [s.generated_ids for s in samples], temperature
        )
    for row, sample in enumerate(samples):
        n = len(sample.generated_ids)
        assert int(forced.mask[row].sum()) == n
        recomputed = forced.log_probs[row, :n]
        torch.testing.assert_close(recomputed, torch.tensor(sample.log_probs), atol=1e-4, rtol=0)


def test_generate_batch_returns_tokens_log_probs_and_text(tiny: LoadedVLM) -> None:
    images = images_for(4)
    samples = generate_batch(
        tiny, images, PROMPTS, max_new_tokens=24, temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    image_id = tiny.processor.image_token_id
    for sample, prompt in zip(samples, PROMPTS, strict=True):
        assert sample.prompt_ids.count(image_id) == tiny_vlm.DEFAULT_SPEC.image_tokens
        assert tiny.tokenizer.pad_token_id not in sample.prompt_ids  # left padding removed
        assert prompt in tiny.tokenizer.decode(sample.prompt_ids)
        assert 1 <= len(sample.generated_ids) == len(sample.log_probs) == len(sample.token_spans) <= 24
        assert all(lp <= 0.0 for lp in sample.log_probs)
        assert sample.finished == (sample.generated_ids[-1] in tiny.stop_ids)
        assert not sample.finished or len(sample.generated_ids) == 24 or sample.generated_ids.count(2) == 1
        assert sample.text == tiny.tokenizer.decode(sample.generated_ids, skip_special_tokens=True)
    again = generate_batch(
        tiny, images, PROMPTS, max_new_tokens=24, temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    assert [s.generated_ids for s in again] == [s.generated_ids for s in samples]


@pytest.mark.parametrize("temperature", [1.0, 0.2])
def test_teacher_forced_log_probs_match_sampling(tiny: LoadedVLM, temperature: float) -> None:
    images = images_for(4)
    samples = generate_batch(
        tiny, images, PROMPTS, 40, temperature, generator=torch.Generator().manual_seed(int(temperature * 10))
    )
    assert len({len(s.generated_ids) for s in samples} | {len(s.prompt_ids) for s in samples}) > 1  # ragged
    assert_log_probs_match(tiny, images, samples, temperature)


def test_teacher_forced_log_probs_detect_a_different_temperature(tiny: LoadedVLM) -> None:
    images = images_for(2)
    samples = generate_batch(tiny, images, PROMPTS[:2], 12, 1.0, generator=torch.Generator().manual_seed(3))
    with pytest.raises(AssertionError):
        assert_log_probs_match(tiny, images, samples, 0.5)


def test_teacher_forced_returns_grad_and_last_prompt_hidden(tiny: LoadedVLM) -> None:
    images = images_for(2)
    samples = generate_batch(tiny, images, PROMPTS[:2], 8, 1.0, generator=torch.Generator().manual_seed(4))
    forced = teacher_forced_log_probs(
        tiny,
        images,
        [s.prompt_ids for s in samples],
        [s.generated_ids for s in samples],
        1.0,
        return_hidden=True,
    )
    assert forced.log_probs.requires_grad
    assert forced.last_prompt_hidden is not None
    assert forced.last_prompt_hidden.shape == (2, tiny.model.config.text_config.hidden_size)
    tiny.model.zero_grad()
    forced.log_probs.sum().backward()
    vision_grad = next(p.grad for n, p in tiny.model.named_parameters() if "vision_tower" in n)
    assert vision_grad is not None and vision_grad.abs().sum() > 0
    tiny.model.zero_grad(set_to_none=True)


def test_greedy_decoding_is_deterministic(tiny: LoadedVLM) -> None:
    images = images_for(2)
    first = generate_batch(tiny, images, PROMPTS[:2], 10, temperature=0.0)
    second = generate_batch(tiny, images, PROMPTS[:2], 10, temperature=0.0)
    assert [s.generated_ids for s in first] == [s.generated_ids for s in second]
    assert_log_probs_match(tiny, images, first, 0.0)


def test_sampling_runs_in_eval_mode_and_restores_the_mode(tiny: LoadedVLM) -> None:
    seen: list[bool] = []
    handle = tiny.model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: seen.append(module.training)
    )
    tiny.model.train()
    try:
        generate_batch(tiny, images_for(1), PROMPTS[:1], 3, 1.0)
        assert tiny.model.training and seen and not any(seen)
    finally:
        handle.remove()
        tiny.model.eval()


def test_special_tokens_are_suppressed_and_log_probs_still_match(tiny: LoadedVLM) -> None:
    image_id = int(tiny.processor.image_token_id)
    head = tiny.model.get_output_embeddings()

    def love_the_image_token(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        boosted = output.clone()
        boosted[..., image_id] += 50.0
        return boosted

    handle = head.register_forward_hook(love_the_image_token)
    try:
        images = images_for(2)
        raw = generate_batch(tiny, images, PROMPTS[:2], 6, 1.0, suppress_special_tokens=False)
        assert all(set(s.generated_ids) == {image_id} for s in raw)
        masked = generate_batch(
            tiny, images, PROMPTS[:2], 16, 1.0, generator=torch.Generator().manual_seed(5)
        )
        banned = set(suppressed_token_ids(tiny, len(tiny.tokenizer)).tolist())
        assert image_id in banned and not banned & set(tiny.stop_ids)
        assert all(not banned & set(s.generated_ids) for s in masked)
        assert_log_probs_match(tiny, images, masked, 1.0)  # the learner sees the masked distribution too
    finally:
        handle.remove()


def test_sampling_log_probs_masks_then_tempers_then_nucleus() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, 5.0]])
    out = sampling_log_probs(logits, temperature=0.5, suppressed=torch.tensor([3]))
    expected = torch.log_softmax(torch.tensor([[4.0, 2.0, 0.0, float("-inf")]]), dim=-1)
    torch.testing.assert_close(out, expected)
    # probs at T=1 without token 3: 0.665, 0.245, 0.090 -> top_p 0.7 keeps the first two.
    nucleus = sampling_log_probs(logits, temperature=1.0, top_p=0.7, suppressed=torch.tensor([3]))
    torch.testing.assert_close(nucleus[0, :2], torch.log_softmax(torch.tensor([2.0, 1.0]), dim=-1))
    assert torch.isinf(nucleus[0, 2:]).all()


def test_token_spans_map_characters_to_tokens(tiny: LoadedVLM) -> None:
    tokenizer = tiny.tokenizer
    text = 'ok 🙂 "action": "+"'
    ids = [*tokenizer(text, add_special_tokens=False).input_ids, tiny.stop_ids[0]]
    decoded, spans = token_char_spans(tokenizer, ids)
    assert decoded == text
    assert spans[-1] == (len(text), len(text))  # the stop token adds no text
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    emoji = text.index("🙂")
    emoji_tokens = [i for i, token in enumerate(ids) if token in range(4 + 0xF0, 4 + 0x100)]
    assert emoji_tokens, "the emoji's first byte is a token of its own"
    sample = Sample([], ids, [0.0] * len(ids), decoded, spans, finished=True)
    holder = sample.token_at(emoji)
    assert spans[holder] == (emoji, emoji + 1) and all(
        spans[i][0] == spans[i][1] for i in range(holder - 3, holder)
    )
    action = sample.token_at(text.index('"action"'))
    assert '"' in tokenizer.decode(ids[action : action + 1])
    assert tokenizer.decode(ids[action + 1 : action + 2]) == "action"
    with pytest.raises(IndexError):
        sample.token_at(len(text))


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def test_lora_targets_include_or_exclude_the_vision_tower(tiny: LoadedVLM) -> None:
    every = lora_target_modules(tiny.model)
    text_only = lora_target_modules(tiny.model, include_vision=False)
    assert any("vision_tower" in n for n in every) and not any("vision_tower" in n for n in text_only)
    assert any("multi_modal_projector" in n for n in text_only)
    assert not any(n.endswith("lm_head") for n in every)
    assert set(text_only) < set(every)


def test_lora_adapter_loads_on_top_and_keeps_the_base_fingerprint(tiny: LoadedVLM, tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    base = load_vlm(tiny.path, device="cpu")
    peft_model = get_peft_model(
        base.model, LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_modules(base.model))
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(str(tmp_path / "adapter"))

    adapted = load_vlm("tiny", device="cpu", adapter=tmp_path / "adapter")
    assert isinstance(adapted.model, PeftModel) and adapted.adapter == str(tmp_path / "adapter")
    assert weights_fingerprint(adapted.model) == weights_fingerprint(tiny.model)
    images = images_for(2)
    samples = generate_batch(
        adapted, images, PROMPTS[:2], 12, 1.0, generator=torch.Generator().manual_seed(6)
    )
    assert_log_probs_match(adapted, images, samples, 1.0)
    with torch.no_grad():
        ids = [s.prompt_ids for s in samples]
        gen = [s.generated_ids for s in samples]
        delta = teacher_forced_log_probs(adapted, images, ids, gen, 1.0).log_probs - (
            teacher_forced_log_probs(tiny, images, ids, gen, 1.0).log_probs
        )
    assert delta.abs().max() > 1e-3  # the adapter changes the policy
