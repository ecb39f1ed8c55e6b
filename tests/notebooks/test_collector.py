"""The garbage collector at each measured point against the calibration: the summary
row's figures from a scrape (``bench.run.figures.server_gc``), the table beside the rates
and pauses the model charges (``bench.analysis.collector_table``), its one line, and the
demo's summary carrying it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import analysis as an
from bench._support.metrics_scrape import GC_PAUSE, Scrape
from bench.analysis.collector import full_share
from bench.run.figures import server_gc
from chatcap.results import SUMMARY_COLUMNS, SUMMARY_FILE, read_table, write_table
from sim.calibration import Costs, save_costs
from tests.notebooks.support_nbcase import measured_run

COSTS = Costs(
    gc_pauses_per_msg=(0.004, 0.0004, 0.00002),
    gc_pauses_per_recipient=(0.0001, 0.0, 0.0),
    gc_pauses_per_msg_full=(0.0001, 0.0, 0.0),
    gc_pauses_per_recipient_full=(0.0, 0.0, 0.0),
    gc_pause_us=(50.0, 300.0, 10_000.0),
    gc_pause_us_per_connection=(0.1, 1.0, 20.0),
)


def scrape(acks: float, gc: dict[str, tuple[float, float]] | None) -> Scrape:
    """A scrape difference: ``acks`` Acks and, per generation, (collections, seconds)."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
        ("chatcap_ack_latency_seconds_count", ()): acks,
        ("chatcap_ack_latency_seconds_sum", ()): acks * 0.001,
    }
    for g, (count, seconds) in (gc or {}).items():
        samples[(GC_PAUSE + "_count", (("generation", g),))] = count
        samples[(GC_PAUSE + "_sum", (("generation", g),))] = seconds
    return Scrape(samples)


def test_the_summary_row_counts_collections_per_thousand_acks_and_their_mean_pause() -> None:
    figures = server_gc(scrape(4_000, {"0": (20, 0.004), "1": (2, 0.006), "2": (0, 0.0)}))
    assert figures["server_gc0_per_kmsg"] == pytest.approx(5.0)
    assert figures["server_gc0_pause_ms"] == pytest.approx(0.2)
    assert figures["server_gc1_per_kmsg"] == pytest.approx(0.5)
    assert figures["server_gc1_pause_ms"] == pytest.approx(3.0)
    # none collected: a rate of 0, and no pause to average
    assert figures["server_gc2_per_kmsg"] == 0.0
    assert math.isnan(figures["server_gc2_pause_ms"])


def test_a_server_without_the_collector_histogram_gives_no_rate_not_zero() -> None:
    figures = server_gc(scrape(4_000, None))
    assert all(math.isnan(v) for v in figures.values()), figures
    no_acks = server_gc(scrape(0, {"0": (3, 0.001)}))
    assert math.isnan(no_acks["server_gc0_per_kmsg"])  # per message: no messages
    assert no_acks["server_gc0_pause_ms"] == pytest.approx(1 / 3)


def test_the_full_share_is_the_part_of_the_window_past_the_tables_size() -> None:
    # 1,000/s, 2 s of warm-up: the window holds messages 2,000 .. 12,000
    assert full_share(1_000, 10_000, 2.0, 50_000) == 0.0
    assert full_share(1_000, 10_000, 2.0, 7_000) == pytest.approx(0.5)
    assert full_share(1_000, 10_000, 2.0, 1_000) == 1.0
    assert math.isnan(full_share(1_000, 0, 2.0, 1_000))


def gc_run(tmp_path: Path) -> Path:
    """A measured run (json at 100 and 400/s, two repeats; ~9 Delivers per Ack, users
    = load ÷ the baseline's per-user rate) whose rows carry collector figures: at 100/s
    the calibration's own rates and pauses, at 400/s four times the rate of full
    collections and half their pause."""
    run = measured_run(tmp_path / "run", loads=(100.0, 400.0), codecs=("json",))
    rows = read_table(run / SUMMARY_FILE, SUMMARY_COLUMNS)
    for row in rows:
        users = users_of(run, float(row["offered_per_s"]))
        members = row["delivered_per_s"] / row["acked_per_s"]
        for g in range(3):
            per_rec = COSTS.gc_pauses_per_recipient[g] * members
            rate = (COSTS.gc_pauses_per_msg[g] + per_rec) * 1000
            pause = (COSTS.gc_pause_us[g] + COSTS.gc_pause_us_per_connection[g] * users) / 1000
            if g == 2 and row["offered_per_s"] == 400.0:
                rate, pause = rate * 4, pause / 2
            row[f"server_gc{g}_per_kmsg"], row[f"server_gc{g}_pause_ms"] = rate, pause
        row["acked_total"] = int(row["acked_per_s"] * 5)
    write_table(run / SUMMARY_FILE, rows, SUMMARY_COLUMNS)
    return run


def users_of(run: Path, load: float) -> int:
    from chatcap.results import read_manifest

    return next(int(p["users"]) for p in read_manifest(run)["points"] if p["offered_per_s"] == load)


def test_the_table_holds_each_point_against_what_the_model_charges(tmp_path: Path) -> None:
    run = gc_run(tmp_path)
    table = an.collector_table(run, COSTS)
    assert list(table.columns) == list(an.COLLECTOR_COLUMNS)
    assert len(table) == 2 * 3  # two loads, three generations
    low = table[table["offered_per_s"] == 100.0].set_index("generation")
    assert low["members"].tolist() == pytest.approx([9.0] * 3, rel=1e-3)
    assert low["rate_ratio"].tolist() == pytest.approx([1.0] * 3)
    assert low["pause_ratio"].tolist() == pytest.approx([1.0] * 3)
    users = users_of(run, 100.0)
    assert low.loc["2", "connections"] == users
    assert low.loc["2", "calibrated_pause_ms"] == pytest.approx((10_000 + 20 * users) / 1000)
    high = table[table["offered_per_s"] == 400.0].set_index("generation")
    assert high.loc["2", "rate_ratio"] == pytest.approx(4.0)
    assert high.loc["2", "pause_ratio"] == pytest.approx(0.5)
    assert high.loc["0", "rate_ratio"] == pytest.approx(1.0)
    # time paused per second: rate × messages per second × pause, both ways
    rows = read_table(run / SUMMARY_FILE, SUMMARY_COLUMNS)
    acked = sorted(r["acked_per_s"] for r in rows if r["offered_per_s"] == 400.0)
    acked_median = sum(acked) / len(acked)  # two repeats
    m = high.loc["2"]
    assert m["measured_paused_ms_per_s"] == pytest.approx(
        m["measured_per_kmsg"] / 1000 * acked_median * m["measured_pause_ms"]
    )
    assert m["measured_paused_ms_per_s"] == pytest.approx(2 * m["calibrated_paused_ms_per_s"])


def test_past_the_tables_size_the_full_table_rates_are_charged(tmp_path: Path) -> None:
    run = gc_run(tmp_path)
    filling = an.collector_table(run, COSTS).set_index(["offered_per_s", "generation"])
    full = an.collector_table(run, COSTS, entries=0).set_index(["offered_per_s", "generation"])
    assert (full["full_share"] == 1.0).all()
    assert full.loc[(100.0, "0"), "calibrated_per_kmsg"] == pytest.approx(0.1)
    assert filling.loc[(100.0, "0"), "calibrated_per_kmsg"] == pytest.approx(4.9, rel=1e-3)
    # the full table charges no older collection: no ratio against nothing
    assert math.isnan(full.loc[(100.0, "2"), "rate_ratio"])


def test_the_one_line_names_each_generations_ratios(tmp_path: Path) -> None:
    line = an.collector_summary(an.collector_table(gc_run(tmp_path), COSTS))
    assert line.startswith("collector, measured ÷ calibrated over 2 points: ")
    assert "gen 0 rate ×1 (1–1), pause ×1 (1–1)" in line
    assert "gen 2 rate ×2.5 (1–4), pause ×0.75 (0.5–1)" in line


def test_a_run_or_a_calibration_without_collector_figures_says_so(tmp_path: Path) -> None:
    plain = measured_run(tmp_path / "plain", loads=(100.0,), codecs=("json",))
    assert an.collector_table(plain, COSTS).empty
    assert an.collector_table(gc_run(tmp_path), Costs()).empty
    assert an.collector_summary(an.collector_table(plain, COSTS)) == (
        f"collector: {an.NO_COLLECTOR}"
    )


def test_the_calibration_may_come_as_its_file_or_not_at_all(tmp_path: Path) -> None:
    """The notebook passes its ``calibration`` parameter: a file reads as its costs; None
    or ``""`` are the model's built-in costs, which hold no collector figures."""
    run = gc_run(tmp_path)
    path = save_costs(COSTS, tmp_path / "cal.json")
    from_file = an.collector_table(run, str(path))
    assert from_file.equals(an.collector_table(run, COSTS))
    assert an.collector_table(run, None).empty and an.collector_table(run, "").empty
