"""Tallies (bench.load.tally) and the generator's self-flagging (bench.load.report).

A tally folded into a histogram must give exactly the histogram that recording every
value gives; Locust's row figures come from the same counts. A merged ``--chat-out``
document says whether the generator kept the offered pace, and why not.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench._support.histo import HIGHEST_US, LatencyHistogram
from bench.load.report import PACE_LAG_P99_MAX_MS, ProcessStats, merge_parts, pace_limits
from bench.load.tally import LatencyTally, bucket_floor_us, locust_figures


def values(seed: int, n: int = 20_000) -> list[int]:
    rng = random.Random(seed)
    spread = [int(rng.lognormvariate(8.0, 1.5)) for _ in range(n)]  # ~3 ms, long tail
    return [*spread, 0, 1, 2047, 2048, 2049, HIGHEST_US, HIGHEST_US + 5, -3]


def test_a_folded_tally_is_exactly_the_histogram_of_every_value() -> None:
    direct, tallied, tally = LatencyHistogram(), LatencyHistogram(), LatencyTally()
    for value in values(1):
        direct.record_us(value)
        tally.add(value)
    counts, _ = tally.drain()
    for value, n in counts.items():
        tallied.record_us(value, n)
    assert list(tallied.buckets()) == list(direct.buckets())
    assert tallied.summary() == direct.summary()
    assert tallied.clamped == direct.clamped == 2  # the one over 60 s and the negative one
    assert len(counts) < 0.5 * len(values(1))  # bucketed: far fewer keys than values


def test_a_bucket_floor_stays_in_its_bucket_and_small_values_are_exact() -> None:
    hist = LatencyHistogram()
    for value in (1, 2047, 2048, 2049, 4097, 123_456, 59_999_999):
        floor = bucket_floor_us(value)
        assert floor <= value and value - floor < max(1, value // 1000)
        assert hist._h.get_lowest_equivalent_value(value) == floor  # HdrHistogram's own
    assert [bucket_floor_us(v) for v in (0, 5, 2047)] == [0, 5, 2047]


def test_process_stats_drain_for_locust_and_fold_everything_into_histograms() -> None:
    stats = ProcessStats(0.0, 0.0)
    deliver = stats.tally("deliver", "json")
    for value in (1500, 1500, 9007):
        deliver.add(value, 200)
    drained = stats.drain()
    assert drained == [("deliver", "json", {1500: 2, 9000: 1}, 600)]  # 8 µs buckets there
    deliver.add(20_015, 100)
    assert stats.drain() == [("deliver", "json", {20_000: 1}, 100)]  # only what is new
    part = stats.part(0, 1.0, 0.0)  # folds all three seconds' counts
    assert stats.histograms.get("deliver", "json").count == 4
    assert part["histograms"]["deliver"]["json"]


def bucket_response_time(ms: float) -> int:
    """Locust's rounding below 1 s (the test process never imports Locust: gevent)."""
    return round(ms) if ms < 100 else int(round(ms, -1))


def test_locust_figures_count_sum_and_bucket_the_drained_counts() -> None:
    figures = locust_figures({1500: 2, 8992: 1, 150_000: 1}, 800, bucket_response_time)
    assert figures is not None
    assert (figures.count, figures.size_bytes) == (4, 800)
    assert figures.total_ms == pytest.approx(1.5 * 2 + 8.992 + 150.0)
    assert (figures.min_ms, figures.max_ms) == (1.5, 150.0)
    assert figures.buckets == {2: 2, 9: 1, 150: 1}  # rounded by the function given
    assert locust_figures({}, 0, bucket_response_time) is None


# ----------------------------------------------------------------------------- kept pace


def doc_with(lag_us: int, sent: int, intended: int, cpu_pct: float = 40.0) -> dict[str, Any]:
    """A merged document of one process whose sends left ``lag_us`` late."""
    stats = ProcessStats(0.0, 0.0)
    for _ in range(100):
        stats.record_lag("json", lag_us)
    stats.counts.update(sends_sent=sent, sends_intended=intended)
    part = stats.part(0, stopped_unix_s=10.0, stopped_cpu_s=cpu_pct / 10.0)
    return merge_parts([part], {}, "local")


def test_a_generator_that_kept_the_pace_says_so() -> None:
    gen = doc_with(lag_us=800, sent=1000, intended=1000)["generator"]
    assert gen["kept_pace"] is True and gen["limits"] == []
    assert gen["schedule_lag_p99_ms"] == pytest.approx(0.8, rel=0.01)


def test_late_sends_mark_the_run_as_not_kept_and_say_how_late() -> None:
    late_ms = 3 * PACE_LAG_P99_MAX_MS
    gen = doc_with(lag_us=int(late_ms * 1000), sent=1000, intended=1000)["generator"]
    assert gen["kept_pace"] is False
    assert gen["limits"] == [f"sends left late: schedule lag p99 {late_ms:.0f} ms"]


def test_unsent_sends_and_a_full_core_are_each_a_reason() -> None:
    doc = doc_with(lag_us=500, sent=800, intended=1000, cpu_pct=97.0)
    assert doc["generator"]["kept_pace"] is False
    reasons = pace_limits(doc)
    assert any("200 scheduled sends never went out" in r for r in reasons)
    assert any("97% CPU" in r for r in reasons)


def test_the_window_cut_drops_warmup_latencies_but_hands_them_to_locust() -> None:
    stats = ProcessStats(0.0, 0.0)
    stats.record_lag("json", 90_000)  # a ramp-time send that left 90 ms late
    stats.tally("ack", "json").add(40_000, 30)
    stats.drain()  # one fold already happened: these wait for the histograms
    stats.tally("ack", "json").add(41_000, 30)  # not drained yet
    for_locust = stats.start_window(5.0)
    assert for_locust == [("ack", "json", {40_992: 1}, 30)]  # Locust still gets it
    stats.record_lag("json", 1_000)
    stats.tally("ack", "json").add(2_000, 30)
    part = stats.part(0, 10.0, 0.0)
    assert stats.histograms.get("ack", "json").count == 1  # the steady one only
    assert part["generator"]["max_schedule_lag_ms"] == 1.0
    assert part["generator"]["window_started_unix_s"] == 5.0
    assert part["generator"]["warmup_values"] == 3  # one lag and two acks left out
    doc = merge_parts([part], {}, "local")
    assert doc["generator"]["schedule_lag_p99_ms"] < 2.0 and doc["generator"]["kept_pace"]


def test_a_merge_has_no_window_when_one_part_never_cut() -> None:
    cut, uncut = ProcessStats(0.0, 0.0), ProcessStats(0.0, 0.0)
    cut.start_window(3.0)
    parts = [cut.part(0, 9.0, 0.0), uncut.part(1, 9.0, 0.0)]
    assert merge_parts(parts[:1], {}, "local")["generator"]["window_started_unix_s"] == 3.0
    assert merge_parts(parts, {}, "distributed")["generator"]["window_started_unix_s"] is None
