"""A checkpoint directory as vLLM loads it: the same files, the vision tower's weights renamed.

transformers 5 saves a LLaVA's CLIP/SigLIP tower without its ``vision_model.`` level
(``vision_tower.embeddings...``, ``model.vision_tower.encoder...``), while vLLM's LLaVA builds the
tower as ``CLIPVisionModel`` and loads only ``vision_tower.vision_model.*`` names. Hub checkpoints
saved by older transformers have that level and are used as they are; a checkpoint without it
(the tiny model, anything saved by ``trainer sft`` here) is copied once into the cache with the
level put back, every other file copied as it is. Nothing else changes: the tensors are the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

#: model types whose vision tower vLLM loads under ``vision_tower.vision_model.``
NESTED_TOWER_FAMILIES = ("llava", "llava_next", "llava_onevision")
#: a tower weight saved without its ``vision_model.`` level
_FLAT_TOWER = re.compile(r"^((?:model\.)?vision_tower\.)(?!vision_model\.)")


def renamed(name: str) -> str:
    """``name`` as vLLM's nested tower loads it (unchanged when it is not a flat tower weight)."""
    return _FLAT_TOWER.sub(r"\1vision_model.", name)


def _weight_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def needs_export(path: Path) -> bool:
    """Whether the checkpoint at ``path`` (a local directory) holds flat tower weights vLLM misses."""
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") not in NESTED_TOWER_FAMILIES:
        return False
    for file in _weight_files(path):
        with safe_open(str(file), "pt") as weights:
            names = list(weights.keys())
            if any(renamed(name) != name for name in names):
                return True
    return False


def _source_id(path: Path) -> str:
    digest = hashlib.sha256(str(path.resolve()).encode())
    for file in sorted(path.iterdir()):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def vllm_checkpoint(name_or_path: str, cache: Path) -> str:
    """What to give vLLM as ``model=``: ``name_or_path`` itself (a hub id, or a directory vLLM loads
    as it is), or its export under ``cache`` (made once, atomically; see the module docstring)."""
    path = Path(name_or_path)
    if not (path / "config.json").is_file() or not needs_export(path):
        return name_or_path
    final = cache / f"{path.name}-{_source_id(path)}"
    if (final / "config.json").is_file():
        return str(final)
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
    try:
        for file in path.iterdir():
            if file.suffix == ".safetensors" or file.name == "model.safetensors.index.json":
                continue
            if file.is_file():
                shutil.copy2(file, staging / file.name)
        for file in _weight_files(path):
            with safe_open(str(file), "pt") as weights:
                metadata = weights.metadata()
                names = list(weights.keys())
                tensors = {renamed(name): weights.get_tensor(name) for name in names}
            save_file(tensors, str(staging / file.name), metadata=metadata)
        index = path / "model.safetensors.index.json"
        if index.is_file():
            content = json.loads(index.read_text())
            content["weight_map"] = {renamed(k): v for k, v in content.get("weight_map", {}).items()}
            (staging / index.name).write_text(json.dumps(content, indent=2))
        staging.chmod(0o755)
        try:
            os.rename(staging, final)  # config.json last in place: the export is complete
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(final)
