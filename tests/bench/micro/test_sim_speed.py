"""``python -m bench sim-speed --quick`` writes its run folder with the documented columns.

Checks files and sanity only, never a speed.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from bench.micro import sim_speed
from chatcap.results import read_manifest, read_table
from sim.theory import mmc


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim-speed")
    assert sim_speed.main(["--quick", "--repeat", "1", "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    return folder


def test_quick_run_writes_the_manifest_and_the_speed_table(run_dir: Path) -> None:
    assert {p.name for p in run_dir.iterdir()} == {"manifest.json", "speed.csv"}
    manifest = read_manifest(run_dir)
    assert manifest["run_id"] == run_dir.name
    assert manifest["quick"] is True
    assert manifest["scenario"]["name"] == "baseline"
    assert manifest["timing"]["statistic"] == "median"
    assert manifest["sweep"]["points"] * manifest["sweep"]["replications"] == 16


def test_speed_csv_has_the_documented_columns_and_a_row_per_figure(run_dir: Path) -> None:
    path = run_dir / "speed.csv"
    with path.open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header == ["run_id", "case", "metric", "value", "unit", "target", "verdict"]
    assert header == [c.name for c in sim_speed.SPEED_COLUMNS]
    rows = read_table(path, sim_speed.SPEED_COLUMNS)
    figures = {(r["case"], r["metric"]) for r in rows}
    assert figures == {
        ("model", "sends_per_s"),
        ("bare_simpy", "customers_per_s"),
        ("bare_simpy", "mean_wait_rel_error_vs_erlang_c"),
        ("model_vs_bare", "ratio"),
        ("sweep", "wall_s"),
        ("sweep", "runs"),
    }
    for r in rows:
        assert r["run_id"] == run_dir.name
        assert math.isfinite(r["value"])
        assert r["verdict"] in ("pass", "fail", "info")
        assert (r["verdict"] == "info") == (r["target"] == "" or r["case"] == "sweep")


def test_the_bare_model_is_the_m_m_c_queue_it_claims_to_be() -> None:
    rate, wait = sim_speed.bare_mmc(100_000, servers=2, rho=0.5, seed=7)
    assert rate > 0
    assert wait == pytest.approx(mmc(1.0, 1.0, 2).mean_wait_s, rel=0.1)
