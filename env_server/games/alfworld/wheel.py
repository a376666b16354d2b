"""What the alfworld wheel ships, read without importing the ``alfworld`` package.

Importing ``alfworld`` creates ``~/.cache/alfworld`` (or ``$ALFWORLD_DATA``) as a side effect,
so this module finds the installed package's folder with ``importlib`` and reads its files
directly: the PDDL domain (``data/alfred.pddl``), the grammar of commands and feedback
sentences (``data/alfred.twl2``), the object and receptacle tables (``gen/constants.py``),
the goal library (``gen/goal_library.py``) and the 120 room layouts (``gen/layouts``). The two
Python files only define tables; they are executed as standalone modules under private names.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

#: The distribution that holds the files, and the pip extra that installs it.
PACKAGE = "alfworld"
INSTALL_HINT = "pip install 'visact[alfworld]'"


class AlfworldMissing(ImportError):
    """The alfworld extra is not installed."""


def installed() -> bool:
    """Whether alfworld, textworld and fast-downward are importable (nothing is imported)."""
    try:
        return all(
            importlib.util.find_spec(name) is not None for name in (PACKAGE, "textworld", "fast_downward")
        )
    except (ImportError, ValueError):  # a finder that refuses the name
        return False


@lru_cache(maxsize=1)
def root() -> Path:
    """The installed ``alfworld`` package folder."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AlfworldMissing(f"the alfworld environment needs the alfworld extra: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_table_module(relative: str, name: str) -> ModuleType:
    path = root() / relative
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file is part of the wheel
        raise AlfworldMissing(f"cannot read {path}; reinstall with {INSTALL_HINT}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def constants() -> Any:
    """alfworld's ``gen/constants.py``: object/receptacle tables, room numbers and splits."""
    return _load_table_module("gen/constants.py", "_visact_alfworld_constants")


@lru_cache(maxsize=1)
def goal_library() -> dict[str, dict[str, Any]]:
    """alfworld's ``gen/goal_library.py`` ``gdict``: goal PDDL and sentence templates per task type."""
    module = _load_table_module("gen/goal_library.py", "_visact_alfworld_goal_library")
    return dict(module.gdict)


@lru_cache(maxsize=1)
def domain_text() -> str:
    """The PDDL domain: the rules of every action."""
    return (root() / "data" / "alfred.pddl").read_text()


@lru_cache(maxsize=1)
def grammar_text() -> str:
    """The command templates and every feedback sentence (the goal line says ``UNKNOWN GOAL``)."""
    return (root() / "data" / "alfred.twl2").read_text()


def layout_dir() -> Path:
    return root() / "gen" / "layouts"


@cache
def room_object_types(room: str) -> tuple[str, ...]:
    """The object types THOR has in ``room`` (e.g. ``"FloorPlan12"``)."""
    return tuple(json.loads((layout_dir() / f"{room}-objects.json").read_text()))


@cache
def room_receptacle_poses(room: str) -> dict[str, tuple[float, float, int, int]]:
    """Receptacle id -> (x, z, rotation, horizon) where the agent stands to use it."""
    raw = json.loads((layout_dir() / f"{room}-openable.json").read_text())
    return {rid: (float(p[0]), float(p[1]), int(p[2]), int(p[3])) for rid, p in sorted(raw.items())}


@cache
def room_floor(room: str) -> np.ndarray:
    """The reachable floor grid of ``room``: an (N, 2) array of (x, z) points, 0.25 m apart."""
    floor = np.load(layout_dir() / f"{room}-layout.npy")
    floor.setflags(write=False)
    return floor


def room_numbers() -> tuple[int, ...]:
    """The FloorPlan numbers that have layouts."""
    numbers = (
        int(p.name[len("FloorPlan") : -len("-objects.json")]) for p in layout_dir().glob("*-objects.json")
    )
    return tuple(sorted(numbers))
