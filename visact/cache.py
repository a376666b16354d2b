"""Where visact keeps what it builds or computes once: ``$VISACT_CACHE`` or ``~/.cache/visact``.

Torch-free, so that both sides use it: the agent's tiny VLM (``agent.tiny_vlm``) and the
environment side's caches (ALFWorld's translated games).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$VISACT_CACHE`` or ``~/.cache/visact``."""
    env = os.environ.get("VISACT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "visact"
