"""The results schema: run folders round-trip; malformed ones name file, line and column."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chatcap.results import (
    REQUEST_COLUMNS,
    SUMMARY_COLUMNS,
    ResultsError,
    new_manifest,
    new_run_id,
    read_run,
    schema_markdown,
    write_run,
)

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_BY_DESIGN = [
    "source",
    "codec",
    "offered_per_s",
    "acked_per_s",
    "delivered_per_s",
    "ack_mean_ms",
    "ack_p50_ms",
    "ack_p99_ms",
    "deliver_p50_ms",
    "deliver_p99_ms",
    "error_rate",
    "server_cpu_us_per_msg",
    "bytes_per_msg",
    "run_id",
    "scenario",
    "replication",
    "seed",
]


def summary_row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": "r1",
        "scenario": "smoke",
        "source": "sim",
        "codec": "json",
        "replication": 0,
        "seed": 11,
        "offered_per_s": 100.0,
        "acked_per_s": 99.5,
        "delivered_per_s": 995.0,
        "ack_mean_ms": 1.5,
        "ack_p50_ms": 1.2,
        "ack_p99_ms": 7.5,
        "deliver_p50_ms": 1.4,
        "deliver_p99_ms": 8.0,
        "error_rate": 0.005,
        "server_cpu_us_per_msg": float("nan"),
        "bytes_per_msg": 211.0,
    }
    row.update(over)
    return row


def manifest(run_id: str = "r1") -> dict[str, Any]:
    return new_manifest(
        run_id, ["python", "-m", "sim"], "2026-11-26T19:00:00Z", scenario={"name": "smoke"}, seed=11
    )


def test_summary_columns_include_everything_design_md_promises() -> None:
    names = {c.name for c in SUMMARY_COLUMNS if c.required}
    assert set(REQUIRED_BY_DESIGN) <= names


def test_a_run_folder_round_trips(tmp_path: Path) -> None:
    rows = [summary_row(), summary_row(codec="protobuf", replication=1, generator_bound=True)]
    reqs = [
        {
            "run_id": "r1",
            "source": "sim",
            "codec": "json",
            "replication": 0,
            "offered_per_s": 100.0,
            "user": 3,
            "room": 1,
            "msg": 0,
            "attempt": 1,
            "intended_s": 1.0,
            "sent_s": 1.0,
            "done_s": 1.002,
            "outcome": "acked",
            "ack_ms": 2.0,
        }
    ]
    write_run(tmp_path / "r1", manifest(), rows, reqs)
    run = read_run(tmp_path / "r1")
    assert run.manifest["seed"] == 11
    assert run.manifest["machine"]["python"].startswith("3.")
    assert len(run.summary) == 2
    assert run.summary[1]["generator_bound"] is True
    assert run.summary[0]["generator_bound"] is None
    assert math.isnan(run.summary[0]["server_cpu_us_per_msg"])
    assert run.summary[0]["ack_p99_ms"] == 7.5
    assert run.requests()[0]["outcome"] == "acked"
    assert list(run.summary_frame()["codec"]) == ["json", "protobuf"]


def test_missing_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    with pytest.raises(ResultsError, match=r"r/manifest.json: missing"):
        read_run(tmp_path / "r")


def test_malformed_manifest_names_the_file_and_line(tmp_path: Path) -> None:
    write_run(tmp_path / "r1", manifest(), [summary_row()])
    (tmp_path / "r1" / "manifest.json").write_text('{\n"run_id": }')
    with pytest.raises(ResultsError, match=r"manifest.json: not valid JSON \(line 2"):
        read_run(tmp_path / "r1")


def test_manifest_missing_key_is_named(tmp_path: Path) -> None:
    write_run(tmp_path / "r1", manifest(), [summary_row()])
    path = tmp_path / "r1" / "manifest.json"
    data = json.loads(path.read_text())
    del data["git_sha"]
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"missing key.*git_sha"):
        read_run(tmp_path / "r1")


def test_summary_missing_column_is_named(tmp_path: Path) -> None:
    write_run(tmp_path / "r1", manifest(), [summary_row()])
    path = tmp_path / "r1" / "summary.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    idx = header.index("ack_p99_ms")
    cut = [",".join(f for i, f in enumerate(line.split(",")) if i != idx) for line in lines]
    path.write_text("\n".join(cut) + "\n")
    with pytest.raises(ResultsError, match=r"summary.csv: missing column\(s\) ack_p99_ms"):
        read_run(tmp_path / "r1")


def test_summary_malformed_value_names_line_and_column(tmp_path: Path) -> None:
    write_run(tmp_path / "r1", manifest(), [summary_row(), summary_row()])
    path = tmp_path / "r1" / "summary.csv"
    text = path.read_text().splitlines()
    text[2] = text[2].replace("99.5", "fast")
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(
        ResultsError, match=r"summary.csv line 3: column 'acked_per_s' must be float"
    ):
        read_run(tmp_path / "r1")


def test_unknown_source_is_refused_when_writing(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="'source' is 'guess'; allowed: measured, sim, theory"):
        write_run(tmp_path / "r1", manifest(), [summary_row(source="guess")])


def test_unknown_column_is_refused_when_writing(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"unknown column\(s\) p42"):
        write_run(tmp_path / "r1", manifest(), [summary_row(p42=1.0)])


def test_run_ids_are_sortable_and_safe() -> None:
    now = datetime(2026, 11, 26, 19, 45, 0, tzinfo=UTC)
    assert new_run_id(now) == "20261126T194500Z"
    assert new_run_id(now, "codecs / quick") == "20261126T194500Z-codecs-quick"
    with pytest.raises(ResultsError):
        new_manifest("../escape", [], "t")


def test_results_readme_documents_every_column() -> None:
    text = (ROOT / "results" / "README.md").read_text()
    assert schema_markdown(SUMMARY_COLUMNS) in text
    assert schema_markdown(REQUEST_COLUMNS) in text
