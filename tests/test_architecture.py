"""The layers of docs/architecture.md, enforced: every import of the library runs downward or
within its own package, no import loop exists, and nothing but ``visact`` is installed.

Imports are read from the source (every ``import`` and ``from ... import``, also the ones inside
functions), so a lazy import that runs back up a layer is caught as well.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
#: the folders installed under visact (visact/agent, ... are links to them)
LINKED = {"agent": "visact.agent", "trainer": "visact.trainer", "env_server": "visact.env_server"}

#: package prefix -> (layer, the packages of its layer it may import besides itself)
LAYERS: dict[str, tuple[int, frozenset[str]]] = {
    "visact.env.v1": (1, frozenset()),
    "visact.trainer.v1": (1, frozenset({"visact.env.v1"})),
    "visact.rpc": (1, frozenset()),
    "visact": (1, frozenset({"visact.rpc", "visact.env.v1", "visact.trainer.v1"})),
    "visact.env_server": (2, frozenset()),
    "visact.model": (2, frozenset()),
    "visact.wire": (2, frozenset()),
    "visact.agent": (3, frozenset()),
    "visact.trainer": (3, frozenset()),
    "visact.orchestration": (4, frozenset()),
}


def package_of(module: str) -> str:
    """The longest LAYERS prefix of ``module``."""
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return max(matches, key=len)


def library_modules() -> Iterator[tuple[str, Path]]:
    """(dotted name, file) of every library module, each once (links into visact/ not followed)."""
    for path in sorted((ROOT / "visact").rglob("*.py")):
        if any(part in LINKED for part in path.relative_to(ROOT / "visact").parts[:1]):
            continue
        yield ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"), path
    for folder, package in LINKED.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT / folder).with_suffix("").parts
            yield ".".join((package, *relative)).removesuffix(".__init__"), path


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (the library uses absolute imports only: checked here)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: a relative import; write it absolute"
            prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


MODULES = dict(library_modules())


def library_imports(module: str) -> set[str]:
    """The library modules ``module`` imports."""
    return {name for name in imports_of(MODULES[module]) if name in MODULES and name != module}


def test_every_import_runs_down_the_layers_or_within_its_own_package() -> None:
    upward = []
    for module in MODULES:
        own = package_of(module)
        layer, allowed = LAYERS[own]
        for target in library_imports(module):
            theirs = package_of(target)
            their_layer = LAYERS[theirs][0]
            if theirs == own or their_layer < layer or theirs in allowed:
                continue
            upward.append(f"{module} (layer {layer}) imports {target} (layer {their_layer}, {theirs})")
    assert not upward, "imports that run up a layer or across packages of one layer:\n" + "\n".join(upward)


def test_no_import_loop() -> None:
    graph = {module: library_imports(module) for module in MODULES}
    loops = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1 and not _package_init_of(module, target):
                loops.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not loops, "import loops:\n" + "\n".join(loops)


def _package_init_of(module: str, target: str) -> bool:
    """A package's __init__ re-exporting its own modules is not a loop of modules."""
    return module.startswith(target + ".") or target.startswith(module + ".")


def test_no_library_module_imports_a_top_level_agent_trainer_or_env_server() -> None:
    bare = [
        f"{module}: {name}"
        for module, path in MODULES.items()
        for name in imports_of(path)
        if name.split(".")[0] in LINKED
    ]
    assert not bare, "import them as visact.agent, visact.trainer, visact.env_server:\n" + "\n".join(bare)


def test_no_test_or_bench_imports_a_top_level_agent_trainer_or_env_server() -> None:
    bare = [
        f"{path.relative_to(ROOT)}: {name}"
        for folder in ("tests", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in imports_of(path)
        if name.split(".")[0] in LINKED
    ]
    assert not bare, "\n".join(bare)


def test_only_visact_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["visact*"]
    for folder, package in LINKED.items():
        link = ROOT / "visact" / folder
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve(), (
            f"{package} is not {folder}/"
        )
    scripts = config["project"]["scripts"]
    assert all(target.startswith("visact.") for target in scripts.values()), scripts


@pytest.mark.parametrize("module", ["visact.env_server.server", "visact.env_server.conformance.cli"])
def test_the_environment_side_imports_nothing_of_the_model_or_the_services_above(module: str) -> None:
    reached, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in reached:
            continue
        reached.add(current)
        todo += library_imports(current)
    above = sorted(
        m for m in reached if LAYERS[package_of(m)][0] >= 2 and package_of(m) != "visact.env_server"
    )
    assert not above, above


def test_neither_the_library_nor_a_bench_imports_the_tests() -> None:
    """The tests are not installed: a library module or a bench that imports them breaks outside
    a checkout's root (launch processes with visact.orchestration.processes)."""
    found = []
    for path in [*MODULES.values(), *sorted((ROOT / "bench").rglob("*.py"))]:
        found += [
            f"{path.relative_to(ROOT)}: {name}"
            for name in sorted(imports_of(path))
            if name.split(".")[0] == "tests"
        ]
    assert not found, "\n".join(found)
