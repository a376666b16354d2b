"""Progress on long work: a tqdm bar on a terminal, plain log lines anywhere else.

A tqdm bar redraws itself with carriage returns; written to a file, a container's log or a CI
console that is one ever-growing line. ``progress_bar`` gives the bar when the output is a
terminal and otherwise a ``ProgressLines`` with the same small interface (``update``,
``set_postfix``, ``n``, ``close``, a context manager) that prints a whole line at most every
``interval`` seconds, and one at the end::

    eval episodes: 120/200 (60%) 7.7 ep/s, 16 s elapsed, ~10 s left  success=98%
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

#: seconds between two lines when the output is not a terminal
LINE_INTERVAL = 30.0


class ProgressLines:
    """``tqdm``'s ``update``/``set_postfix``/``close`` as whole lines, for output that is not a terminal."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        stream: TextIO,
        interval: float = LINE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.interval, self.clock = interval, clock
        self.n = 0
        self.postfix = ""
        self.start = self.last_line = clock()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last_line >= self.interval:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = "  ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _line(self) -> None:
        now = self.clock()
        self.last_line = now
        elapsed = now - self.start
        line = f"{self.desc}: {self.n}/{self.total}"
        if self.total:
            line += f" ({self.n / self.total:.0%})"
        if elapsed > 0 and self.n:
            rate = self.n / elapsed
            line += f" {rate:.1f} {self.unit}/s, {elapsed:.0f} s elapsed"
            if self.n < self.total:
                line += f", ~{(self.total - self.n) / rate:.0f} s left"
        line += f"  {self.postfix}" if self.postfix else ""
        print(line, file=self.stream, flush=True)


def hide_library_bars_off_terminal(stream: TextIO | None = None) -> bool:
    """Turn off transformers' and the hub's own bars (loading weights, downloads) when ``stream``
    (default: stderr) is not a terminal. Returns whether it did."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        return False
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    disable_progress_bars()
    return True


def progress_bar(total: int, desc: str, unit: str, stream: TextIO | None = None) -> Any:
    """A tqdm bar when ``stream`` (default: stderr) is a terminal, else ``ProgressLines``."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return ProgressLines(total, desc, unit, stream)
