"""One rank of ``torchrun --nproc_per_node 2 tiny_vlm_rank.py OUT ORDER`` (from
test_tiny_vlm_cache.py): joins a gloo process group, loads ``--model tiny`` through
``visact.model.loading.load_vlm`` as ``trainer serve`` does, and writes ``OUT/rank<N>.json`` with the
outcome and the weights' fingerprint.

ORDER ``rank1-first``: rank 1 loads while rank 0 waits at a barrier, then rank 0 loads (the
order in which rank 1's build won the cache on a fresh machine); ``together``: both at once.
"""

from __future__ import annotations

import datetime
import json
import sys
import traceback
from pathlib import Path
from typing import Any

import torch.distributed as dist


def load() -> dict[str, Any]:
    try:
        from visact.model.loading import load_vlm, weights_fingerprint

        loaded = load_vlm("tiny", dtype="float32", device="cpu")
        return {"ok": True, "path": loaded.path, "fingerprint": weights_fingerprint(loaded.model)}
    except Exception:
        return {"ok": False, "error": traceback.format_exc()[-3000:]}


def main() -> None:
    out, order = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    rank = dist.get_rank()
    outcome: dict[str, Any] = {}
    if order == "together" or rank == 1:
        outcome = load()
    dist.barrier()
    if order == "rank1-first" and rank == 0:
        outcome = load()
    (out / f"rank{rank}.json").write_text(json.dumps(outcome))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
