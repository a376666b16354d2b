"""visact.cache: an entry is trusted only when it matches the manifest its build wrote last; one
builder at a time. (The tiny VLM's entry, with real processes: tests/integration/test_tiny_vlm_cache.py.)"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from visact.cache import MANIFEST, ensure_entry, entry_problem, exclusive_lock, write_manifest


def fill(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "weights.bin").write_bytes(bytes(range(256)) * 40)
    (directory / "sub").mkdir(exist_ok=True)
    (directory / "sub" / "config.json").write_text('{"a": 1}\n')


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_manifest_lists_every_file_with_its_size_and_sha256(tmp_path: Path) -> None:
    fill(tmp_path)
    write_manifest(tmp_path, {"recipe": "r1"})
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["sub/config.json", "weights.bin"]
    assert manifest["files"]["weights.bin"]["size"] == 10240
    assert len(manifest["files"]["weights.bin"]["sha256"]) == 64
    assert manifest["about"] == {"recipe": "r1"}
    assert not (tmp_path / f"{MANIFEST}.tmp").exists()
    assert entry_problem(tmp_path, required=["weights.bin"], about={"recipe": "r1"}) is None


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: (d / MANIFEST).unlink(), f"no {MANIFEST}: its build did not finish"),
        (lambda d: (d / MANIFEST).write_text("{"), "unreadable"),
        (lambda d: (d / "weights.bin").unlink(), "weights.bin is missing"),
        (
            lambda d: (d / "weights.bin").write_bytes(b"short"),
            "weights.bin has 5 bytes, its build wrote 10240",
        ),
        (lambda d: flip_a_byte(d / "weights.bin"), "weights.bin differs from what its build wrote"),
        (lambda d: flip_a_byte(d / "sub" / "config.json"), "sub/config.json differs"),
        (
            lambda d: (d / "adapter_config.json").write_text("{}"),
            "adapter_config.json was not written by its build",
        ),
    ],
    ids=["no-manifest", "bad-manifest", "missing", "truncated", "flipped", "flipped-nested", "added"],
)
def test_a_damaged_entry_is_not_trusted(
    tmp_path: Path, damage: Callable[[Path], object], problem: str
) -> None:
    fill(tmp_path)
    write_manifest(tmp_path)
    damage(tmp_path)
    found = entry_problem(tmp_path)
    assert found is not None and problem in found, found


def test_a_build_that_skipped_a_required_file_or_another_recipe_is_not_trusted(tmp_path: Path) -> None:
    fill(tmp_path)
    write_manifest(tmp_path, {"recipe": "r1"})  # faithfully lists what was there: no model
    assert entry_problem(tmp_path, required=["model.safetensors"]) == "its build wrote no model.safetensors"
    assert "not {'recipe': 'r2'}" in str(entry_problem(tmp_path, about={"recipe": "r2"}))
    assert entry_problem(tmp_path / "absent") == "there is no entry"


def test_ensure_entry_builds_once_then_trusts_the_entry(tmp_path: Path) -> None:
    builds: list[Path] = []

    def build(out: Path) -> None:
        builds.append(out)
        fill(out)

    first = ensure_entry(tmp_path, "thing-1", build, what="the thing", required=["weights.bin"])
    assert first == tmp_path / "thing-1" and entry_problem(first) is None
    assert builds[0].parent == tmp_path and builds[0].name.startswith(".thing-1.building-")
    assert ensure_entry(tmp_path, "thing-1", build, what="the thing") == first
    assert len(builds) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thing-1.lock", "thing-1"]


def test_ensure_entry_moves_a_damaged_entry_aside_with_a_warning_and_rebuilds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_entry(tmp_path, "thing-1", fill, what="the thing")
    flip_a_byte(tmp_path / "thing-1" / "weights.bin")
    with caplog.at_level(logging.INFO, logger="visact.cache"):
        entry = ensure_entry(tmp_path, "thing-1", fill, what="the thing")
    assert entry_problem(entry) is None
    assert (entry / "weights.bin").read_bytes() == bytes(range(256)) * 40
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "weights.bin differs" in warnings[0] and "rebuilding" in warnings[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thing-1.lock", "thing-1"]  # nothing left aside


def test_a_failed_build_leaves_nothing_and_a_build_without_a_required_file_fails(tmp_path: Path) -> None:
    def crash(out: Path) -> None:
        fill(out)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ensure_entry(tmp_path, "thing-1", crash, what="the thing")
    with pytest.raises(RuntimeError, match=r"building the thing wrote no model\.safetensors"):
        ensure_entry(tmp_path, "thing-1", fill, what="the thing", required=["model.safetensors"])
    assert [p.name for p in tmp_path.iterdir()] == [".thing-1.lock"]


def test_leftovers_of_a_killed_build_are_removed_by_the_next_builder(tmp_path: Path) -> None:
    killed = tmp_path / ".thing-1.building-abc123"
    fill(killed)  # what a SIGKILLed builder leaves: no manifest, never renamed
    (tmp_path / ".thing-1.broken-def456").mkdir()
    entry = ensure_entry(tmp_path, "thing-1", fill, what="the thing")
    assert entry_problem(entry) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thing-1.lock", "thing-1"]


def test_who_comes_while_another_builds_waits_and_uses_its_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started, release = threading.Event(), threading.Event()
    builds: list[str] = []

    def slow_build(out: Path) -> None:
        builds.append("slow")
        started.set()
        assert release.wait(30)
        fill(out)

    def must_not_build(out: Path) -> None:
        builds.append("second")

    first = threading.Thread(
        target=ensure_entry, args=(tmp_path, "thing-1", slow_build), kwargs={"what": "it"}
    )
    results: list[Path] = []
    second = threading.Thread(
        target=lambda: results.append(ensure_entry(tmp_path, "thing-1", must_not_build, what="it"))
    )
    with caplog.at_level(logging.INFO, logger="visact.cache"):
        first.start()
        assert started.wait(30)
        second.start()
        second.join(0.5)
        assert second.is_alive(), "the second caller did not wait for the lock"
        release.set()
        first.join(30)
        second.join(30)
    assert builds == ["slow"] and results == [tmp_path / "thing-1"]
    assert any("waiting for another process to build it" in r.getMessage() for r in caplog.records)


def test_the_lock_is_exclusive_between_open_files(tmp_path: Path) -> None:
    order: list[str] = []
    with exclusive_lock(tmp_path / "x.lock"):
        other = threading.Thread(target=lambda: _lock_and_note(tmp_path / "x.lock", order))
        other.start()
        other.join(0.3)
        order.append("first releases")
    other.join(10)
    assert order == ["first releases", "second holds"]


def _lock_and_note(path: Path, order: list[str]) -> None:
    with exclusive_lock(path):
        order.append("second holds")
