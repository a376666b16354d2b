"""``--model tiny-alfworld``: the opt-in variant of the tiny VLM for ALFWorld, loaded by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from visact.model.loading import ModelLoadError, load_vlm
from visact.model.tiny_vlm import ALFWORLD_SPEC, DEFAULT_SPEC

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


def test_an_unknown_tiny_variant_is_refused_with_the_known_names(cache_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="tiny-alfworld"):
        load_vlm("tiny-nonesuch", dtype="float32", device="cpu")
