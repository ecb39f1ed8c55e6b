"""The demo's retry-storm step: both storm runs held against the model in one line and
``storm/check.csv`` (synthetic measured folders; the model really runs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from test_storm import storm_run

from bench.jobs import demo


def test_the_storm_line_holds_both_measured_runs_against_the_model(tmp_path: Path) -> None:
    storm_dir = tmp_path / "storm"
    storm_run(storm_dir, "retry-storm", recovers=False)  # measured: stays down
    storm_run(storm_dir, "retry-storm-fixed", recovers=False)  # measured: down too
    line = demo.storm_line(tmp_path)
    assert line.startswith("retry storms, goodput 12 s after the spike")
    # the storm: the model stays down as the (made-up, 3/s) measurement did; the fix:
    # the model recovers where this measurement did not — a miss, said so
    assert "retry-storm 3/s measured vs 0/s model (both stay down" in line
    assert "retry-storm-fixed 3/s measured vs" in line and "(different fates" in line
    assert line.endswith("MISS)")
    check = pd.read_csv(tmp_path / "storm" / demo.STORM_FILE)
    assert list(check["scenario"]) == list(demo.STORM_SCENARIOS)
    assert check["same_fate"].tolist() == [True, False]


def test_an_unmeasured_storm_is_named_not_guessed(tmp_path: Path) -> None:
    line = demo.storm_line(tmp_path)
    assert "retry-storm not measured" in line and "retry-storm-fixed not measured" in line
    assert not (tmp_path / "storm" / demo.STORM_FILE).exists()


def test_the_storm_commands_run_each_scenario_into_its_own_folder(tmp_path: Path) -> None:
    commands = demo.storm_commands(tmp_path, ["--server-cpus", "1"])
    assert list(commands) == list(demo.STORM_SCENARIOS)
    fixed = commands["retry-storm-fixed"]
    assert fixed[:4] == ["-m", "bench", "run", "--scenario"]
    assert "scenarios/retry-storm-fixed.toml" in fixed
    assert str(tmp_path / "storm" / "retry-storm-fixed") in fixed and fixed[-2:] == [
        "--server-cpus",
        "1",
    ]


def test_the_notebook_gets_each_storm_run_made_as_a_python_literal(tmp_path: Path) -> None:
    from bench.jobs.notebooks import parse_params

    storm_run(tmp_path / "storm", "retry-storm", recovers=False)
    params = demo.storm_notebook_params(tmp_path)
    assert len(params) == 1  # the fix was not run: not named
    parsed = parse_params(params, ["breakers-and-retries"])
    assert parsed["breakers-and-retries"] == {
        "measured_storm_dir": str(tmp_path / "storm" / "retry-storm")
    }
