"""Fixtures shared by the unit tests that load the tiny VLM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh $VISACT_CACHE for one test module: the tiny VLM is built there on first load."""
    path = tmp_path_factory.mktemp("visact-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VISACT_CACHE", str(path))
        yield path
