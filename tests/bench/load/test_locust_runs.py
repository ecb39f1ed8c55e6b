"""Locust runs against the real server: both codecs, distributed merging, open vs closed loop.

Locust (gevent) and the server (asyncio) each run in their own subprocess — never in
this one: pytest imports neither locust nor gevent. Runs are a few seconds with a
handful of users; assertions are about counts and well-formed files, never speed,
except the open-loop test, which compares how *many* sends a known server stall shows
up in (timings there are scaled by ``CHATCAP_TIMING_FACTOR``).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench._support.histo import HistogramSet
from chatcap.scenario import load_scenario, to_toml
from tests.bench.load.support_locust import (
    FACTOR,
    ROOM_SIZE,
    USERS,
    Server,
    finish,
    free_port,
    headless,
    locust,
    read,
    scaled,
    stop,
)

# ---------------------------------------------------------------------------- one process


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_a_headless_run_records_acks_deliveries_and_no_loss(
    server: Server, scenario: Path, tmp_path: Path, codec: str
) -> None:
    out, log = tmp_path / "out.json", tmp_path / "locust.log"
    args = headless(server, 3, "--chat-codec", codec, "--chat-send-rate", "5")
    stats = tmp_path / "locust-stats"  # Locust's final statistics, --json-file PREFIX
    proc = locust([*args, "--chat-out", str(out), "--json-file", str(stats)], log, scenario)
    try:
        finish(proc, log, 30)
    finally:
        stop(proc)

    doc = read(out)
    assert doc["mode"] == "local" and doc["plan"]["codec"] == codec
    hists = HistogramSet.from_json(doc["histograms"])
    acks, deliveries = hists.get("ack", codec).count, hists.get("deliver", codec).count
    assert acks > 0 and deliveries > 0
    assert {name for name, _ in hists} >= {"ack", "deliver", "schedule_lag"}
    assert {c for _, c in hists} == {codec}
    loss = doc["loss"]
    assert loss["missing"] == 0 and loss["duplicated"] == 0
    assert loss["acked"] == acks and loss["receivers"] == USERS
    # Every room is full (10 users, rooms of 5): each acked message reaches the 4 other
    # members (the sender has its Ack), apart from the few in flight at the stop.
    assert loss["delivered"] >= (ROOM_SIZE - 1) * acks * 0.9
    assert doc["errors"] == {}
    gen = doc["generator"]
    assert gen["users"] == USERS and gen["connects"] == USERS and gen["cpu_s"] > 0
    assert gen["sends_sent"] == loss["sent"] and gen["sends_intended"] >= gen["sends_sent"]
    assert "chatcap: " in log.read_text()  # the one-line human summary
    # Locust's rows keep sends apart from deliveries: one send→ack per answered send
    rows = locust_rows(Path(f"{stats}.json"))
    assert rows == {
        ("ws", f"send→ack {codec}"): (acks, 0),
        ("ws", f"deliver {codec}"): (loss["delivered"], 0),
        ("GET", "/api/v1/token"): (USERS, 0),
    }


def test_a_warmup_cut_leaves_the_ramp_out_of_the_latencies_but_not_out_of_the_counts(
    server: Server, scenario: Path, tmp_path: Path
) -> None:
    out, log = tmp_path / "out.json", tmp_path / "locust.log"
    args = headless(server, 4, "--chat-send-rate", "5", "--chat-warmup-s", "1")
    stats = tmp_path / "locust-stats"
    proc = locust([*args, "--chat-out", str(out), "--json-file", str(stats)], log, scenario)
    try:
        finish(proc, log, 30)
    finally:
        stop(proc)

    doc = read(out)
    gen, loss = doc["generator"], doc["loss"]
    assert gen["window_started_unix_s"] is not None
    assert doc["started_unix_s"] < gen["window_started_unix_s"] < doc["stopped_unix_s"]
    hists = HistogramSet.from_json(doc["histograms"])
    acks = sum(hists.get(name, codec).count for name, codec in hists if name == "ack")
    assert 0 < acks < loss["acked"] and gen["warmup_values"] > 0  # the first second left out
    assert loss["missing"] == 0  # the ledger keeps the whole run
    rows = locust_rows(Path(f"{stats}.json"))  # so do Locust's rows (the scenario's mix)
    assert (
        sum(n for (_, name), (n, _) in rows.items() if name.startswith("send→ack"))
        == (loss["acked"])
    )


def test_a_bad_warmup_ends_locust_at_init_with_one_line(
    server: Server, scenario: Path, tmp_path: Path
) -> None:
    log = tmp_path / "locust.log"
    proc = locust(headless(server, 2, "--chat-warmup-s", "-1"), log, scenario)
    try:
        rc = proc.wait(timeout=scaled(30))
    finally:
        stop(proc)
    assert rc == 2
    assert "--chat-warmup-s -1.0: expected 0 to 3600 seconds" in log.read_text()


def locust_rows(path: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """Locust's final statistics (``--json-file``): ``{(type, name): (requests, failures)}``."""
    return {
        (row["method"], row["name"]): (row["num_requests"], row["num_failures"])
        for row in json.loads(path.read_text())
    }


# ---------------------------------------------------------------------------- distributed


def test_a_master_merges_what_two_workers_measured(
    server: Server, scenario: Path, tmp_path: Path
) -> None:
    port = str(free_port())
    out = tmp_path / "merged.json"
    master_args = [
        *headless(server, 3, "--chat-codec", "protobuf", "--chat-send-rate", "5"),
        "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
        "--expect-workers", "2",
        "--chat-out", str(out), "--chat-out-worker", str(tmp_path / "part-{worker}.json"),
    ]  # fmt: skip
    worker_args = ["--worker", "--master-host", "127.0.0.1", "--master-port", port]
    procs = [locust(master_args, tmp_path / "master.log", scenario)]
    try:
        for i in (1, 2):
            procs.append(locust(worker_args, tmp_path / f"worker{i}.log"))
        finish(procs[0], tmp_path / "master.log", 40)
    finally:
        for proc in procs:
            stop(proc)

    merged = read(out)
    parts = [read(tmp_path / f"part-{i}.json") for i in (0, 1)]
    assert merged["mode"] == "distributed" and merged["missing_workers"] == []
    assert merged["generator"]["processes"] == 2
    assert [w["worker"] for w in merged["workers"]] == [0, 1]

    merged_hists = HistogramSet.from_json(merged["histograms"])
    summed = HistogramSet()
    for part in parts:
        summed.merge(HistogramSet.from_json(part["histograms"]))
    assert merged_hists.keys() == summed.keys()
    for name, codec in merged_hists:
        got, want = merged_hists.get(name, codec), summed.get(name, codec)
        assert got.count == want.count
        assert list(got.buckets()) == list(want.buckets())
    assert merged_hists.get("ack", "protobuf").count > 0
    for key in ("sent", "acked", "delivered", "receivers"):
        assert merged["loss"][key] == sum(p["loss"][key] for p in parts)
    assert merged["loss"]["receivers"] == USERS
    assert merged["loss"]["missing"] == 0 and merged["loss"]["duplicated"] == 0


# ---------------------------------------------------------------------------- open loop


STALL_S = 1.0 * FACTOR
RATE_PER_USER = 10.0


def run_through_a_stall(
    server: Server, scenario: Path, tmp_path: Path, arrival: str
) -> dict[str, Any]:
    """A run during which every store commit takes STALL_S longer for STALL_S seconds."""
    out, log = tmp_path / f"{arrival}.json", tmp_path / f"{arrival}.log"
    args = headless(
        server, 4 * FACTOR, "--chat-codec", "json", "--chat-arrival", arrival,
        "--chat-send-rate", f"{RATE_PER_USER:g}", "--chat-out", str(out),
    )  # fmt: skip
    acks_before = server.metric("chatcap_ack_latency_seconds_count")
    proc = locust(args, log, scenario)
    try:
        wait_for_acks(server, acks_before + 3 * USERS, proc, log)
        server.admin(f"store_latency_ms={STALL_S * 1000:g}")
        time.sleep(STALL_S)  # the stall's length: sends scheduled in it all wait
        server.admin("clear=1")
        finish(proc, log, 30)
    finally:
        server.admin("clear=1")
        stop(proc)
    return read(out)


def wait_for_acks(server: Server, count: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the server has acked ``count`` sends in all (the users are up and sending)."""
    deadline = time.monotonic() + scaled(20)
    while server.metric("chatcap_ack_latency_seconds_count") < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no acks from the load generator:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def test_open_loop_counts_a_server_stall_in_every_send_scheduled_during_it(
    server: Server, scenario: Path, tmp_path: Path
) -> None:
    opened = run_through_a_stall(server, scenario, tmp_path, "poisson")
    closed = run_through_a_stall(server, scenario, tmp_path, "closed")
    stalled_ms = 0.5 * STALL_S * 1000  # "saw the stall": waited at least half of it

    open_ack = HistogramSet.from_json(opened["histograms"]).get("ack", "json")
    closed_ack = HistogramSet.from_json(closed["histograms"]).get("ack", "json")
    # Open loop: sends keep their schedule through the stall, ~USERS × RATE × STALL_S of
    # them are due in it, and each waits out the rest of it — counted from its intended
    # time. Those due in its first half wait at least half of it.
    due_in_first_half = USERS * RATE_PER_USER * STALL_S / 2
    assert open_ack.count_at_or_above_ms(stalled_ms) >= 0.5 * due_in_first_half
    assert open_ack.percentile_ms(95) >= stalled_ms
    # Closed loop: each user has one send outstanding, so the stall delays one send per
    # user and the users simply stop sending meanwhile: it shows up ~USERS times.
    assert closed_ack.count_at_or_above_ms(stalled_ms) <= 2 * USERS
    assert closed_ack.percentile_ms(95) < stalled_ms
    for doc in (opened, closed):
        assert doc["errors"] == {} and doc["loss"]["missing"] == 0
    # The open-loop generator itself kept up: its sends left on time.
    assert opened["generator"]["max_schedule_lag_ms"] < stalled_ms


# ---------------------------------------------------------------------------- over time

SERIES_STALL_S = 1.5 * FACTOR
SERIES_ACK_TIMEOUT_MS = 300.0 * FACTOR


def test_the_series_shows_a_stall_in_its_seconds_and_adds_up_to_the_totals(
    server: Server, scenario: Path, tmp_path: Path
) -> None:
    """Impatient clients (300 ms ack timeout, 3 attempts) through a 1.5 s store stall
    two seconds into the run: the timeouts land in the stall's wall-clock seconds, and
    every series adds up to the document's own totals."""
    impatient = tmp_path / "impatient.toml"
    client = load_scenario(scenario).with_overrides(
        {
            "client.ack_timeout_ms": SERIES_ACK_TIMEOUT_MS,
            "client.retry.max_attempts": 3,
            "client.retry.base_ms": 50.0,
            "client.retry.jitter": "none",
        }
    )
    impatient.write_text(to_toml(client, comments=False))
    out, log = tmp_path / "out.json", tmp_path / "locust.log"
    args = headless(
        server, 7 * FACTOR, "--chat-codec", "json", "--chat-send-rate", "10",
        "--exit-code-on-error", "0",  # the timeouts are failures: Locust would exit 1
    )  # fmt: skip
    acks_before = server.metric("chatcap_ack_latency_seconds_count")
    proc = locust([*args, "--chat-out", str(out)], log, impatient)
    try:
        wait_for_acks(server, acks_before + 20 * USERS, proc, log)  # ~2 s of sends
        stall_from = time.time()
        server.admin(f"store_latency_ms={SERIES_STALL_S * 1000:g}")
        time.sleep(SERIES_STALL_S)  # the stall's length
        server.admin("clear=1")
        stall_to = time.time()
        finish(proc, log, 30)
    finally:
        server.admin("clear=1")
        stop(proc)

    doc = read(out)
    series, loss, gen = doc["series"], doc["loss"], doc["generator"]
    n = series["seconds"]
    assert n >= 4 and all(len(series[k]) == n for k in ("sent", "attempts", "goodput"))
    assert series["origin_unix_s"] <= doc["started_unix_s"] < series["origin_unix_s"] + 1
    assert stall_to < series["stopping_unix_s"] <= doc["stopped_unix_s"]  # -t ran out
    # the series add up to the whole-run figures, kind by kind
    assert sum(series["sent"]) == loss["sent"] == gen["sends_sent"]
    assert sum(series["attempts"]) == loss["sent"] + loss["retries"]
    assert sum(series["goodput"]) + sum(series["acked_after_timeout"]) == doc["outcomes"]["acked"]
    assert sum(series["timeouts"]) == doc["errors"]["timeout"] > 0
    # answers for messages already done: the stalled attempts' acks, after the first
    assert sum(series["late_answers"]) == gen["late_answers"] > 0
    # the stall's attempts time out within it or one ack timeout after: in its seconds
    origin = series["origin_unix_s"]
    first = int(stall_from) - origin
    last = int(stall_to + SERIES_ACK_TIMEOUT_MS / 1000) - origin
    in_stall = sum(series["timeouts"][first : last + 1])
    assert in_stall >= 0.9 * sum(series["timeouts"])
    # before the stall goodput kept up with the sends
    before = range(1, first)
    assert sum(series["goodput"][i] for i in before) >= 0.9 * sum(series["sent"][i] for i in before)
