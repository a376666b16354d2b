"""The tiny VLM's cache entry on a fresh machine, with real processes: torchrun ranks, processes
that race, a damaged entry, a build killed midway (issue 16: rank 1 of torchrun once left an
entry without weights that broke every later load on the machine)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.processes import Process, command, start, wait_for
from visact.model import tiny_vlm

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ENSURE = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
    "from visact.model.tiny_vlm import ensure_tiny_vlm\n"
    "print('ENTRY', ensure_tiny_vlm(), flush=True)\n"
)


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An entry built by this (single, group-less) process: the reference every build must match."""
    return tiny_vlm.ensure_tiny_vlm(cache_dir=tmp_path_factory.mktemp("reference"))


def assert_matches(entry: Path, reference: Path) -> None:
    """``entry`` holds every file of ``reference`` with the same bytes (the model loads from it)."""
    got, want = digests(entry), digests(reference)
    assert {name: got.get(name) for name in want} == want, f"{entry} differs from a complete build"


def leftovers(root: Path) -> list[str]:
    """Directories in the cache root besides the entries (staging or moved-aside builds)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("."))


def ensure_in_process(root: Path) -> Process:
    return start(
        f"ensure-{time.monotonic_ns()}",
        [*command("python"), "-c", ENSURE],
        root.parent,
        env={"VISACT_CACHE": str(root), "OMP_NUM_THREADS": "1"},
    )


def test_two_torchrun_ranks_with_an_empty_cache_both_load_the_tiny_vlm(tmp_path: Path, built: Path) -> None:
    """Rank 1 loads "tiny" first (gloo process group up), then rank 0: both get the same complete
    model. Before the fix rank 1's build saved no weights and its entry was trusted by both."""
    cache = tmp_path / "cache"
    argv = [
        *command("torchrun"), "--standalone", "--nproc_per_node", "2",
        str(HERE / "tiny_vlm_rank.py"), str(tmp_path), "rank1-first",
    ]  # fmt: skip
    ranks = start(
        "torchrun",
        argv,
        tmp_path,
        env={"VISACT_CACHE": str(cache), "OMP_NUM_THREADS": "1"},
    )
    assert ranks.popen.wait(timeout=400) == 0, ranks.text()[-4000:]
    outcomes = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [o["ok"] for o in outcomes] == [True, True], "\n".join(o.get("error", "") for o in outcomes)
    assert outcomes[0]["path"] == outcomes[1]["path"]
    assert outcomes[0]["fingerprint"] == outcomes[1]["fingerprint"]
    assert_matches(Path(outcomes[0]["path"]), built)


def test_processes_that_start_together_build_once_and_both_use_it(tmp_path: Path, built: Path) -> None:
    cache = tmp_path / "cache"
    first, second = ensure_in_process(cache), ensure_in_process(cache)
    assert first.popen.wait(timeout=300) == 0, first.text()[-3000:]
    assert second.popen.wait(timeout=300) == 0, second.text()[-3000:]
    logs = first.text() + second.text()
    entries = {line.split()[1] for line in logs.splitlines() if line.startswith("ENTRY ")}
    assert len(entries) == 1, logs[-3000:]
    assert logs.count("building the tiny VLM") == 1, logs[-3000:]  # the other waited for it
    assert_matches(Path(entries.pop()), built)
    assert leftovers(cache) == []


def delete_model(entry: Path) -> None:
    (entry / "model.safetensors").unlink()


def flip_a_weight_byte(entry: Path) -> None:
    path = entry / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def leave_what_rank_1_built(entry: Path) -> None:
    """The entry of the issue: the processor's files and visact_tiny.json, no config or weights."""
    keep = {"chat_template.jinja", "processor_config.json", "tokenizer.json", "tokenizer_config.json"}
    for path in entry.iterdir():
        if path.name not in keep | {"visact_tiny.json"}:
            path.unlink()


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (delete_model, "model.safetensors is missing"),
        (flip_a_weight_byte, "model.safetensors differs"),
        (leave_what_rank_1_built, "has no visact-manifest.json"),
    ],
    ids=["file-missing", "byte-flipped", "rank-1-entry"],
)
def test_a_damaged_entry_is_rebuilt_and_the_log_says_so(
    tmp_path: Path, built: Path, damage: Callable[[Path], None], said: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(built, cache / built.name)
    damage(cache / built.name)
    with caplog.at_level(logging.WARNING):
        entry = tiny_vlm.ensure_tiny_vlm(cache_dir=cache)
    assert entry == cache / built.name
    assert_matches(entry, built)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(said in w and "rebuilding" in w for w in warnings), warnings
    assert leftovers(cache) == []


def test_a_build_killed_midway_leaves_nothing_trusted(tmp_path: Path, built: Path) -> None:
    """SIGKILL a process (and the build it started) while it builds; the next use builds a good
    entry and clears what the killed build left."""
    cache = tmp_path / "cache"
    builder = ensure_in_process(cache)
    wait_for(lambda: cache.is_dir() and leftovers(cache) != [], 120, "no build started", builder)
    os.killpg(builder.popen.pid, signal.SIGKILL)
    builder.popen.wait(timeout=30)
    assert not (cache / built.name).exists()
    entry = tiny_vlm.ensure_tiny_vlm(cache_dir=cache)
    assert_matches(entry, built)
    assert leftovers(cache) == [], "the killed build's staging directory is still there"
