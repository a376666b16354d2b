"""What every benchmark worker shares: the command loop, the stepping loops, PNG helpers.

Runs in every venv (the project's and each peer's), so it needs only the standard
library, numpy and Pillow. A worker owns some *configurations* (one way of stepping
the game); the orchestrator (``run.py``) asks it, one at a time, to run one of them
for some seconds and gets back how many steps it took. Only action steps count:
resets (one round trip each, for every system) cost time but are not counted.

Protocol: one JSON object per line. The orchestrator writes ``{"cmd": "configs"}``,
``{"cmd": "run", "config": NAME, "seconds": S}`` or ``{"cmd": "quit"}`` to the
worker's stdin; the worker answers each with one line on stdout. Logs go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

REPO = Path(__file__).resolve().parents[2]
IMAGE_SIDE = 300  # NumberLine's frames are 300x300 RGB

#: A configuration: run for about ``seconds`` and return the number of action steps taken.
Runner = Callable[[float], int]


def use_repo_sources() -> None:
    """Import the game from this checkout (``visact.env_server.games.numberline``)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def tune_allocator() -> None:
    """Raise glibc's mmap threshold in this process, as every visact process does
    (``visact.memory``): by default each 270 KB buffer is mapped and unmapped afresh, which
    triples a PNG decode here (~490 us -> ~170 us) and slows every copy of a raw frame. Every
    worker and server of every system calls this, so that no row gains from the allocator alone."""
    use_repo_sources()
    from visact.memory import tune_allocator as tune

    tune()


tune_allocator()


def png_encode(frame: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 frame, made by visact's encoder (``visact.images``).

    Every system here encodes and decodes PNG with visact's codec, so that the PNG rows
    compare transports, not codecs (a user of a peer would more likely call Pillow, which
    takes 1.7-2.9 ms per 300x300 frame here against 0.5 ms).
    """
    from visact.images import png_bytes

    return png_bytes(frame)


def png_decode(data: bytes) -> np.ndarray:
    """An (H, W, 3) uint8 array from PNG bytes, with visact's decoder (what its client does)."""
    from visact.images import decode_png

    return decode_png(data)


class Session(Protocol):
    """One environment session as the stepping loops see it."""

    def reset(self) -> Sequence[str]:
        """Start an episode; returns the legal actions."""

    def step(self, action: str) -> tuple[Sequence[str], bool]:
        """Take an action; returns (legal actions, episode over)."""


def one_session(session: Session, seed: int = 0) -> Runner:
    """Step one session as fast as the client allows; reset when an episode ends."""
    rng = np.random.default_rng(seed)

    def run(seconds: float) -> int:
        legal = session.reset()
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            legal, done = session.step(legal[int(rng.integers(len(legal)))])
            steps += 1
            if done:
                legal = session.reset()
        return steps

    return run


def sessions_in_turn(sessions: Sequence[Session], seed: int = 0) -> Runner:
    """Step many sessions one call after another (no batching, no concurrency)."""
    rng = np.random.default_rng(seed)

    def run(seconds: float) -> int:
        legal = [s.reset() for s in sessions]
        steps, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            for i, session in enumerate(sessions):
                actions = legal[i]
                legal[i], done = session.step(actions[int(rng.integers(len(actions)))])
                if done:
                    legal[i] = session.reset()
            steps += len(sessions)
        return steps

    return run


def serve_commands(configs: dict[str, Runner], close: Callable[[], None] | None = None) -> None:
    """Answer the orchestrator's commands on stdin/stdout until "quit" or end of input."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # nothing else may write to the command channel
    for line in sys.stdin:
        command: dict[str, Any] = json.loads(line)
        if command["cmd"] == "configs":
            reply: dict[str, Any] = {"configs": list(configs)}
        elif command["cmd"] == "run":
            start = time.perf_counter()
            steps = configs[command["config"]](float(command["seconds"]))
            elapsed = time.perf_counter() - start
            reply = {"steps": steps, "seconds": elapsed, "rate": steps / elapsed}
        elif command["cmd"] == "quit":
            break
        else:
            reply = {"error": f"unknown command {command['cmd']!r}"}
        out.write(json.dumps(reply) + "\n")
    if close is not None:
        close()
    out.write(json.dumps({"bye": True}) + "\n")
