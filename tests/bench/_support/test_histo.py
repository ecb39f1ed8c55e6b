"""bench._support.histo: merging per-worker histograms is exact, and the text form round-trips."""

import json
import math
import random

import pytest

from bench._support.histo import HIGHEST_US, HistogramSet, LatencyHistogram


def latencies_us(seed: int, n: int) -> list[int]:
    """Lognormal-ish latencies from 1 µs to a few seconds, like a real run's."""
    rng = random.Random(seed)
    return [max(1, int(rng.lognormvariate(7.5, 1.6))) for _ in range(n)]


def filled(values: list[int]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for value in values:
        hist.record_us(value)
    return hist


def test_merging_worker_histograms_equals_one_histogram_of_all_values() -> None:
    parts = [latencies_us(seed, 5000) for seed in (1, 2, 3)]
    merged = LatencyHistogram()
    for values in parts:
        merged.merge(filled(values))
    whole = filled([v for values in parts for v in values])

    assert merged.count == whole.count == 15_000
    assert list(merged.buckets()) == list(whole.buckets())
    for p in (0, 1, 50, 90, 99, 99.9, 100):
        assert merged.percentile_ms(p) == whole.percentile_ms(p)
    assert merged.mean_ms() == pytest.approx(whole.mean_ms(), rel=1e-12)


def test_encode_decode_round_trips_every_bucket() -> None:
    hist = filled(latencies_us(4, 2000))
    text = hist.encode()
    assert text.isascii()
    back = LatencyHistogram.decode(text)
    assert back.count == hist.count
    assert list(back.buckets()) == list(hist.buckets())
    assert back.percentile_ms(99) == hist.percentile_ms(99)


def test_three_significant_digits_from_a_microsecond_to_a_minute() -> None:
    for value_us in (1, 999, 12_345, 2_500_000, HIGHEST_US):
        hist = filled([value_us])
        assert hist.percentile_ms(50) == pytest.approx(value_us / 1000, rel=1e-3)


def test_out_of_range_values_are_clamped_and_counted() -> None:
    hist = LatencyHistogram()
    hist.record_us(-5)
    hist.record_us(HIGHEST_US * 10)
    assert hist.count == 2
    assert hist.clamped == 2
    assert hist.percentile_ms(0) == 0.0
    assert hist.max_ms() == pytest.approx(HIGHEST_US / 1000, rel=1e-3)


def test_an_empty_histogram_reports_nan_and_still_round_trips() -> None:
    hist = LatencyHistogram()
    assert hist.count == 0
    assert math.isnan(hist.percentile_ms(99))
    assert math.isnan(hist.mean_ms())
    assert LatencyHistogram.decode(hist.encode()).count == 0


def test_count_at_or_above_a_threshold() -> None:
    hist = filled([1_000] * 7 + [500_000] * 3)
    assert hist.count_at_or_above_ms(250.0) == 3
    assert hist.count_at_or_above_ms(0.0) == 10


def test_histogram_set_json_round_trip_and_merge_by_name_and_codec() -> None:
    a, b = HistogramSet(), HistogramSet()
    for value in latencies_us(5, 300):
        a.record_us("ack", "json", value)
        b.record_us("ack", "json", value * 2)
    b.record_us("deliver", "protobuf", 1234)

    data = json.loads(json.dumps(b.to_json()))
    assert set(data) == {"ack", "deliver"} and set(data["deliver"]) == {"protobuf"}
    again = HistogramSet.from_json(data)
    assert again.keys() == [("ack", "json"), ("deliver", "protobuf")]

    a.merge(again)
    assert a.get("ack", "json").count == 600
    assert a.get("deliver", "protobuf").count == 1
    summary = a.summary()
    assert summary["ack"]["json"]["count"] == 600
    assert summary["deliver"]["protobuf"]["p50_ms"] == pytest.approx(1.234, rel=1e-3)
