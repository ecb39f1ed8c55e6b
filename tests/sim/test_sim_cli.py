"""``python -m sim``: a readable run folder, progress and a table; bad input in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from chatcap.results import read_run
from chatcap.scenario import parse_value
from sim.cli import main, parse_assignment, parse_axis

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "scenarios" / "smoke.toml")


def test_the_cli_writes_a_readable_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["--scenario", SMOKE, "--out", str(out), "--replications", "2", "--workers", "2"]
    assert main([*argv, "--sweep", "server.pool.size=1,2", "--set", "workload.duration_s=3"]) == 0
    run = read_run(out)
    assert run.manifest["grid"] == {"server.pool.size": [1, 2]}
    assert run.manifest["scenario"]["workload"]["duration_s"] == 3.0
    assert len(run.summary) == 2 * 2 * 3  # points × replications × (mix, json, protobuf)
    assert {row["source"] for row in run.summary} == {"sim"}
    requests = run.requests()
    assert requests and {r["replication"] for r in requests} == {0}
    series = pd.read_csv(out / "timeseries.csv")
    assert set(series["point"]) == {0, 1} and "server.pool.size" in series.columns
    assert len(pd.read_csv(out / "sweep.csv")) == 2 * 3
    captured = capsys.readouterr()
    assert "sim [" in captured.err and "4/4 runs" in captured.err
    assert "ack p99 ms" in captured.out and f"wrote {out}" in captured.out


def test_a_measured_log_can_be_replayed(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["--scenario", SMOKE, "--out", str(first), "--replications", "1"]) == 0
    replay = str(first / "requests.csv")
    assert main(["--scenario", SMOKE, "--out", str(second), "--replay", replay]) == 0
    sent = [r["intended_s"] for r in read_run(second).requests() if r["attempt"] == 1]
    logged = [r["intended_s"] for r in read_run(first).requests() if r["attempt"] == 1]
    assert sent == sorted(logged)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sweep", "server.pool.size"], "expected KEY=V1,V2"),
        (["--sweep", "server.pool.nope=1,2"], "unknown key 'nope'"),
        (["--set", "workload.users=0"], "workload.users = 0: must be ≥ 1"),
        (["--replications", "0"], "--replications must be ≥ 1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--replay", "missing.csv"], "replay: missing.csv: no such file"),
    ],
)
def test_bad_input_is_one_error_line_and_status_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--scenario", SMOKE, "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "x").exists()


def test_a_bad_scenario_file_is_rejected_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[workload]\nusers = 5\nwarmup_s = 100.0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "--scenario", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "workload.warmup_s = 100: must be less than workload.duration_s" in proc.stderr


def test_command_line_values_are_read_as_toml() -> None:
    assert parse_value("8") == 8 and parse_value("inf") == float("inf")
    assert parse_value("fixed") == "fixed" and parse_value("true") is True
    assert parse_assignment("server.pool.size=8") == ("server.pool.size", 8)
    assert parse_axis("a.b=1,2.5,x") == ("a.b", [1, 2.5, "x"])


def test_the_cli_holds_a_classic_scenario_against_theory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sim.cli import main as sim_main

    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "theory-erlang-b.toml"
    status = sim_main(
        [
            "--scenario",
            str(scenario),
            "--out",
            str(tmp_path / "run"),
            "--replications",
            "1",
            "--workers",
            "1",
            "--set",
            "workload.duration_s=6",
            "--set",
            "workload.warmup_s=1",
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "theory (Erlang B, c = 8): blocking 0.1219; model 0." in out
