"""Benchmark worker for the ceiling: the game stepped in this process, no transport at all.

    python bench/peers/inprocess_worker.py

What the original RL4VLM loop does: ``env.step(action)`` then the observation
(``render()``: the frame, which NumberLine draws once per state and hands out read-only,
so no copy; the task text; the legal actions).
``inprocess_png`` also encodes each frame to PNG and decodes it again, as every
PNG configuration here does somewhere: it is the cost of PNG alone.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's env_server
sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness
import harness

from visact.env_server.games.numberline import NumberLine


class InProcessSession:
    def __init__(self, encoding: str) -> None:
        self.env = NumberLine()
        self.png = encoding == "png"
        self.seed = 0

    def _observe(self) -> Sequence[str]:
        image = self.env.render()
        if self.png:
            image = harness.png_decode(harness.png_encode(image))
        assert image.shape == (harness.IMAGE_SIDE, harness.IMAGE_SIDE, 3)
        self.env.task_text()
        return self.env.legal_actions()

    def reset(self) -> Sequence[str]:
        self.seed += 1
        self.env.reset(seed=self.seed)
        return self._observe()

    def step(self, action: str) -> tuple[Sequence[str], bool]:
        outcome = self.env.step(action)
        return self._observe(), outcome.terminated or outcome.truncated


def main() -> None:
    harness.serve_commands(
        {
            "inprocess_1_raw": harness.one_session(InProcessSession("raw")),
            "inprocess_1_png": harness.one_session(InProcessSession("png")),
        }
    )


if __name__ == "__main__":
    main()
