"""``python -m bench codecs --quick`` writes its run folder with the documented columns.

Checks files and invariants only (sizes, byte equality), never a speed.
"""

import csv
from pathlib import Path

import pytest

from bench.micro import codec_bench
from chatcap.results import read_manifest, read_table

ENVELOPES = {"ack_small", "deliver_chat", "history_50"}
IMPLS = {
    "ours json",
    "ours protobuf",
    "stdlib json (dict)",
    "orjson (dict)",
    "msgspec.json (dict)",
    "protobuf (dict)",
    "protobuf (pre-built)",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("codecs")
    assert codec_bench.main(["--quick", "--repeat", "1", "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    return folder


def _header(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return next(csv.reader(fh))


def test_quick_run_writes_manifest_and_both_tables(run_dir: Path) -> None:
    assert {p.name for p in run_dir.iterdir()} == {"manifest.json", "codecs.csv", "policy.csv"}
    manifest = read_manifest(run_dir)
    assert manifest["run_id"] == run_dir.name
    assert manifest["timing"]["statistic"] == "median"
    assert all(manifest["protobuf_bytes_match"].values())


def test_codecs_csv_has_the_documented_columns_and_one_row_per_envelope_and_impl(
    run_dir: Path,
) -> None:
    path = run_dir / "codecs.csv"
    assert _header(path) == [
        "run_id",
        "envelope",
        "format",
        "impl",
        "is_ours",
        "bytes",
        "encode_ns",
        "decode_ns",
        "encode_ratio_vs_bare",
        "decode_ratio_vs_bare",
    ]
    rows = read_table(path, codec_bench.CODEC_COLUMNS)
    assert {(r["envelope"], r["impl"]) for r in rows} == {(e, i) for e in ENVELOPES for i in IMPLS}
    assert len(rows) == len(ENVELOPES) * len(IMPLS)
    assert all(r["encode_ns"] > 0 and r["decode_ns"] > 0 for r in rows)
    for r in rows:
        assert r["is_ours"] == r["impl"].startswith("ours")
        if r["impl"] == codec_bench.BARE_REFERENCE[r["format"]]:
            assert r["encode_ratio_vs_bare"] == r["decode_ratio_vs_bare"] == 1.0


def test_ours_gives_the_same_bytes_as_the_bare_library_of_its_format(run_dir: Path) -> None:
    rows = read_table(run_dir / "codecs.csv", codec_bench.CODEC_COLUMNS)
    size = {(r["envelope"], r["impl"]): r["bytes"] for r in rows}
    for envelope in ENVELOPES:
        pb_sizes = {size[(envelope, i)] for i in IMPLS if "protobuf" in i}
        json_sizes = {
            size[(envelope, i)] for i in ("ours json", "msgspec.json (dict)", "orjson (dict)")
        }
        assert len(pb_sizes) == 1, envelope
        assert len(json_sizes) == 1, envelope
        assert size[(envelope, "ours protobuf")] < size[(envelope, "ours json")]
    assert all(codec_bench.protobuf_bytes_match().values())


def test_policy_csv_compares_each_decision_with_one_json_decode(run_dir: Path) -> None:
    path = run_dir / "policy.csv"
    assert _header(path) == [c.name for c in codec_bench.POLICY_COLUMNS]
    rows = read_table(path, codec_bench.POLICY_COLUMNS)
    assert [r["op"] for r in rows] == [
        "breaker try_acquire+on_success",
        "token_bucket try_acquire",
    ]
    for r in rows:
        assert r["reference_op"] == "ours json decode deliver_chat"
        assert r["ratio_vs_reference"] == pytest.approx(
            r["ns_per_op"] / r["reference_ns"], rel=0.01
        )
