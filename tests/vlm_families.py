"""Tiny random checkpoints of other VLM families, written the way their hub checkpoints are.

Each builder saves a model, its image processor and a tokenizer (the tiny model's byte-level
BPE with the family's special tokens) into ``out`` and returns it, for ``load_vlm(out)``. Sizes
are the smallest that run: 32-wide layers, one of each, 32x32 images, 4 image tokens a frame.

Qwen-VL, SmolVLM and InternVL checkpoints are saved part by part rather than through their
processor: those processors also take videos, and without torchvision they cannot be built
(``visact.model.loading`` builds them without the video part at load time; a hub checkpoint has the
same files).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from visact.model import tiny_vlm

#: every vision tower and language model here: one small layer
LAYER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}

IDEFICS_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA3_TEMPLATE = (  # Gemma's turns are "user" and "model": the assistant's is written "model"
    "{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<start_of_image>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def vision_sizes(**overrides: Any) -> dict[str, Any]:
    """A vision tower's sizes: 32x32 images in patches of 8."""
    return {**LAYER, "image_size": 32, "patch_size": 8, **overrides}


def text_sizes(tokenizer: Any, **overrides: Any) -> dict[str, Any]:
    """A language model's sizes, over the tokenizer's vocabulary (pad 0, end of turn 2)."""
    return {**LAYER, "vocab_size": len(tokenizer), "num_key_value_heads": 2, "pad_token_id": 0, "eos_token_id": 2,
            **overrides}  # fmt: skip


def save_model(model_class: Any, config: Any, out: Path, adjust: Callable[[Any], None] | None = None) -> None:
    """Seeded random weights, saved as a checkpoint (``adjust`` may change them first)."""
    torch.manual_seed(0)
    model = model_class(config)
    if adjust is not None:
        with torch.no_grad():
            adjust(model)
    model.save_pretrained(out)


def save_processor_parts(out: Path, image_processor: Any, tokenizer: Any, settings: dict[str, Any]) -> None:
    """A processor that also takes videos, saved as its hub checkpoints are: the image processor,
    the tokenizer with the chat template, and the processor's own settings."""
    image_processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps(settings) + "\n")


def build_tiny_idefics3(out: Path) -> Path:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig
    from transformers.models.idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    extra = ("<fake_token_around_image>", "<end_of_utterance>", "<global-img>")
    tokenizer = tiny_vlm.build_tokenizer(32, extra_special_tokens=extra, chat_template=IDEFICS_TEMPLATE)
    vision = Idefics3VisionConfig(**vision_sizes())
    text = LlamaConfig(**text_sizes(tokenizer))
    config = Idefics3Config(vision_config=vision, text_config=text, image_token_id=3, scale_factor=2)
    config.pad_token_id = 0
    save_model(Idefics3ForConditionalGeneration, config, out)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4, chat_template=IDEFICS_TEMPLATE
    ).save_pretrained(out)
    return out


def build_tiny_smolvlm(out: Path) -> Path:
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm import SmolVLMVisionConfig
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    extra = ("<fake_token_around_image>", "<end_of_utterance>", "<global-img>")
    template = "<|im_start|>" + IDEFICS_TEMPLATE
    tokenizer = tiny_vlm.build_tokenizer(32, extra_special_tokens=extra, chat_template=template)
    vision = SmolVLMVisionConfig(**vision_sizes())
    text = LlamaConfig(**text_sizes(tokenizer))
    config = SmolVLMConfig(vision_config=vision, text_config=text, image_token_id=3, scale_factor=2)
    config.pad_token_id = 0
    save_model(SmolVLMForConditionalGeneration, config, out)
    image_processor = SmolVLMImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    # image_seq_len: 4 tokens per image, not the class default 169
    save_processor_parts(
        out, image_processor, tokenizer, {"image_seq_len": 4, "processor_class": "SmolVLMProcessor"}
    )
    return out


def build_tiny_paligemma(out: Path) -> Path:
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = tiny_vlm.build_tokenizer(32)
    tokenizer.bos_token = "<|im_start|>"
    image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16  # type: ignore[attr-defined]
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # adds <loc>/<seg>
    vision = SiglipVisionConfig(**vision_sizes())
    text = GemmaConfig(**text_sizes(tokenizer, num_key_value_heads=1, head_dim=16, bos_token_id=1))
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=3, projection_dim=32)
    save_model(PaliGemmaForConditionalGeneration, config, out)
    processor.save_pretrained(out)
    return out


def _build_tiny_qwen_vl(out: Path, family: str) -> Path:
    """Qwen2-VL, Qwen2.5-VL, Qwen3-VL: 32x32 pixels, 4x4 patches of 8 merged 2x2 into 4 image tokens,
    multimodal RoPE."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    extra = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    tokenizer = tiny_vlm.build_tokenizer(
        32,
        extra_special_tokens=extra,
        chat_template=QWEN_TEMPLATE,
        named_tokens={"image_token": "<|image_pad|>"},
    )  # the image token Qwen's processor expands
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in extra}
    mrope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    vision: dict[str, Any] = {
        "depth": 1, "hidden_size": 32, "num_heads": 2, "patch_size": 8, "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }  # fmt: skip
    text = text_sizes(tokenizer, bos_token_id=None, rope_parameters=mrope)
    if family == "qwen2_vl":
        vision.update(embed_dim=32)
    elif family == "qwen2_5_vl":
        vision.update(intermediate_size=64, out_hidden_size=32, fullatt_block_indexes=[0], window_size=16)
    else:  # Qwen3-VL: deepstack features from a second vision layer, interleaved multimodal RoPE
        vision.update(
            depth=2, intermediate_size=64, out_hidden_size=32, num_position_embeddings=16,
            deepstack_visual_indexes=[0],
        )  # fmt: skip
        text.update(num_hidden_layers=2, head_dim=16, rope_parameters={**mrope, "mrope_interleaved": True})
    config_class, model_class = {
        "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
        "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
        "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration),
    }[family]
    config = config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    config.text_config.eos_token_id = 2
    save_model(model_class, config, out)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=32 * 32, max_pixels=32 * 32, patch_size=8, merge_size=2, temporal_patch_size=2
    )
    save_processor_parts(
        out,
        image_processor,
        tokenizer,
        {"processor_class": config_class.__name__.replace("Config", "Processor")},
    )
    return out


def build_tiny_qwen2_vl(out: Path) -> Path:
    return _build_tiny_qwen_vl(out, "qwen2_vl")


def build_tiny_qwen2_5_vl(out: Path) -> Path:
    return _build_tiny_qwen_vl(out, "qwen2_5_vl")


def build_tiny_qwen3_vl(out: Path) -> Path:
    return _build_tiny_qwen_vl(out, "qwen3_vl")


def build_tiny_llava_next(out: Path) -> Path:
    """LLaVA-NeXT: "anyres" (the frame tiled into crops plus a base image, newline tokens)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tokenizer = tiny_vlm.build_tokenizer(32)
    vision = CLIPVisionConfig(**vision_sizes(patch_size=16, projection_dim=32))
    text = LlamaConfig(**text_sizes(tokenizer, bos_token_id=None))
    pinpoints = [[32, 32], [32, 64]]
    config = LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=3, image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )  # fmt: skip
    save_model(LlavaNextForConditionalGeneration, config, out)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
    )
    LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=16, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=tiny_vlm.CHAT_TEMPLATE,
    ).save_pretrained(out)  # fmt: skip
    return out


def build_tiny_llava_onevision(out: Path) -> Path:
    """LLaVA-OneVision: a SigLIP tower, "anyres" crops pooled to at most 9, a Qwen2 language model."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    tokenizer = tiny_vlm.build_tokenizer(
        32, extra_special_tokens=("<video>",), named_tokens={"video_token": "<video>"}
    )
    vision = SiglipVisionConfig(**vision_sizes(patch_size=16))
    text = Qwen2Config(**text_sizes(tokenizer, bos_token_id=None))
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=3,
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="full",
    )  # fmt: skip
    save_model(LlavaOnevisionForConditionalGeneration, config, out)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
    )
    settings = {
        "num_image_tokens": 4,
        "vision_feature_select_strategy": "full",
        "processor_class": "LlavaOnevisionProcessor",
    }
    save_processor_parts(out, image_processor, tokenizer, settings)
    return out


def build_tiny_gemma3(out: Path) -> Path:
    """Gemma 3: image tokens attend to each other both ways (``token_type_ids`` marks them)."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    extra = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    names = {
        "image_token": "<image_soft_token>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
    }
    tokenizer = tiny_vlm.build_tokenizer(
        32, extra_special_tokens=extra, chat_template=GEMMA3_TEMPLATE, named_tokens=names
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in extra}
    vision = SiglipVisionConfig(**vision_sizes())
    text = Gemma3TextConfig(
        **text_sizes(
            tokenizer, num_hidden_layers=2, num_key_value_heads=1, head_dim=16, eos_token_id=ids["<end_of_turn>"],
            bos_token_id=None, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
        )
    )  # fmt: skip
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
    )  # fmt: skip

    def project_the_image(model: Any) -> None:  # initialized to zeros, which would hide the image
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.5)

    save_model(Gemma3ForConditionalGeneration, config, out, adjust=project_the_image)
    image_processor = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_TEMPLATE,
        image_seq_length=4,
    ).save_pretrained(out)
    return out


def build_tiny_internvl(out: Path) -> Path:
    """InternVL (2.5/3): each frame tiled into crops, pixel-shuffled features between <img> and </img>."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen2Config
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    template = tiny_vlm.CHAT_TEMPLATE.replace("<image>", "<IMG_CONTEXT>")
    extra = ("<img>", "</img>", "<IMG_CONTEXT>", "<video>")
    names = {
        "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }  # fmt: skip
    tokenizer = tiny_vlm.build_tokenizer(
        32, extra_special_tokens=extra, chat_template=template, named_tokens=names
    )
    vision = InternVLVisionConfig(**vision_sizes())
    text = Qwen2Config(**text_sizes(tokenizer, bos_token_id=None))
    context = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    config = InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=context, image_seq_length=4
    )
    save_model(InternVLForConditionalGeneration, config, out)
    # crop_to_patches=False here, but the processor tiles anyway (its own default): the recompute must follow it
    image_processor = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=False)
    # image_seq_length: 4 tokens per crop, not the class default 256
    save_processor_parts(
        out, image_processor, tokenizer, {"image_seq_length": 4, "processor_class": "InternVLProcessor"}
    )
    return out


#: family (``config.model_type``) -> (builder, the vision tower's module name)
FAMILY_BUILDERS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "idefics3": (build_tiny_idefics3, "vision_model"),
    "smolvlm": (build_tiny_smolvlm, "vision_model"),
    "paligemma": (build_tiny_paligemma, "vision_tower"),
    "qwen2_vl": (build_tiny_qwen2_vl, "visual"),
    "qwen2_5_vl": (build_tiny_qwen2_5_vl, "visual"),
    "qwen3_vl": (build_tiny_qwen3_vl, "visual"),
    "llava_next": (build_tiny_llava_next, "vision_tower"),
    "llava_onevision": (build_tiny_llava_onevision, "vision_tower"),
    "gemma3": (build_tiny_gemma3, "vision_tower"),
    "internvl": (build_tiny_internvl, "vision_tower"),
}
