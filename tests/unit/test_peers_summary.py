"""The peers benchmark's arithmetic (bench/peers/ratios.py, report.py): ratios, goals and floors from samples."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

PEERS = Path(__file__).resolve().parents[2] / "bench" / "peers"


@pytest.fixture(scope="module")
def run() -> SimpleNamespace:
    """The benchmark's arithmetic and tables (bench/peers/ratios.py, report.py, systems.py) as one
    module, imported as run.py imports them (its folder on the path)."""
    if str(PEERS) not in sys.path:
        sys.path.append(str(PEERS))
    ratios, report, systems = (importlib.import_module(name) for name in ("ratios", "report", "systems"))
    return SimpleNamespace(
        Config=systems.Config, summarize=ratios.summarize, markdown_bounds=report.markdown_bounds
    )


SAMPLES = {
    "inprocess_1_raw": [100_000.0, 90_000.0, 110_000.0],
    "inprocess_1_png": [800.0],
    "floor_1_raw_spin": [400_000.0],
    "floor_1_raw_grpc": [1_000.0],
    "floor_1_png_grpc": [700.0],
    "visact_1_raw": [900.0],
    "visact_1_png": [680.0],
    "dm_env_rpc_1_raw": [450.0],
    "dm_env_rpc_1_png": [300.0],
    "visact_16_raw_batch": [1_200.0],
    "visact_16_raw_batch_stream": [1_300.0],
    "dm_env_rpc_16_raw_pipelined": [600.0],
}
SYSTEM_OF = {"inprocess": "inprocess", "floor": "floor", "visact": "visact", "dm": "dm_env_rpc"}


def summary_of(run: SimpleNamespace, samples: dict[str, list[float]]) -> dict:
    configs = {name: run.Config.parse(name, SYSTEM_OF[name.split("_")[0]]) for name in samples}
    return run.summarize(configs, samples)


def test_ratios_use_the_median_in_process_rate(run: SimpleNamespace) -> None:
    summary = summary_of(run, SAMPLES)
    row = next(r for r in summary["rows"] if r["config"] == "visact_1_raw")
    assert row["x_in_process_raw"] == pytest.approx(900 / 100_000)
    assert row["x_best_dm_env_rpc"] == pytest.approx(2.0)
    assert math.isnan(row["x_best_OpenEnv"])  # no OpenEnv measured: no ratio, not a crash


def test_goals_compare_visact_with_peers_never_with_floors(run: SimpleNamespace) -> None:
    goals = summary_of(run, SAMPLES)["goals"]
    assert all(not g["theirs"].startswith("floor") and not g["ours"].startswith("floor") for g in goals)
    one_session = {g["where"].split(":")[0]: g for g in goals if g["goal"].startswith("one session")}
    assert one_session["1 session, raw"]["ratio"] == pytest.approx(0.009)
    assert not one_session["1 session, raw"]["holds"]
    assert one_session["1 session, png"]["ratio"] == pytest.approx(0.85)
    assert one_session["1 session, png"]["holds"]
    batched = next(g for g in goals if g["goal"].startswith("16 sessions"))
    assert (batched["ours"], batched["ratio"], batched["holds"]) == (
        "visact_16_raw_batch_stream",
        1300 / 600,
        True,
    )


def test_floors_are_bounds_against_the_ceiling_and_visact(run: SimpleNamespace) -> None:
    summary = summary_of(run, SAMPLES)
    bounds = {b["config"]: b for b in summary["bounds"]}
    assert set(bounds) == {"floor_1_raw_spin", "floor_1_raw_grpc", "floor_1_png_grpc"}
    assert bounds["floor_1_raw_grpc"]["x_in_process"] == pytest.approx(0.01)
    assert bounds["floor_1_raw_grpc"]["visact_step_x_floor"] == pytest.approx(0.9)
    assert bounds["floor_1_png_grpc"]["x_in_process"] == pytest.approx(700 / 800)
    assert bounds["floor_1_raw_spin"]["x_in_process"] == pytest.approx(4.0)
    table = run.markdown_bounds(summary)
    assert table.count("\n") == 2 + 3  # header, rule, one line per floor
    assert "| 400,000 | 4.000 |" in table
    groups = {r["group"] for r in summary["rows"]}
    assert groups == {"1 session, raw", "1 session, png", "16 sessions, raw"}  # floors add no group


def test_without_floors_there_is_no_bounds_table(run: SimpleNamespace) -> None:
    samples = {k: v for k, v in SAMPLES.items() if not k.startswith("floor")}
    assert run.markdown_bounds(summary_of(run, samples)) == ""
