"""Fixtures shared by the unit tests that load VLMs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh $VISACT_CACHE for one test module: the tiny VLM is built there on first load."""
    path = tmp_path_factory.mktemp("visact-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VISACT_CACHE", str(path))
        yield path


@pytest.fixture
def checkpoint_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts transformers' checkpoint calls (one per checkpointed layer per forward with grad)."""
    import transformers.modeling_utils

    calls = [0]
    real = transformers.modeling_utils.checkpoint

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting)  # read when it is enabled
    return calls
