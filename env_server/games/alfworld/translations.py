"""Translated games: fast-downward's translation of a problem against alfworld's domain, cached.

Translating is most of a reset (fast-downward grounds every action of the problem). A
translation is kept in memory for the last ``MEMORY_ENTRIES`` problems, and on disk when asked
(``persist``: the environment asks for the games of held-out seeds, which evaluations replay)
under ``$VISACT_CACHE/alfworld/`` (default ``~/.cache/visact``). A disk entry is written to a
temporary file and renamed into place, so it appears whole or not at all, and it starts with the
SHA-256 of the rest, checked on every read: an entry that does not match is ignored and written
again. Entries are keyed by the problem's text, under a folder named by the domain, the
translator's version and this format's version. They are pickles: the cache folder is trusted
as the user's own files are.

The translator is not thread-safe (it sets module-level options, ``sys.argv`` and
``sys.stdout``); ``LOCK`` serialises it, and every other engine call (see ``engine``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sys
import tempfile
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from env_server.games.alfworld import wheel
from visact.cache import cache_root

log = logging.getLogger(__name__)

#: Held by every translation, engine reset and engine step in the process.
LOCK = threading.RLock()
#: Translations kept in memory (a repeated seed skips the translation).
MEMORY_ENTRIES = 16
#: Bump when what a disk entry holds changes.
FORMAT_VERSION = 1
DIGEST_BYTES = 32

_MEMORY: OrderedDict[str, Translation] = OrderedDict()


@dataclass(frozen=True)
class Translation:
    """fast-downward's parsed task and its SAS text, for one problem."""

    task: Any
    sas: str


def translate(problem: str, persist: bool = False) -> Translation:
    """``problem`` translated against alfworld's domain: from memory, from disk, or made now."""
    key = hashlib.sha256(problem.encode()).hexdigest()
    with LOCK:
        cached = _MEMORY.get(key)
        if cached is None and persist:
            cached = _read(key)
        if cached is None:
            cached = _translate(problem)
            if persist:
                _write(key, cached)
        _MEMORY[key] = cached
        _MEMORY.move_to_end(key)
        while len(_MEMORY) > MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)
        return cached


def _translate(problem: str) -> Translation:
    from fast_downward import pddl2sas

    argv = sys.argv
    try:
        task, sas = pddl2sas(wheel.domain_text(), problem)
    finally:
        sys.argv = argv
    return Translation(task, sas)


def disk_folder() -> Path:
    """Where this domain's translations by this translator live (under ``$VISACT_CACHE`` now)."""
    return cache_root() / "alfworld" / f"translations-{_identity()}"


@lru_cache(maxsize=1)
def _identity() -> str:
    identity = f"{FORMAT_VERSION}\n{metadata.version('fast-downward-textworld')}\n{wheel.domain_text()}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _read(key: str) -> Translation | None:
    path = disk_folder() / f"{key}.bin"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    digest, payload = data[:DIGEST_BYTES], data[DIGEST_BYTES:]
    if hashlib.sha256(payload).digest() != digest:
        log.warning("ignoring a damaged translation cache entry: %s", path)
        return None
    task, sas = pickle.loads(zlib.decompress(payload))
    return Translation(task, sas)


def _write(key: str, translation: Translation) -> None:
    folder = disk_folder()
    payload = zlib.compress(
        pickle.dumps((translation.task, translation.sas), protocol=pickle.HIGHEST_PROTOCOL)
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{key}.", dir=folder)
        with os.fdopen(handle, "wb") as out:
            out.write(hashlib.sha256(payload).digest() + payload)
        os.replace(temporary, folder / f"{key}.bin")
    except OSError as exc:  # a read-only or full disk costs speed, not the game
        log.warning("cannot keep a translation in %s: %s", folder, exc)
