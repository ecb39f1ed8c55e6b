"""The generator benchmark: a quick real run writes its files; capacity picks sustained rows;
the verdict holds the capacity row against the pipelined bare loop, per CPU-second.

No figure is asserted (benchmarks measure, tests check behaviour): only that the run
finishes, writes a manifest and a CSV in the documented schema, and says its verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.micro import genbench
from chatcap.results import read_manifest, read_table


def test_a_quick_run_writes_its_manifest_and_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--quick", "--loads", "100", "--processes", "1", "--users", "10", "--room-size", "5",
        "--duration-s", "3", "--bare-s", "0.3", "--out", str(tmp_path),
    ]  # fmt: skip
    assert genbench.main(argv) == 0, capsys.readouterr()

    (run_dir,) = tmp_path.iterdir()
    manifest = read_manifest(run_dir)
    assert manifest["loads"] == [100.0] and manifest["processes"] == [1]
    assert manifest["targets"]["msgs_per_cpu_s"] == genbench.TARGET_MSGS_PER_CPU_S
    assert set(manifest["cpus"]) >= {"server_cpus", "generator_cpus", "isolated"}
    rows = read_table(run_dir / "generator.csv", genbench.GEN_COLUMNS)
    assert [r["kind"] for r in rows] == ["bare-sync", "bare-sync-pipelined", "locust"]
    locust = rows[-1]
    assert locust["processes"] == 1 and locust["users"] == 10 and locust["room_size"] == 5
    assert locust["msgs_per_s"] > locust["sent_per_s"] > 0
    assert locust["schedule_lag_p99_ms"] >= 0
    assert rows[0]["msgs_per_s"] > 0 and rows[0]["cpu_pct"] > 0
    assert (run_dir / "p1" / "points" / "json-100-r0" / "chat.json").exists()
    printed = capsys.readouterr().out
    assert "bare websockets.sync echo loop" in printed and "msgs/s" in printed
    assert "× the pipelined bare loop per CPU-second" in printed


def test_bad_input_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert genbench.main(["--loads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def row(processes: int, msgs: float, sustained: bool) -> dict[str, Any]:
    return {"kind": "locust", "processes": processes, "msgs_per_s": msgs, "sustained": sustained}


def test_capacity_is_the_most_messages_per_second_among_sustained_loads() -> None:
    rows = [row(1, 5_000, True), row(1, 9_000, True), row(1, 12_000, False), row(2, 15_000, True)]
    cap = genbench.capacity(rows, 1)
    assert cap is not None and cap["msgs_per_s"] == 9_000
    assert genbench.capacity(rows, 3) is None
    assert genbench.capacity([row(1, 12_000, False)], 1) is None


def per_cpu(kind: str, msgs_per_cpu_s: float) -> dict[str, Any]:
    return {"kind": kind, "processes": 1, "msgs_per_cpu_s": msgs_per_cpu_s}


@pytest.mark.parametrize(
    ("ours", "pipelined", "passes"),
    [
        (40_000.0, 70_000.0, True),  # ≥ 35k and 0.57× the pipelined loop
        (40_000.0, 90_000.0, False),  # ≥ 35k but only 0.44× a faster pipelined loop
        (30_000.0, 50_000.0, False),  # 0.6× but under 35k
        (35_000.0, 70_000.0, True),  # both exactly at their targets
    ],
)
def test_the_verdict_needs_both_the_absolute_and_the_pipelined_share(
    ours: float, pipelined: float, passes: bool
) -> None:
    verdict = genbench.judge(per_cpu("locust", ours), per_cpu("bare-sync-pipelined", pipelined))
    assert verdict["pass"] is passes
    assert verdict["share_of_pipelined_per_cpu_s"] == pytest.approx(ours / pipelined)
    assert verdict["line"].endswith("PASS" if passes else "MISS")


def test_no_capacity_or_no_pipelined_loop_is_a_miss() -> None:
    assert genbench.judge(None, per_cpu("bare-sync-pipelined", 60_000))["pass"] is False
    verdict = genbench.judge(per_cpu("locust", 50_000), None)
    assert verdict["pass"] is False and verdict["share_of_pipelined_per_cpu_s"] is None


def test_summarize_judges_the_one_process_capacity_not_a_faster_unsustained_load() -> None:
    rows = [
        {**per_cpu("bare-sync", 12_000), "msgs_per_s": 6_000},
        {**per_cpu("bare-sync-pipelined", 60_000), "msgs_per_s": 45_000},
        {**row(1, 11_000, True), "msgs_per_cpu_s": 36_000, "offered_per_s": 1000, "cpu_pct": 30},
        {**row(1, 16_000, False), "msgs_per_cpu_s": 50_000, "offered_per_s": 1500, "cpu_pct": 32},
    ]
    out = genbench.summarize(rows, [1])
    assert out["capacity"][1]["offered_per_s"] == 1000  # the unsustained 1500 never counts
    assert out["judged"]["msgs_per_cpu_s"] == 36_000 and out["judged"]["pass"] is True


def test_no_scaling_figure_when_one_process_already_kept_the_top_load() -> None:
    kinds = ("bare-sync", "bare-sync-pipelined")
    bare = [{**per_cpu(kind, 60_000), "msgs_per_s": 1.0} for kind in kinds]
    kept = {"msgs_per_cpu_s": 50_000, "cpu_pct": 40}
    rows = [
        *bare,
        {**row(1, 22_000, True), **kept, "offered_per_s": 2000},
        {**row(2, 22_000, True), **kept, "offered_per_s": 2000, "processes": 2},
    ]
    out = genbench.summarize(rows, [1, 2])
    assert out["scaling_2_over_1"] is None
    assert any("scaling is not measured" in line for line in out["lines"])
    rows[2]["offered_per_s"] = 1000  # one process stopped below the top: scaling measured
    assert genbench.summarize(rows, [1, 2])["scaling_2_over_1"] == 1.0
