"""Checkpoints: everything `trainer serve --resume DIR` needs to continue where it stopped.

Layout under the run directory (``--checkpoint-dir``):
    checkpoints/update-000010/   adapter.safetensors, value_head.safetensors,
                                 optimizer.pt, scheduler.pt (torch.save, read back weights_only),
                                 state.json (version, updates, run id, ...), config.json
    checkpoints/LATEST           name of the newest complete checkpoint
    weights/v000011/adapter.safetensors   published versions (what agents fetch)
A checkpoint is written to a temporary directory and renamed, so a crash never leaves a
half checkpoint behind LATEST.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from visact.configcli import as_options
from visact.model.adapters import ADAPTER_FILE, apply_adapter, read_adapter, save_adapter_file

LATEST = "LATEST"


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def weights_dir(run_dir: Path) -> Path:
    return run_dir / "weights"


def save_checkpoint(learner: Any, run_dir: Path, state: dict[str, Any]) -> Path:
    """Write a complete checkpoint of ``learner`` plus ``state``; returns its directory."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"update-{learner.updates:06d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_adapter_file(learner.peft_model, tmp)
    value_head = learner.accelerator.unwrap_model(learner.value_head)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()},
        tmp / "value_head.safetensors",
    )
    torch.save(learner.optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(learner.scheduler.state_dict(), tmp / "scheduler.pt")
    full_state = {"version": learner.version, "updates": learner.updates, "saved_at": time.time(), **state}
    (tmp / "state.json").write_text(json.dumps(full_state, indent=2))
    (tmp / "config.json").write_text(json.dumps(as_options(learner.config), indent=2, default=str))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (root / f".{LATEST}.tmp").write_text(name)
    (root / f".{LATEST}.tmp").replace(root / LATEST)
    return final


def find_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a checkpoint, else the newest one of the run directory ``path``."""
    if (path / "state.json").exists():
        return path
    latest = checkpoints_dir(path) / LATEST
    if not latest.exists():
        raise FileNotFoundError(
            f"no checkpoint in {path}: expected {path}/state.json or {latest}; give --resume the run "
            "directory (--checkpoint-dir of the earlier run) or one of its checkpoints/update-* directories"
        )
    return checkpoints_dir(path) / latest.read_text().strip()


def load_checkpoint(learner: Any, path: Path) -> dict[str, Any]:
    """Restore ``learner`` from a checkpoint; returns its state.json."""
    checkpoint = find_checkpoint(path)
    tensors, _config = read_adapter((checkpoint / ADAPTER_FILE).read_bytes())
    apply_adapter(learner.peft_model, tensors)
    value_head = learner.accelerator.unwrap_model(learner.value_head)
    value_head.load_state_dict(load_file(checkpoint / "value_head.safetensors"))
    learner.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    learner.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
    state: dict[str, Any] = json.loads((checkpoint / "state.json").read_text())
    learner.version = int(state["version"])
    learner.updates = int(state["updates"])
    return state


def highest_published_version(run_dir: Path) -> int:
    """The newest version ever published in this run directory (-1 if none)."""
    versions = [int(p.name[1:]) for p in weights_dir(run_dir).glob("v*") if p.name[1:].isdigit()]
    return max(versions, default=-1)
