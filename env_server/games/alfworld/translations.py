"""Translated games: fast-downward's translation of a problem against alfworld's domain, cached.

Translating is most of a reset (fast-downward grounds every action of the problem). A
translation is kept in memory for the last ``MEMORY_ENTRIES`` problems, and on disk when asked
(``persist``: the environment asks for the games of held-out seeds, which evaluations replay)
under ``$VISACT_CACHE/alfworld/`` (default ``~/.cache/visact``). A translation is plain data (the
SAS text, and the action schemas, types, objects and initial facts the engine reads off
fast-downward's task), stored as compressed JSON: nothing on disk is unpickled. A disk entry is
written to a temporary file and renamed into place, so it appears whole or not at all, and it
starts with the SHA-256 of the rest, checked on every read: an entry that does not match is
ignored and written again. Entries are keyed by the problem's text, under a folder named by the
domain, the translator's version and this format's version.

The translator is not thread-safe (it sets module-level options, ``sys.argv`` and
``sys.stdout``); ``LOCK`` serialises it, and every other engine call (see ``engine``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
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

from visact.cache import cache_root
from visact.env_server.games.alfworld import wheel

log = logging.getLogger(__name__)

#: Held by every translation, engine reset and engine step in the process.
LOCK = threading.RLock()
#: Translations kept in memory (a repeated seed skips the translation).
MEMORY_ENTRIES = 16
#: Bump when what a disk entry holds changes.
FORMAT_VERSION = 2
DIGEST_BYTES = 32

_MEMORY: OrderedDict[str, Translation] = OrderedDict()


Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Translation:
    """A problem translated by fast-downward, as plain data.

    ``sas``: the SAS task libdownward loads; ``actions``: each action schema's parameters as
    (name, type) pairs; ``types``: each type with its supertypes; ``objects``: each object with
    its type; ``facts``: the initial facts as (predicate, arguments), numeric ones left out.
    """

    sas: str
    actions: tuple[tuple[str, Pairs], ...]
    types: tuple[tuple[str, tuple[str, ...]], ...]
    objects: Pairs
    facts: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def of(cls, task: Any, sas: str) -> Translation:
        """From fast-downward's translated task and its SAS text."""
        from fast_downward.translate.pddl import conditions, f_expression

        facts = []
        for atom in task.init:
            if isinstance(atom, conditions.Atom) and atom.predicate != "=":
                facts.append((atom.predicate, tuple(atom.args)))
            elif isinstance(atom, f_expression.Assign) and atom.fluent.symbol != "total-cost":
                name = str(atom.expression.value)
                if not name.isdigit():  # distances are numbers: not facts
                    facts.append((name, tuple(atom.fluent.args)))
        return cls(
            sas=sas,
            actions=tuple((a.name, tuple((p.name, p.type_name) for p in a.parameters)) for a in task.actions),
            types=tuple((t.name, tuple(t.supertype_names)) for t in task.types),
            objects=tuple((o.name, o.type_name) for o in task.objects),
            facts=tuple(facts),
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Translation:
        data = json.loads(text)
        return cls(
            sas=data["sas"],
            actions=tuple((name, _pairs(parameters)) for name, parameters in data["actions"]),
            types=tuple((name, tuple(supertypes)) for name, supertypes in data["types"]),
            objects=_pairs(data["objects"]),
            facts=tuple((predicate, tuple(arguments)) for predicate, arguments in data["facts"]),
        )


def _pairs(items: list[list[str]]) -> Pairs:
    return tuple((first, second) for first, second in items)


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
    return Translation.of(task, sas)


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
    return Translation.from_json(zlib.decompress(payload).decode())


def _write(key: str, translation: Translation) -> None:
    folder = disk_folder()
    payload = zlib.compress(translation.to_json().encode())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{key}.", dir=folder)
        with os.fdopen(handle, "wb") as out:
            out.write(hashlib.sha256(payload).digest() + payload)
        os.replace(temporary, folder / f"{key}.bin")
    except OSError as exc:  # a read-only or full disk costs speed, not the game
        log.warning("cannot keep a translation in %s: %s", folder, exc)
