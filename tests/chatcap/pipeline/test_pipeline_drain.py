"""chatcap.pipeline.drain: the overloaded answer's hint from the recent drain rate."""

from __future__ import annotations

import pytest

from chatcap.pipeline.drain import (
    OVERLOAD_RETRY_AFTER_CAP_MS,
    UNKNOWN_RATE_RETRY_AFTER_MS,
    DrainRate,
    overload_retry_after_ms,
)


def test_rate_is_unknown_before_any_batch_and_at_the_first_batch_instant() -> None:
    rate = DrainRate()
    assert rate.per_s(1.0) is None
    rate.record(1.0, 10)
    assert rate.per_s(1.0) is None  # no time has passed since the window's start


def test_rate_counts_sends_over_the_window_ending_now() -> None:
    rate = DrainRate()
    rate.record(0.0, 10)
    rate.record(0.5, 10)
    assert rate.per_s(1.0) == pytest.approx(20.0)
    assert rate.per_s(4.0) == pytest.approx(5.0)  # a stalled store makes the rate fall


def test_rate_forgets_batches_beyond_its_window() -> None:
    rate = DrainRate(batches=2)
    for t, n in [(0.0, 100), (1.0, 1), (2.0, 1)]:
        rate.record(t, n)
    assert rate.per_s(3.0) == pytest.approx(2 / 2.0)  # (1.0, 1) and (2.0, 1) remain


def test_rate_rejects_an_empty_window() -> None:
    with pytest.raises(ValueError, match="batches"):
        DrainRate(batches=0)


def test_hint_is_the_queue_drain_time_rounded_up() -> None:
    assert overload_retry_after_ms(queue_depth=10, rate_per_s=3.0) == 3334


def test_hint_for_an_unknown_rate_is_the_default() -> None:
    assert overload_retry_after_ms(5, None) == UNKNOWN_RATE_RETRY_AFTER_MS


def test_hint_is_at_least_1_ms_and_capped() -> None:
    assert overload_retry_after_ms(0, 100.0) == 1
    assert overload_retry_after_ms(10**9, 1.0) == OVERLOAD_RETRY_AFTER_CAP_MS
