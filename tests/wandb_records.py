"""Read what an offline Weights & Biases run wrote (``WANDB_MODE=offline``), for tests.

An offline run keeps its records in ``run-<id>.wandb``: a 7-byte header (``:W&B``, magic,
version), then LevelDB log records (4-byte checksum, 2-byte length, 1-byte type: full, first,
middle, last) in 32 KiB blocks, each record a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK, HEADER, RECORD_HEADER = 32 * 1024, 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    exited: bool = False


def _payloads(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", "not a W&B offline run file"
    payloads, pending, position = [], b"", HEADER
    while position + RECORD_HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < RECORD_HEADER:  # the rest of a block too short for a header is padding
            position += room
            continue
        length, kind = struct.unpack_from("<HB", data, position + 4)
        chunk = data[position + RECORD_HEADER : position + RECORD_HEADER + length]
        position += RECORD_HEADER + length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            payloads.append(pending + chunk)
    return payloads


def read_offline_run(path: Path) -> OfflineRun:
    """The run id, config, logged rows and whether it finished, from one ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    run = OfflineRun()
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            run.config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            run.history.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
        elif kind == "exit":
            run.exited = True
    return run


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under ``wandb_dir`` (the ``wandb`` folder), oldest first."""
    return [read_offline_run(path) for path in sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))]
