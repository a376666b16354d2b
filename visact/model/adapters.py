"""LoRA adapters as one safetensors file: the unit the trainer publishes and agents apply.

A version is ``adapter.safetensors``: the LoRA tensors, with the peft LoraConfig as JSON in the
file's metadata, so one file and one sha256 describe it completely. Never a pickle. Agents
apply a version only after its sha256 matches, between batches, in one step
(``set_peft_model_state_dict``): a failed transfer never leaves a half-applied adapter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

CONFIG_KEY = "visact.lora_config"
ADAPTER_FILE = "adapter.safetensors"


class AdapterError(ValueError):
    """An adapter file that cannot be applied (bad bytes, wrong hash, wrong shapes)."""


def lora_config(target_modules: Sequence[str], *, r: int, alpha: int, dropout: float) -> Any:
    """The peft LoraConfig for ``target_modules``."""
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none"
    )


def attach_lora(model: Any, config: Any) -> Any:
    """``model`` wrapped with a fresh, trainable LoRA adapter (peft's default initialization: B = 0)."""
    from peft import get_peft_model

    with quiet_peft_checkpointing_probe():
        return get_peft_model(model, config)


@contextlib.contextmanager
def quiet_peft_checkpointing_probe() -> Iterator[None]:
    """peft reads ``model.is_gradient_checkpointing``, which transformers 5 deprecated with a
    FutureWarning on every read: a warning about peft's code, not the user's, on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def adapter_bytes(peft_model: Any) -> bytes:
    """The model's LoRA tensors and config as one safetensors file, in memory."""
    from peft import get_peft_model_state_dict

    state = {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    config = peft_model.peft_config["default"].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    return save_safetensors_bytes(
        state, metadata={CONFIG_KEY: json.dumps(config, sort_keys=True, default=str)}
    )


def adapted_modules(peft_model: Any) -> list[str]:
    """Full names (as the base model names them) of the modules carrying a LoRA. Unlike the peft
    config's ``target_modules``, which peft may shorten to suffixes (``"q_proj"``), they say where
    each adapted layer is: the language model, the vision tower or the projector."""
    base = peft_model.get_base_model()
    return sorted(name for name, module in base.named_modules() if hasattr(module, "lora_A"))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_adapter(
    data: bytes, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, lora config dict) from a file's bytes; raises AdapterError on a hash mismatch or bad bytes."""
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256:
        raise AdapterError(
            f"adapter sha256 is {sha256_hex(data)[:12]}... but {expected_sha256[:12]}... was announced; "
            "the transfer was corrupted or cut short"
        )
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except Exception as exc:  # safetensors and json raise various types on bad bytes
        raise AdapterError(f"not a safetensors adapter file: {exc}") from exc
    if CONFIG_KEY not in metadata:
        raise AdapterError(f"adapter file lacks its LoRA config (metadata key {CONFIG_KEY!r})")
    try:
        config = json.loads(metadata[CONFIG_KEY])
    except ValueError as exc:
        raise AdapterError(f"adapter file's LoRA config ({CONFIG_KEY!r}) is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterError(f"adapter file's LoRA config ({CONFIG_KEY!r}) is not a JSON object")
    return tensors, config


def apply_adapter(peft_model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Load LoRA tensors into a model that already carries a matching adapter, all or nothing."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    current = get_peft_model_state_dict(peft_model)
    missing = sorted(set(current) - set(tensors))
    unexpected = sorted(set(tensors) - set(current))
    if missing or unexpected:
        raise AdapterError(
            f"adapter does not fit this model: missing {missing[:3]}..., unexpected {unexpected[:3]}...; "
            "the agent and the trainer must run the same base model and LoRA targets"
        )
    for name, value in tensors.items():
        if current[name].shape != value.shape:
            raise AdapterError(
                f"adapter tensor {name} has shape {tuple(value.shape)}, model has {tuple(current[name].shape)}"
            )
    set_peft_model_state_dict(peft_model, tensors)


def peft_config_from_dict(config: dict[str, Any]) -> Any:
    from peft import LoraConfig

    known = set(LoraConfig.__dataclass_fields__)
    return LoraConfig(**{k: v for k, v in config.items() if k in known})


def save_adapter_file(peft_model: Any, directory: Path) -> tuple[Path, str]:
    """Write ``directory/adapter.safetensors``; returns its path and sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    data = adapter_bytes(peft_model)
    path = directory / ADAPTER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path, sha256_hex(data)


def visact_adapter_file(path: str | Path) -> Path | None:
    """The single-file adapter at ``path`` (a ``.safetensors`` file or a directory holding
    ``adapter.safetensors``), or None when ``path`` is something else (e.g. a peft directory)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return path
    if path.is_dir() and (path / ADAPTER_FILE).is_file():
        return path / ADAPTER_FILE
    return None


def load_adapter_file(model: Any, path: Path, *, trainable: bool = False) -> Any:
    """``model`` with the LoRA adapter of a single-file adapter applied."""
    tensors, config = read_adapter(path.read_bytes())
    peft_model = attach_lora(model, peft_config_from_dict(config))
    apply_adapter(peft_model, tensors)
    if not trainable:
        for parameter in peft_model.parameters():
            parameter.requires_grad_(False)
    return peft_model
