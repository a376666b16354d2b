"""Progress: a bar on a terminal, whole lines (no carriage returns) anywhere else."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
from tqdm import tqdm
from transformers.utils import logging as transformers_logging

from visact.progress import ProgressLines, hide_library_bars_off_terminal, progress_bar


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_tqdm_bar_and_anything_else_lines() -> None:
    bar = progress_bar(5, "sft", "step", stream=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress_bar(5, "sft", "step", stream=io.StringIO()), ProgressLines)


def test_lines_come_at_most_every_interval_and_once_at_the_end() -> None:
    out, clock = io.StringIO(), Clock()
    with ProgressLines(200, "eval episodes", "ep", out, interval=30.0, clock=clock) as bar:
        for _ in range(100):
            clock.now += 0.125  # 100 episodes in 12.5 s: no line yet
            bar.update(1)
        assert out.getvalue() == ""
        clock.now += 17.5
        bar.set_postfix(success="98%")
        bar.update(20)  # 30 s after the start: one line
        bar.update(1)  # right after it: none
        assert bar.n == 121
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [
        "eval episodes: 120/200 (60%) 4.0 ep/s, 30 s elapsed, ~20 s left  success=98%",
        "eval episodes: 121/200 (60%) 4.0 ep/s, 30 s elapsed, ~20 s left  success=98%",
    ]


def test_closing_twice_writes_one_final_line_and_nothing_done_says_so() -> None:
    out, clock = io.StringIO(), Clock()
    bar = ProgressLines(3, "PPO updates", "update", out, clock=clock)
    bar.close()
    bar.close()
    assert out.getvalue() == "PPO updates: 0/3 (0%)\n"


@pytest.fixture
def library_bars_restored() -> Iterator[None]:
    yield
    transformers_logging.enable_progress_bar()
    enable_progress_bars()


@pytest.mark.usefixtures("library_bars_restored")
def test_library_bars_are_hidden_only_off_a_terminal() -> None:
    transformers_logging.enable_progress_bar()
    enable_progress_bars()
    assert not hide_library_bars_off_terminal(Terminal())
    assert transformers_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
    assert hide_library_bars_off_terminal(io.StringIO())
    assert not transformers_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
