"""Tiny random checkpoints of other VLM families, written the way their hub checkpoints are.

Each builder saves a model, its image processor and a tokenizer (the tiny model's byte-level
BPE with the family's special tokens) into ``out`` and returns it, for ``load_vlm(out)``. Sizes
are the smallest that run: 32-wide layers, one of each, 32x32 images, 4 image tokens a frame.

Qwen-VL, SmolVLM and InternVL checkpoints are saved part by part rather than through their
processor: those processors also take videos, and without torchvision they cannot be built
(``agent.models`` builds them without the video part at load time; a hub checkpoint has the
same files).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from agent import tiny_vlm


def build_tiny_idefics3(out: Path) -> Path:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig
    from transformers.models.idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    template = (
        "{% for message in messages %}{{ message['role'] | capitalize }}:"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
        "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    )
    extra = ("<fake_token_around_image>", "<end_of_utterance>", "<global-img>")
    tokenizer = tiny_vlm.build_tokenizer(32, extra_special_tokens=extra, chat_template=template)
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=2,
    )  # fmt: skip
    config = Idefics3Config(vision_config=vision, text_config=text, image_token_id=3, scale_factor=2)
    config.pad_token_id = 0
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).save_pretrained(out)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4, chat_template=template
    ).save_pretrained(out)
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
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8,
    )  # fmt: skip
    text = GemmaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0, eos_token_id=2, bos_token_id=1,
    )  # fmt: skip
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=3, projection_dim=32)
    torch.manual_seed(0)
    PaliGemmaForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _build_tiny_qwen_vl(out: Path, family: str) -> Path:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
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
    vision: dict[str, object] = dict(
        depth=1, hidden_size=32, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2
    )
    if family == "qwen2_vl":
        vision.update(embed_dim=32)
    else:
        vision.update(intermediate_size=64, out_hidden_size=32, fullatt_block_indexes=[0], window_size=16)
    text = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=2, bos_token_id=None,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )  # fmt: skip
    config_class, model_class = {
        "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
        "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
    }[family]
    config = config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(out)
    # 32x32 pixels: 4x4 patches of 8, merged 2x2 into 4 image tokens
    Qwen2VLImageProcessorPil(
        min_pixels=32 * 32, max_pixels=32 * 32, patch_size=8, merge_size=2, temporal_patch_size=2
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)  # with the chat template, as chat_template.jinja
    return out


def build_tiny_qwen2_vl(out: Path) -> Path:
    return _build_tiny_qwen_vl(out, "qwen2_vl")


def build_tiny_qwen2_5_vl(out: Path) -> Path:
    return _build_tiny_qwen_vl(out, "qwen2_5_vl")


def build_tiny_smolvlm(out: Path) -> Path:
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm import SmolVLMVisionConfig
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    template = (
        "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
        "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    )
    extra = ("<fake_token_around_image>", "<end_of_utterance>", "<global-img>")
    tokenizer = tiny_vlm.build_tokenizer(32, extra_special_tokens=extra, chat_template=template)
    vision = SmolVLMVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=2,
    )  # fmt: skip
    config = SmolVLMConfig(vision_config=vision, text_config=text, image_token_id=3, scale_factor=2)
    config.pad_token_id = 0
    torch.manual_seed(0)
    SmolVLMForConditionalGeneration(config).save_pretrained(out)
    SmolVLMImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)
    # the processor's own setting (a hub checkpoint keeps it here too): 4 tokens per image, not 169
    (out / "processor_config.json").write_text(
        '{"image_seq_len": 4, "processor_class": "SmolVLMProcessor"}\n'
    )
    return out


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
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=16, projection_dim=32,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=2, bos_token_id=None,
    )  # fmt: skip
    config = LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=3, image_grid_pinpoints=[[32, 32], [32, 64]],
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )  # fmt: skip
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(config).save_pretrained(out)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=[[32, 32], [32, 64]],
    )
    LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=16, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=tiny_vlm.CHAT_TEMPLATE,
    ).save_pretrained(out)  # fmt: skip
    return out


def build_tiny_qwen3_vl(out: Path) -> Path:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    extra = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    tokenizer = tiny_vlm.build_tokenizer(
        32,
        extra_special_tokens=extra,
        chat_template=QWEN_TEMPLATE,
        named_tokens={"image_token": "<|image_pad|>"},
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in extra}
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8, spatial_merge_size=2,
        temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=16, deepstack_visual_indexes=[0],
    )  # fmt: skip
    text = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=16, pad_token_id=0,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True,
                         "rope_theta": 10000.0},
    )  # fmt: skip
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    config.text_config.eos_token_id = 2
    torch.manual_seed(0)
    Qwen3VLForConditionalGeneration(config).save_pretrained(out)
    Qwen2VLImageProcessorPil(
        min_pixels=32 * 32, max_pixels=32 * 32, patch_size=8, merge_size=2, temporal_patch_size=2
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)
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

    template = (
        "{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}<start_of_image>"
        "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    extra = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    names = {
        "image_token": "<image_soft_token>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
    }
    tokenizer = tiny_vlm.build_tokenizer(
        32, extra_special_tokens=extra, chat_template=template, named_tokens=names
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in extra}
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8,
    )  # fmt: skip
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0, eos_token_id=ids["<end_of_turn>"],
        bos_token_id=None, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # initialized to zeros, which would hide the image from the model
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.5)
    model.save_pretrained(out)
    image_processor = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=template, image_seq_length=4
    ).save_pretrained(out)
    return out


def build_tiny_internvl(out: Path) -> Path:
    """InternVL (2.5/3): pixel-shuffled vision features between <img> and </img>."""
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
    vision = InternVLVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8,
    )  # fmt: skip
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=2, bos_token_id=None,
    )  # fmt: skip
    config = InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4,
    )  # fmt: skip
    torch.manual_seed(0)
    InternVLForConditionalGeneration(config).save_pretrained(out)
    image_processor = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=False)
    image_processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "processor_config.json").write_text(
        '{"image_seq_length": 4, "processor_class": "InternVLProcessor"}\n'
    )
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
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=16,
    )  # fmt: skip
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, eos_token_id=2, bos_token_id=None,
    )  # fmt: skip
    pinpoints = [[32, 32], [32, 64], [64, 32]]
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=3,
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="full",
    )  # fmt: skip
    torch.manual_seed(0)
    LlavaOnevisionForConditionalGeneration(config).save_pretrained(out)
    LlavaOnevisionImageProcessorPil(
        size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "processor_config.json").write_text(
        '{"num_image_tokens": 4, "vision_feature_select_strategy": "full", "processor_class": "LlavaOnevisionProcessor"}\n'
    )
    return out


#: family (``config.model_type``) -> (builder, the vision tower's module name)
FAMILY_BUILDERS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "idefics3": (build_tiny_idefics3, "vision_model"),
    "paligemma": (build_tiny_paligemma, "vision_tower"),
    "smolvlm": (build_tiny_smolvlm, "vision_model"),
    "qwen2_vl": (build_tiny_qwen2_vl, "visual"),
    "qwen2_5_vl": (build_tiny_qwen2_5_vl, "visual"),
    "qwen3_vl": (build_tiny_qwen3_vl, "visual"),
    "llava_next": (build_tiny_llava_next, "vision_tower"),
    "gemma3": (build_tiny_gemma3, "vision_tower"),
    "internvl": (build_tiny_internvl, "vision_tower"),
    "llava_onevision": (build_tiny_llava_onevision, "vision_tower"),
}
