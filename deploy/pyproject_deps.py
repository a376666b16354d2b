"""Print the requirements of pyproject.toml, one per line, for a dependencies-only image layer.

    python pyproject_deps.py pyproject.toml [EXTRA ...] [--build]

prints [project].dependencies plus those of each named extra (an extra that names the
project itself, like ``visact[agent]``, is followed), and with ``--build`` also
[build-system].requires. Container builds install these before copying the source, so a
source change does not re-download the dependencies. Standard library only (Python 3.10+:
``tomllib``, else the ``tomli`` that pip vendors).
"""

from __future__ import annotations

import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (e.g. Ubuntu 22.04's python3)
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?(.*)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: dict, extras: list[str], build: bool = False) -> list[str]:
    project = pyproject["project"]
    me = _norm(project["name"])
    optional = project.get("optional-dependencies", {})
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(req: str) -> None:
        match = _NAME.match(req)
        if match and _norm(match.group(1)) == me:
            for extra in (match.group(2) or "").split(","):
                visit(extra.strip())
        elif req not in out:
            out.append(req)

    def visit(extra: str) -> None:
        if not extra or extra in seen_extras:
            return
        if extra not in optional:
            raise SystemExit(f"pyproject_deps: no extra {extra!r}; have {sorted(optional)}")
        seen_extras.add(extra)
        for req in optional[extra]:
            add(req)

    for req in project.get("dependencies", []):
        add(req)
    for extra in extras:
        visit(extra)
    if build:
        for req in pyproject.get("build-system", {}).get("requires", []):
            add(req)
    return out


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--build"]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0], "rb") as f:
        data = tomllib.load(f)
    print("\n".join(requirements(data, args[1:], build="--build" in argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
