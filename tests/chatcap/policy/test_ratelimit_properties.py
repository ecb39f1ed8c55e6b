"""Hypothesis properties of the rate limiters: bounds that must hold on any timeline."""

import copy
import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from chatcap.policy import (
    LIMITERS,
    FixedWindow,
    LeakyBucket,
    Limiter,
    SlidingWindowLog,
    TokenBucket,
    make_limiter,
)

rates = st.floats(min_value=0.1, max_value=1000.0)
bursts = st.integers(min_value=1, max_value=20)
windows = st.floats(min_value=0.01, max_value=100.0)
gaps = st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=150)
starts = st.floats(min_value=-1e6, max_value=1e6)


def times_from(start: float, deltas: list[float]) -> list[float]:
    times, now = [], start
    for delta in deltas:
        now += delta
        times.append(now)
    return times


def admitted(limiter: Limiter, times: list[float]) -> list[float]:
    return [now for now in times if limiter.try_acquire(now).allowed]


def slack(*values: float) -> float:
    """Float rounding allowance, relative to the magnitudes involved."""
    return 1e-9 * max(1.0, *(abs(v) for v in values))


@settings(deadline=None)
@given(rate=rates, burst=bursts, start=starts, deltas=gaps)
def test_token_bucket_never_admits_more_than_burst_plus_rate_times_t(
    rate: float, burst: int, start: float, deltas: list[float]
) -> None:
    passed = admitted(TokenBucket(rate_per_s=rate, burst=burst), times_from(start, deltas))
    for i, first in enumerate(passed):
        for j in range(i, len(passed)):
            span_s = passed[j] - first
            assert j - i + 1 <= burst + rate * span_s + slack(rate * passed[j])


@settings(deadline=None)
@given(rate=rates, burst=bursts, start=starts, deltas=gaps)
def test_leaky_bucket_departures_keep_the_spacing_and_the_backlog_bound(
    rate: float, burst: int, start: float, deltas: list[float]
) -> None:
    bucket = LeakyBucket(rate_per_s=rate, burst=burst)
    departures = []
    for now in times_from(start, deltas):
        decision = bucket.try_acquire(now)
        if decision.allowed:
            assert decision.delay_s * rate <= burst + slack(rate * now)
            departures.append(now + decision.delay_s)
    for earlier, later in itertools.pairwise(departures):
        assert later - earlier >= 1.0 / rate - slack(later)


@settings(deadline=None)
@given(rate=rates, window=windows, start=starts, deltas=gaps)
def test_sliding_window_log_never_exceeds_its_limit_within_any_window(
    rate: float, window: float, start: float, deltas: list[float]
) -> None:
    log = SlidingWindowLog(rate_per_s=rate, window_s=window)
    passed = admitted(log, times_from(start, deltas))
    for j, last in enumerate(passed):
        in_window = [t for t in passed[: j + 1] if t + window > last]
        assert len(in_window) <= log.limit


@settings(deadline=None)
@given(rate=rates, window=windows, start=starts, deltas=gaps)
def test_fixed_window_never_exceeds_its_limit_within_a_window(
    rate: float, window: float, start: float, deltas: list[float]
) -> None:
    limiter = FixedWindow(rate_per_s=rate, window_s=window)
    passed = admitted(limiter, times_from(start, deltas))
    per_window: dict[float, int] = {}
    for now in passed:
        per_window[now // window] = per_window.get(now // window, 0) + 1
    assert all(count <= limiter.limit for count in per_window.values())


@settings(deadline=None)
@given(
    algorithm=st.sampled_from(sorted(LIMITERS)),
    rate=rates,
    burst=bursts,
    window=windows,
    start=starts,
    deltas=gaps,
    cost=st.sampled_from([1.0, 1.0, 2.0, 0.5]),
)
def test_retrying_after_retry_after_s_passes_and_not_noticeably_sooner(
    algorithm: str,
    rate: float,
    burst: int,
    window: float,
    start: float,
    deltas: list[float],
    cost: float,
) -> None:
    limiter = make_limiter(algorithm, rate_per_s=rate, burst=burst, window_s=window)
    for now in times_from(start, deltas):
        decision = limiter.try_acquire(now, cost)
        if decision.allowed or decision.retry_after_s == math.inf:
            continue
        retry_at = now + decision.retry_after_s
        assert copy.deepcopy(limiter).try_acquire(retry_at, cost).allowed
        sooner = retry_at - 1e-6 * max(1.0, decision.retry_after_s, abs(retry_at) * 1e-6)
        if sooner > now:
            assert not copy.deepcopy(limiter).try_acquire(sooner, cost).allowed


@settings(deadline=None)
@given(
    algorithm=st.sampled_from(sorted(LIMITERS)),
    times=st.lists(st.floats(min_value=-100.0, max_value=100.0), min_size=1, max_size=80),
)
def test_time_going_backwards_admits_exactly_what_the_clamped_timeline_admits(
    algorithm: str, times: list[float]
) -> None:
    def fresh() -> Limiter:
        return make_limiter(algorithm, rate_per_s=2.0, burst=3, window_s=1.5)

    clamped, latest = [], -math.inf
    for now in times:
        latest = max(latest, now)
        clamped.append(latest)
    limiter, clamped_limiter = fresh(), fresh()
    answers = [limiter.try_acquire(now).allowed for now in times]
    clamped_answers = [clamped_limiter.try_acquire(now).allowed for now in clamped]
    assert answers == clamped_answers
