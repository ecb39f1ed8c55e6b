"""The generator benchmark: a quick real run writes its files; capacity picks sustained rows.

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
    assert manifest["targets"]["msgs_per_s"] == genbench.TARGET_MSGS_PER_S
    rows = read_table(run_dir / "generator.csv", genbench.GEN_COLUMNS)
    assert [r["kind"] for r in rows] == ["bare-sync", "bare-sync-pipelined", "locust"]
    locust = rows[-1]
    assert locust["processes"] == 1 and locust["users"] == 10 and locust["room_size"] == 5
    assert locust["msgs_per_s"] > locust["sent_per_s"] > 0
    assert rows[0]["msgs_per_s"] > 0 and rows[0]["cpu_pct"] > 0
    assert (run_dir / "p1" / "points" / "json-100-r0" / "chat.json").exists()
    printed = capsys.readouterr().out
    assert "bare websockets.sync echo loop" in printed and "msgs/s" in printed


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
