"""The opt-in variants of the tiny VLM, loaded by name: ``tiny-alfworld`` for ALFWorld and
``tiny-128``, the card games' model at twice the image resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visact.model.loading import ModelLoadError, load_vlm
from visact.model.tiny_vlm import ALFWORLD_SPEC, DEFAULT_SPEC, HIGHER_RESOLUTION_SPEC

COMMAND = "take soapbar 1 from countertop 1"


@pytest.mark.slow
def test_tiny_alfworld_loads_by_name_with_larger_images_and_alfworld_merges(cache_dir: Path) -> None:
    alfworld = load_vlm("tiny-alfworld", dtype="float32", device="cpu")
    tiny = load_vlm("tiny", dtype="float32", device="cpu")
    assert alfworld.path != tiny.path and Path(alfworld.path).parent == cache_dir  # its own cache entry
    assert alfworld.model.config.vision_config.image_size == ALFWORLD_SPEC.image_size == 128
    assert tiny.model.config.vision_config.image_size == DEFAULT_SPEC.image_size
    # ALFWorld's commands are a few tokens, where the card games' merges spell them out
    short = len(alfworld.processor.tokenizer(COMMAND).input_ids)
    long = len(tiny.processor.tokenizer(COMMAND).input_ids)
    assert short <= 10 < long, (short, long)


@pytest.mark.slow
def test_tiny_128_is_tiny_with_four_times_the_image_tokens(cache_dir: Path) -> None:
    sharp = load_vlm("tiny-128", dtype="float32", device="cpu")
    tiny = load_vlm("tiny", dtype="float32", device="cpu")
    assert sharp.path != tiny.path and Path(sharp.path).parent == cache_dir
    assert sharp.model.config.vision_config.image_size == HIGHER_RESOLUTION_SPEC.image_size == 128
    assert HIGHER_RESOLUTION_SPEC.image_tokens == 4 * DEFAULT_SPEC.image_tokens
    assert sharp.processor.tokenizer(COMMAND).input_ids == tiny.processor.tokenizer(COMMAND).input_ids
    image_token = sharp.processor.tokenizer.convert_tokens_to_ids("<image>")
    ids = sharp.processor(images=[np.zeros((300, 300, 3), np.uint8)], text=["<image>hi"]).input_ids[0]
    assert list(ids).count(image_token) == 64


def test_an_unknown_tiny_variant_is_refused_with_the_known_names(cache_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="tiny-alfworld"):
        load_vlm("tiny-nonesuch", dtype="float32", device="cpu")
