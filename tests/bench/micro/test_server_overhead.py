"""``python -m bench server-overhead`` at toy size writes its run folder as documented.

Starts the real servers (ours, ours over TLS with a throwaway CA, and the bare websockets
baseline) as subprocesses and the load client as another; checks files, columns, that
the TLS rows went over TLS, and that CPU and memory figures are positive — never a
speed or the size of a ratio.
"""

import contextlib
import csv
import io
import math
import re
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
def printed_and_run_dir(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("overhead")
    printed = io.StringIO()  # module scope: capsys is per test
    with contextlib.redirect_stdout(printed):
        status = server_overhead.main([*TINY, "--out", str(out)])
    assert status == 0, printed.getvalue()
    (folder,) = out.iterdir()
    return printed.getvalue(), folder


@pytest.fixture(scope="module")
def run_dir(printed_and_run_dir: tuple[str, Path]) -> Path:
    return printed_and_run_dir[1]


def test_tiny_run_writes_manifest_and_overhead_csv_only(run_dir: Path) -> None:
    assert {p.name for p in run_dir.iterdir()} == {"manifest.json", "overhead.csv"}
    manifest = read_manifest(run_dir)
    assert manifest["run_id"] == run_dir.name
    assert manifest["statistic"] == "median"
    assert manifest["failures"] == []
    assert manifest["scenario"]["server"]["rate_limit"]["algorithm"] == "none"
    assert {"ours", "ours-tls", "ours-nostages", "bare-echo", "bare-broadcast"} <= set(
        manifest["servers"]
    )
    assert " listening on ws://" in manifest["servers"]["ours"]
    assert " listening on wss://" in manifest["servers"]["ours-tls"]


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
    for impl in ("ours", "ours-tls"):
        expected += [(case, impl, c) for case in ("echo", "fanout") for c in ("json", "protobuf")]
        expected.append(("idle", impl, "json"))
    # the paced pair (plain only): lowrate and the highrate it is divided by
    expected += [
        (case, "ours", c) for case in ("lowrate", "highrate") for c in ("json", "protobuf")
    ]
    expected += [(case, "bare", "none") for case in ("lowrate", "highrate")]
    # the echo without stage metrics, per codec
    expected += [("echo", "ours-nostages", c) for c in ("json", "protobuf")]
    assert keys == sorted(expected)
    assert {r["run_id"] for r in rows} == {run_dir.name}
    assert {r["repeat"] for r in rows} == {0}


def test_message_cases_count_every_message_and_delivery_with_positive_cpu(
    run_dir: Path,
) -> None:
    rows = read_table(run_dir / "overhead.csv", OVERHEAD_COLUMNS)
    for row in rows:
        if row["case"] in ("lowrate", "highrate"):  # paced: its own message count
            assert row["messages"] > 0 and row["cpu_us_per_msg"] > 0, row
            continue
        if row["case"] == "idle":
            continue
        members = 1 if row["case"] == "echo" else ROOM_SIZE
        if row["impl"] != "bare":  # the sending connection gets its Ack, not a Deliver
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
    assert len(idle) == 3
    for row in idle:
        assert row["connections"] == IDLE_CONNECTIONS
        assert row["rss_kib_per_conn"] > 0, row
        assert row["messages"] == 0 and math.isnan(row["cpu_us_per_msg"])


def test_targets_name_a_figure_column_for_every_case() -> None:
    names = {c.name for c in OVERHEAD_COLUMNS}
    assert {column for column, _, _ in TARGETS.values()} <= names


# ---------------------------------------------------------------------------- TLS beside plain


def test_the_tls_rows_went_over_tls_with_the_throwaway_certificate(run_dir: Path) -> None:
    tls = read_manifest(run_dir)["tls"]
    assert tls["impl"] == "ours-tls" and "trustme" in tls["certificate"]
    assert set(tls["negotiated"]) == {"echo/json", "echo/protobuf", "fanout/json",
                                      "fanout/protobuf", "idle/json"}  # fmt: skip
    assert all(v.startswith("TLSv1.") for v in tls["negotiated"].values()), tls
    assert not list(run_dir.glob("*.pem"))  # the key stayed in the temporary folder


def test_the_manifest_has_a_tls_over_plain_ratio_per_case_and_codec(run_dir: Path) -> None:
    manifest = read_manifest(run_dir)
    ratios = {(e["case"], e["codec"], e["figure"]): e["ratio"] for e in manifest["tls_vs_plain"]}
    assert set(ratios) == {
        ("echo", "json", "cpu_us_per_msg"), ("echo", "protobuf", "cpu_us_per_msg"),
        ("fanout", "json", "cpu_us_per_delivery"), ("fanout", "protobuf", "cpu_us_per_delivery"),
        ("idle", "json", "rss_kib_per_conn"), ("idle", "json", "server_cpu_s"),
    }  # fmt: skip
    assert all(r > 0 and math.isfinite(r) for r in ratios.values()), ratios
    rows = read_table(run_dir / "overhead.csv", OVERHEAD_COLUMNS)
    by = {(r["case"], r["impl"], r["codec"]): r for r in rows}
    echo = by[("echo", "ours-tls", "json")]["cpu_us_per_msg"]
    assert ratios[("echo", "json", "cpu_us_per_msg")] == pytest.approx(
        echo / by[("echo", "ours", "json")]["cpu_us_per_msg"]
    )  # one repeat: the median is that repeat's ratio


def test_tls_lines_carry_the_ratio_vs_plain_and_no_verdict_while_ours_keeps_its_own(
    run_dir: Path,
) -> None:
    summary = read_manifest(run_dir)["summary"]
    for line in summary:
        if line["impl"] == "ours-tls":
            assert line["ratio_vs_plain"] > 0 and line["ratio_vs_bare"] is None, line
            assert "verdict" not in line and "target" not in line
        elif line["impl"] == "ours" and line["case"] == "highrate":
            assert "verdict" not in line  # lowrate's divisor, no target of its own
        elif line["impl"] == "ours":
            assert line["verdict"] in ("PASS", "MISS") and line["ratio_vs_plain"] is None
            assert line["case"] in ("idle", "lowrate") or line["ratio_vs_bare"] > 0
            assert line["case"] != "lowrate" or line["ratio_low_high"] > 0


def test_the_printed_table_has_a_vs_plain_column_and_the_tls_ratios_line(
    printed_and_run_dir: tuple[str, Path],
) -> None:
    printed, _ = printed_and_run_dir
    header = next(line for line in printed.splitlines() if line.startswith("case"))
    assert "vs bare" in header and "vs plain" in header and "verdict" in header
    block = printed[printed.index("TLS ÷ plain") :]
    for case, codec, figure in [("echo", "json", "cpu_us_per_msg"),
                                ("fanout", "protobuf", "cpu_us_per_delivery"),
                                ("idle", "json", "rss_kib_per_conn")]:  # fmt: skip
        assert re.search(rf"^  {case} +{codec} +{figure} +\d+\.\d\d×$", block, re.M), block


def test_no_tls_leaves_the_tls_rows_out(tmp_path: Path) -> None:
    argv = [*TINY, "--cases", "echo", "--codec", "json", "--messages", "300", "--no-tls"]
    assert server_overhead.main([*argv, "--out", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    rows = read_table(folder / "overhead.csv", OVERHEAD_COLUMNS)
    assert sorted(r["impl"] for r in rows) == ["bare", "ours", "ours-nostages"]
    manifest = read_manifest(folder)
    assert manifest["tls"] is None and manifest["tls_vs_plain"] == []


def test_a_base_scenario_with_tls_on_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*TINY, "--out", str(tmp_path), "--set", 'server.tls.cert_file="c.pem"',
            "--set", 'server.tls.key_file="k.pem"']  # fmt: skip
    assert server_overhead.main(argv) == 2
    assert "server.tls is on in the base scenario" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_stage_metrics_cost_is_ours_over_ours_without_them(
    printed_and_run_dir: tuple[str, Path],
) -> None:
    printed, run_dir = printed_and_run_dir
    by_codec = read_manifest(run_dir)["stage_metrics_vs_none"]["by_codec"]
    assert set(by_codec) == {"json", "protobuf"}
    assert all(0.5 < r < 2.0 for r in by_codec.values())  # a ratio of like to like
    assert "stage metrics (ours ÷ ours-nostages" in printed


def test_stage_ratios_pair_rows_of_one_repeat() -> None:
    def row(impl: str, repeat: int, us: float) -> dict[str, object]:
        return {
            "case": "echo",
            "impl": impl,
            "codec": "json",
            "repeat": repeat,
            "cpu_us_per_msg": us,
        }

    rows = [row("ours", 0, 102.0), row("ours-nostages", 0, 100.0)]
    rows += [row("ours", 1, 210.0), row("ours-nostages", 1, 200.0)]  # a slower repeat
    rows += [row("ours", 2, 99.0)]  # no partner: left out
    assert server_overhead.stage_ratios(rows) == {"json": pytest.approx(1.035)}
    assert "not measured" in server_overhead.format_stage_ratios({})
