"""Cache entries that are trusted only when complete and intact, built by one process at a time.

An entry is a directory. Its manifest, ``visact-manifest.json``, lists every other file in it
with its size and sha256, and is written last (to a temporary name, fsynced, then renamed), so
an entry without a readable manifest is an unfinished build. ``entry_problem`` checks an entry
against its manifest on every use (the tiny VLM's 5 MB hash in ~10 ms): a file missing, changed,
or added since the build, or one the builder was required to write but did not, makes the entry
untrusted. ``ensure_entry`` returns a trusted entry, building it when there is none: under an
exclusive ``flock`` on ``<root>/.<name>.lock`` (released by the kernel when the holder exits,
however it exits) it moves an untrusted entry aside with a warning in the log, builds into a
staging directory beside it, writes the manifest and renames the staging directory into place.
Processes that come while one builds wait for the lock, find the entry trusted, and use it.
A build killed midway leaves only its staging directory, removed by the next builder.

``flock`` coordinates processes of one machine; on a network file system shared by several
machines give each machine a cache of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "visact-manifest.json"
MANIFEST_FORMAT = 1


def cache_root() -> Path:
    """Where visact keeps what it builds once (the tiny VLM, ALFWorld's translated games, ...):
    ``$VISACT_CACHE``, else ``$XDG_CACHE_HOME/visact``, else ``~/.cache/visact``. Torch-free, so
    that the environment side keeps its caches there too."""
    env = os.environ.get("VISACT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "visact"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    """Every file under ``directory`` but the manifest and its temporary, as sorted posix paths."""
    return sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if not path.is_dir() and path.name not in (MANIFEST, f"{MANIFEST}.tmp")
    )


def write_manifest(directory: Path, about: Mapping[str, Any] | None = None) -> None:
    """Write ``directory``'s manifest (every file's size and sha256, and ``about``), atomically and
    durably: call it after everything else in the directory is written."""
    files = {
        name: {"size": (directory / name).stat().st_size, "sha256": file_sha256(directory / name)}
        for name in _files(directory)
    }
    payload = {"format": MANIFEST_FORMAT, "about": dict(about or {}), "files": files}
    temporary = directory / f"{MANIFEST}.tmp"
    with temporary.open("w") as f:
        f.write(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    for name in files:  # the files reach the disk before the manifest that vouches for them
        with (directory / name).open("rb") as f:
            os.fsync(f.fileno())
    os.replace(temporary, directory / MANIFEST)
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def entry_problem(
    directory: Path, *, required: Sequence[str] = (), about: Mapping[str, Any] | None = None
) -> str | None:
    """None when ``directory`` matches its manifest exactly, lists every ``required`` file and
    (if given) was built for ``about``; otherwise what is wrong with it, in a few words."""
    if not directory.is_dir():
        return "there is no entry"
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        listed: dict[str, dict[str, Any]] = manifest["files"]
        recorded_about = manifest.get("about", {})
    except FileNotFoundError:
        return f"it has no {MANIFEST}: its build did not finish (or predates manifests)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its {MANIFEST} is unreadable ({exc})"
    if about is not None and recorded_about != dict(about):
        return f"it was built for {recorded_about}, not {dict(about)}"
    unwritten = [name for name in required if name not in listed]
    if unwritten:
        return f"its build wrote no {', '.join(unwritten)}"
    for name, expected in sorted(listed.items()):
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, its build wrote {expected['size']}"
        if file_sha256(path) != expected["sha256"]:
            return f"{name} differs from what its build wrote (sha256)"
    added = sorted(set(_files(directory)) - set(listed))
    if added:
        return f"{', '.join(added)} was not written by its build"
    return None


@contextlib.contextmanager
def exclusive_lock(path: Path, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); logs ``waiting`` when another
    process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                log.info(waiting)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure_entry(
    root: Path,
    name: str,
    build: Callable[[Path], object],
    *,
    what: str,
    required: Sequence[str] = (),
    about: Mapping[str, Any] | None = None,
) -> Path:
    """``root/name``, trusted (see the module docstring); ``build(staging_dir)`` fills a new one
    when there is none. ``what`` names the entry in the log."""
    final = root / name
    if entry_problem(final, required=required, about=about) is None:
        return final
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{name}.lock", f"waiting for another process to build {what} in {final}"):
        problem = entry_problem(final, required=required, about=about)
        if problem is None:
            return final  # built by the process we waited for
        if final.exists() or final.is_symlink():
            log.warning(
                "the cache entry %s of %s is not intact: %s; moving it aside and rebuilding",
                final,
                what,
                problem,
            )
            aside = Path(tempfile.mkdtemp(prefix=f".{name}.broken-", dir=root))
            os.rename(final, aside / name)  # atomically out of the way, then deleted below
        for pattern in (f".{name}.broken-*", f".{name}.building-*"):  # also of builds killed midway
            for leftover in root.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=root))
        try:
            log.info("building %s into %s (once per machine and version)", what, final)
            build(staging)
            unwritten = [file for file in required if not (staging / file).is_file()]
            if unwritten:
                raise RuntimeError(f"building {what} wrote no {', '.join(unwritten)} into {staging}")
            write_manifest(staging, about)
            staging.chmod(0o755)  # mkdtemp makes it private; the entry is readable like any other
            os.rename(staging, final)
            _fsync_directory(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final
