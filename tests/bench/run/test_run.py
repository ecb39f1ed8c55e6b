"""The run orchestrator: a real short run for both codecs, bad input, and the pure rules
(load → users, the measured window, generator-bound detection) on synthetic inputs.

The real run starts the server and Locust as subprocesses of ``bench.run`` — pytest's
process imports neither gevent nor asyncio servers. Assertions are about files, counts and
exit codes, never speed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench._support.histo import HistogramSet
from bench._support.metrics_scrape import Scrape
from bench._support.tls import throwaway_tls
from bench.run import cli as run
from bench.run.figures import LAG_P99_MAX_MS, generator_limits, summary_row
from bench.run.points import LoadShape, Point, load_shape
from bench.run.window import Sample, Window, choose_window
from chatcap.results import read_run
from chatcap.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "scenarios" / "smoke.toml"


# ---------------------------------------------------------------------------- a real run


def bucket_edges_ms(value_ms: float) -> tuple[float, float]:
    """The server ack histogram's bucket holding ``value_ms`` (edges in ms)."""
    from itertools import pairwise

    from server.metrics import LATENCY_BUCKETS_S

    edges = [0.0, *(b * 1000 for b in LATENCY_BUCKETS_S)]
    for lo, hi in pairwise(edges):
        if lo <= value_ms <= hi:
            return lo, hi
    return edges[-1], float("inf")


def test_a_short_run_writes_a_valid_run_folder_for_both_codecs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run-both"
    argv = [
        "--scenario", str(SMOKE), "--codec", "json,protobuf", "--loads", "100",
        "--duration-s", "3", "--warmup-s", "0.5", "--sample-s", "0.25",
        "--set", "workload.send_rate_per_user_per_s=10", "--out", str(out),
    ]  # fmt: skip
    assert run.main(argv) == 0, capsys.readouterr()

    result = read_run(out)
    assert result.manifest["command"][:4] == ["python", "-m", "bench", "run"]
    assert result.manifest["scenario"]["name"] == "smoke"
    assert result.manifest["codecs"] == ["json", "protobuf"] and result.manifest["loads"] == [100]
    rows = {r["codec"]: r for r in result.summary}
    assert set(rows) == {"json", "protobuf"}
    for codec, row in rows.items():
        assert row["source"] == "measured" and row["offered_per_s"] == 100
        assert row["acked_total"] > 0 and row["acked_per_s"] > 0 and row["delivered_per_s"] > 0
        assert row["server_cpu_us_per_msg"] > 0
        assert row["ack_p50_ms"] <= row["ack_p99_ms"]
        assert row["server_ack_p99_ms"] >= 0
        # the generator's ack latency contains the server's: at least the lower edge of
        # the server histogram bucket holding its p50, and at most its upper edge plus
        # loopback and generator time
        lo_ms, hi_ms = bucket_edges_ms(row["server_ack_p50_ms"])
        assert lo_ms <= row["ack_p50_ms"] <= hi_ms + 50.0, row
        assert row["bytes_per_msg"] > 120
        point = out / "points" / f"{codec}-100-r0"
        info = json.loads((point / "point.json").read_text())
        assert info["server_rc"] == 0 and info["locust_rc"] == 0
        assert info["users"] == 10
        doc = json.loads((point / "chat.json").read_text())
        assert HistogramSet.from_json(doc["histograms"]).get("ack", codec).count > 0
        for name in ("locust_stats.csv", "locust.html", "server.stderr", "metrics-after.txt"):
            assert (point / name).stat().st_size > 0, name
        assert not (point / "store.db").exists()  # removed without --keep-db
    assert rows["protobuf"]["bytes_per_msg"] < rows["json"]["bytes_per_msg"]
    printed = capsys.readouterr().out
    assert "[run] point 1/2 json" in printed and "[run] point 2/2 protobuf" in printed
    assert "acked/s" in printed  # the table at the end


def test_a_short_run_against_a_tls_server_speaks_wss_and_trusts_the_scenarios_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = throwaway_tls(tmp_path / "tls")  # trusted by nothing but the scenario's ca_file
    out = tmp_path / "run-tls"
    sets = [f'{key}="{path}"' for key, path in tls.overrides().items()]
    argv = [
        "--scenario", str(SMOKE), "--codec", "json", "--loads", "50",
        "--duration-s", "2", "--warmup-s", "0.5", "--sample-s", "0.25",
        "--set", "workload.send_rate_per_user_per_s=10", "--out", str(out),
        *(arg for s in sets for arg in ("--set", s)),
    ]  # fmt: skip
    assert run.main(argv) == 0, capsys.readouterr()

    (row,) = read_run(out).summary
    assert row["acked_total"] > 0 and row["delivered_per_s"] > 0, row
    assert row["server_cpu_us_per_msg"] > 0  # the https scrapes worked
    info = json.loads((out / "points" / "json-50-r0" / "point.json").read_text())
    assert info["server_url"].startswith("wss://127.0.0.1:")
    host = info["locust_argv"][info["locust_argv"].index("--host") + 1]
    assert host.startswith("https://127.0.0.1:")
    doc = json.loads((out / "points" / "json-50-r0" / "chat.json").read_text())
    assert HistogramSet.from_json(doc["histograms"]).get("ack", "json").count > 0
    assert info["server_rc"] == 0 and info["locust_rc"] == 0


def test_a_tls_scenario_whose_ca_file_is_missing_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = throwaway_tls(tmp_path / "tls")
    sets = [f'{key}="{path}"' for key, path in tls.overrides().items()]
    sets.append('server.tls.ca_file="/no/such/ca.pem"')
    argv = ["--scenario", str(SMOKE), "--out", str(tmp_path / "x")]
    argv += [arg for s in sets for arg in ("--set", s)]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert err == "error: server.tls.ca_file = '/no/such/ca.pem': no such file\n"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--codec", "xml"], "--codec"),
        (["--loads", "100,lots"], "--loads"),
        (["--loads", "-5"], "must be > 0"),
        (["--repeat", "0"], "--repeat"),
        (["--duration-s", "2", "--warmup-s", "3"], "warm-up"),
        (["--set", "server.pool.size=0"], "server.pool.size"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--scenario", str(SMOKE), "--out", str(tmp_path / "x"), *extra]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "x").exists()


def test_a_missing_scenario_file_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--scenario", "no/such.toml"]) == 2
    assert "no/such.toml" in capsys.readouterr().err


# ---------------------------------------------------------------------------- load shape


def test_an_offered_load_keeps_the_scenario_rate_and_scales_the_users() -> None:
    baseline = load_scenario(ROOT / "scenarios" / "baseline.toml")  # 1 send/s per user
    shape = load_shape(400, baseline, max_users=1000)
    assert (shape.users, shape.send_rate_per_user_per_s, shape.note) == (400, 1.0, "")
    assert shape.spawn_rate_per_s == 200  # the server's handshake rate per IP
    odd = load_shape(250, baseline.with_overrides({"workload.send_rate_per_user_per_s": 3.0}), 99)
    assert odd.users == 83 and odd.users * odd.send_rate_per_user_per_s == pytest.approx(250)


def test_past_the_user_cap_the_per_user_rate_rises_and_the_note_says_so() -> None:
    baseline = load_scenario(ROOT / "scenarios" / "baseline.toml")  # limit 10/s per user
    shape = load_shape(5000, baseline, max_users=100)
    assert shape.users == 100 and shape.send_rate_per_user_per_s == 50
    assert "capped at 100" in shape.note and "rate limit" in shape.note


# ---------------------------------------------------------------------------- the window


def scrape(connections: float, acks: float, cpu_s: float) -> Scrape:
    return Scrape(
        {
            ("chatcap_connections", (("codec", "json"),)): connections,
            ("chatcap_ack_latency_seconds_count", ()): acks,
            ("chatcap_process_cpu_seconds_total", ()): cpu_s,
            ("chatcap_frames_received_total", (("codec", "json"),)): acks,
        },
        frozenset({"chatcap_connections"}),
    )


def samples(connections: list[float]) -> list[Sample]:
    """One sample per second; 100 acks and 0.01 s of server CPU per second of load."""
    out, acks = [], 0.0
    for t, conns in enumerate(connections):
        acks += 100.0 if conns else 0.0
        out.append(Sample(float(t), scrape(conns, acks, acks / 10_000), {7: 0.5 * t}, (t, 2 * t)))
    return out


def test_the_window_starts_a_warmup_after_all_users_connected_and_ends_before_the_stop() -> None:
    trace = samples([0, 4, 10, 10, 10, 10, 10, 10, 0])
    window = choose_window(trace, users=10, warmup_s=2.0)
    assert window is not None and window.note == ""
    assert (window.start.t_s, window.end.t_s) == (4.0, 7.0)
    assert window.server().acks == 300 and window.seconds == 3.0
    assert window.generator_cpu_pct() == {7: 50.0}
    assert window.machine_busy_pct() == 50.0


def test_a_run_too_short_for_the_warmup_keeps_it_and_says_so() -> None:
    window = choose_window(samples([0, 10, 10, 10, 0]), users=10, warmup_s=5.0)
    assert window is not None and (window.start.t_s, window.end.t_s) == (1.0, 3.0)
    assert "warm-up not cut" in window.note


def test_users_that_never_all_connect_are_named_and_no_load_means_no_window() -> None:
    window = choose_window(samples([0, 6, 6, 6, 6, 0]), users=10, warmup_s=1.0)
    assert window is not None and "only 6 of 10 users connected" in window.note
    assert choose_window(samples([0, 0, 0]), users=10, warmup_s=1.0) is None
    assert choose_window(samples([0, 10, 0]), users=10, warmup_s=1.0) is None


# ---------------------------------------------------------------------------- generator-bound


def chat_doc(
    *,
    cpu_pct: float = 20.0,
    intended: int = 1000,
    sent: int = 1000,
    lag_ms: float = 0.5,
    acks: int = 990,
) -> dict[str, Any]:
    hists = HistogramSet()
    for _ in range(100):
        hists.record_us("schedule_lag", "json", lag_ms * 1000)
    for i in range(acks):
        hists.record_us("ack", "json", 1000 + i)
        hists.record_us("deliver", "json", 800 + i)
    return {
        "histograms": hists.to_json(),
        "loss": {"sent": sent, "retries": 10, "acked": acks, "unacked": 5, "delivered": 4 * acks},
        "generator": {
            "max_cpu_pct_per_process": cpu_pct,
            "sends_intended": intended,
            "sends_sent": sent,
        },
    }


def test_a_generator_that_kept_up_is_not_bound() -> None:
    assert generator_limits(chat_doc(), {101: 40.0, 102: 35.0}) == []


def test_a_busy_locust_process_in_the_window_marks_the_point_bound() -> None:
    (reason,) = generator_limits(chat_doc(), {101: 30.0, 102: 93.0})
    assert "93% of a core" in reason
    assert generator_limits(chat_doc(), {101: 90.0})  # at the threshold counts


def test_the_chat_out_documents_own_checks_count_too() -> None:
    busy = generator_limits(chat_doc(cpu_pct=97.0), {})
    assert any("97% CPU" in r for r in busy)
    behind = generator_limits(chat_doc(intended=1200, sent=1000), {})
    assert any("200 scheduled sends never went out" in r for r in behind)


def test_a_lagging_send_schedule_marks_the_point_bound() -> None:
    (reason,) = generator_limits(chat_doc(lag_ms=120.0), {101: 50.0})
    assert "schedule lag p99 120 ms" in reason
    assert generator_limits(chat_doc(lag_ms=LAG_P99_MAX_MS / 2), {101: 50.0}) == []


def test_a_lag_that_is_much_of_the_ack_tail_earns_a_caution_not_a_verdict() -> None:
    shape = LoadShape(100.0, 10, 10.0, 10.0)
    point = Point(1, 1, "json", shape, 0, 42)
    trace = samples([0, 10, 10, 10, 0])
    doc = chat_doc(lag_ms=2.0)  # acks 1.0 .. 1.99 ms: a 2 ms lag is all of the p99
    row = summary_row("r", "smoke", point, doc, Window(trace[1], trace[3]), 190.0)
    assert row["generator_bound"] is False
    assert "schedule lag p99 2.0 ms" in row["note"] and "partly the generator's" in row["note"]


def test_a_bound_point_keeps_its_figures_but_is_flagged_with_the_reason() -> None:
    shape = LoadShape(100.0, 10, 10.0, 10.0)
    point = Point(1, 1, "json", shape, 0, 42)
    trace = samples([0, 10, 10, 10, 10, 0])
    window = Window(trace[1], trace[4])
    row = summary_row("r", "smoke", point, chat_doc(lag_ms=200.0), window, 190.0)
    assert row["generator_bound"] is True and row["note"].startswith("generator-bound: ")
    assert row["acked_per_s"] == pytest.approx(100.0) and row["acked_total"] == 300
    assert row["delivered_per_s"] == pytest.approx(400.0)  # 4 deliveries per ack
    assert row["server_cpu_us_per_msg"] == pytest.approx(100.0)
    assert row["error_rate"] == pytest.approx((1005 - 990) / 1005)
    assert row["ack_p50_ms"] == pytest.approx(1.495, rel=0.01)
    assert math.isnan(row["server_ack_p99_ms"])  # no buckets in the synthetic scrapes
    clean = summary_row("r", "smoke", point, chat_doc(), window, 190.0)
    assert clean["generator_bound"] is False and clean["note"] == ""
