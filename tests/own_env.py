"""An environment of one's own for tests: docs/protocol.md's Coin, as a user would write it."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
EXTRAS = """
from my_games.coin import Coin

def make_coin():
    return Coin()

def make_a_string():
    return "coin"

NOT_AN_ENV = 3
"""


def docs_example() -> str:
    """The Python block under 'Adding an environment in Python' in docs/protocol.md."""
    section = DOCS.read_text().split("## Adding an environment in Python", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "docs/protocol.md lost its Python example"
    return found.group(1)


def write_my_games(root: Path) -> Path:
    """``root/my_games``: ``coin.py`` (the docs' example as written) and ``extras.py`` (factories,
    right and wrong); ``root`` is what goes on ``PYTHONPATH``."""
    package = root / "my_games"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "coin.py").write_text(docs_example())
    (package / "extras.py").write_text(EXTRAS)
    return package
