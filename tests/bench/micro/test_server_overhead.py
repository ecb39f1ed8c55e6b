"""``python -m bench server-overhead`` at toy size writes its run folder as documented.

Starts the real servers (ours and the bare websockets baseline) as subprocesses and the
load client as another; checks files, columns and that CPU and memory figures are
positive — never a speed or a ratio.
"""

import csv
import math
from pathlib import Path

import pytest

from bench.micro import server_overhead
from bench.micro.server_overhead import OVERHEAD_COLUMNS, TARGETS
from chatcap.results import read_manifest, read_table

# Big enough that every case spends several clock ticks (10 ms) of server CPU, since
# /proc/<pid>/stat counts in ticks; small enough for a few seconds in all.
ECHO_MESSAGES, FANOUT_MESSAGES, ROOM_SIZE, IDLE_CONNECTIONS = 2000, 1000, 5, 50
TINY = [
    "--quick",
    "--repeat", "1",
    "--messages", str(ECHO_MESSAGES),
    "--fanout-messages", str(FANOUT_MESSAGES),
    "--room-size", str(ROOM_SIZE),
    "--fanout-window", "5",
    "--idle-connections", str(IDLE_CONNECTIONS),
    "--timeout-s", "30",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("overhead")
    assert server_overhead.main([*TINY, "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    return folder


def test_tiny_run_writes_manifest_and_overhead_csv_only(run_dir: Path) -> None:
    assert {p.name for p in run_dir.iterdir()} == {"manifest.json", "overhead.csv"}
    manifest = read_manifest(run_dir)
    assert manifest["run_id"] == run_dir.name
    assert manifest["statistic"] == "median"
    assert manifest["failures"] == []
    assert manifest["scenario"]["server"]["rate_limit"]["algorithm"] == "none"
    assert {"ours", "bare-echo", "bare-broadcast"} <= set(manifest["servers"])


def test_overhead_csv_has_the_documented_columns(run_dir: Path) -> None:
    with (run_dir / "overhead.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header == [c.name for c in OVERHEAD_COLUMNS]
    assert header[:11] == [
        "run_id", "case", "impl", "codec", "repeat", "messages", "deliveries",
        "server_cpu_s", "cpu_us_per_msg", "cpu_us_per_delivery", "rss_kib_per_conn",
    ]  # fmt: skip


def test_every_case_impl_and_codec_has_one_row(run_dir: Path) -> None:
    rows = read_table(run_dir / "overhead.csv", OVERHEAD_COLUMNS)
    keys = sorted((r["case"], r["impl"], r["codec"]) for r in rows)
    expected = [(case, "bare", "none") for case in ("echo", "fanout", "idle")]
    expected += [(case, "ours", c) for case in ("echo", "fanout") for c in ("json", "protobuf")]
    assert keys == sorted([*expected, ("idle", "ours", "json")])
    assert {r["run_id"] for r in rows} == {run_dir.name}
    assert {r["repeat"] for r in rows} == {0}


def test_message_cases_count_every_message_and_delivery_with_positive_cpu(
    run_dir: Path,
) -> None:
    rows = read_table(run_dir / "overhead.csv", OVERHEAD_COLUMNS)
    for row in rows:
        if row["case"] == "idle":
            continue
        members = 1 if row["case"] == "echo" else ROOM_SIZE
        if row["impl"] == "ours":  # the sending connection gets its Ack, not a Deliver
            members -= 1
        sent = ECHO_MESSAGES if row["case"] == "echo" else FANOUT_MESSAGES
        assert row["messages"] == sent, row
        assert row["deliveries"] == row["messages"] * members, row
        assert row["server_cpu_s"] > 0, row
        assert row["cpu_us_per_msg"] > 0, row
        assert row["cpu_us_per_delivery"] > 0 or row["deliveries"] == 0, row
        assert math.isnan(row["rss_kib_per_conn"]), row


def test_idle_rows_report_positive_memory_per_connection(run_dir: Path) -> None:
    rows = read_table(run_dir / "overhead.csv", OVERHEAD_COLUMNS)
    idle = [r for r in rows if r["case"] == "idle"]
    assert len(idle) == 2
    for row in idle:
        assert row["connections"] == IDLE_CONNECTIONS
        assert row["rss_kib_per_conn"] > 0, row
        assert row["messages"] == 0 and math.isnan(row["cpu_us_per_msg"])


def test_targets_name_a_figure_column_for_every_case() -> None:
    names = {c.name for c in OVERHEAD_COLUMNS}
    assert {column for column, _, _ in TARGETS.values()} <= names
