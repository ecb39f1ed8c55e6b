"""Rate limiters on hand-made timelines: each answer asserted as one whole trace."""

import math

import pytest

from chatcap.policy import (
    ALLOW,
    LIMITERS,
    FixedWindow,
    KeyedLimiter,
    LeakyBucket,
    Limiter,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
    Unlimited,
    make_limiter,
)

Step = tuple[float, bool, float, float]


def run(limiter: Limiter, times: list[float], cost: float = 1.0) -> list[Step]:
    """Ask at each time; record (now, allowed, retry_after_s, delay_s), rounded to ns."""
    trace = []
    for now in times:
        decision = limiter.try_acquire(now, cost)
        trace.append(
            (now, decision.allowed, round(decision.retry_after_s, 9), round(decision.delay_s, 9))
        )
    return trace


def test_token_bucket_starts_full_then_refills_at_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3)
    assert run(bucket, [0.0, 0.0, 0.0, 0.0, 0.25, 0.5, 0.5, 10.0, 10.0, 10.0, 10.0]) == [
        (0.0, True, 0.0, 0.0),
        (0.0, True, 0.0, 0.0),
        (0.0, True, 0.0, 0.0),
        (0.0, False, 0.5, 0.0),
        (0.25, False, 0.25, 0.0),
        (0.5, True, 0.0, 0.0),
        (0.5, False, 0.5, 0.0),
        (10.0, True, 0.0, 0.0),
        (10.0, True, 0.0, 0.0),
        (10.0, True, 0.0, 0.0),
        (10.0, False, 0.5, 0.0),
    ]


def test_token_bucket_charges_cost_and_never_admits_more_than_burst() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=4)
    assert run(bucket, [0.0, 0.0, 1.0], cost=3.0) == [
        (0.0, True, 0.0, 0.0),
        (0.0, False, 2.0, 0.0),
        (1.0, False, 1.0, 0.0),
    ]
    assert bucket.try_acquire(2.0, cost=5.0).retry_after_s == math.inf


def test_token_bucket_time_going_backwards_grants_nothing_extra() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=2)
    assert run(bucket, [100.0, 50.0, 100.0, 60.0, 100.5, 101.0]) == [
        (100.0, True, 0.0, 0.0),
        (50.0, True, 0.0, 0.0),  # the second token of the burst, clamped to t=100
        (100.0, False, 1.0, 0.0),
        (60.0, False, 41.0, 0.0),  # passes at t=101 on the shared clock
        (100.5, False, 0.5, 0.0),
        (101.0, True, 0.0, 0.0),
    ]


def test_leaky_bucket_shapes_with_delays_and_refuses_beyond_burst() -> None:
    bucket = LeakyBucket(rate_per_s=2.0, burst=2)
    assert run(bucket, [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 3.0]) == [
        (0.0, True, 0.0, 0.0),  # departs at once
        (0.0, True, 0.0, 0.5),  # one ahead of it
        (0.0, True, 0.0, 1.0),  # two ahead: the burst is full
        (0.0, False, 0.5, 0.0),  # three ahead would be too many
        (0.5, True, 0.0, 1.0),  # departs at 1.5
        (0.5, False, 0.5, 0.0),
        (3.0, True, 0.0, 0.0),  # drained
    ]


def test_leaky_bucket_departures_are_spaced_by_cost_over_rate() -> None:
    bucket = LeakyBucket(rate_per_s=10.0, burst=5)
    delays = [bucket.try_acquire(1.0, cost=2.0).delay_s for _ in range(3)]
    assert delays == pytest.approx([0.0, 0.2, 0.4])
    assert not bucket.try_acquire(1.0, cost=2.0).allowed  # 6 requests' worth ahead


def test_fixed_window_counts_per_aligned_window() -> None:
    window = FixedWindow(rate_per_s=2.0, window_s=1.5)
    assert window.limit == 3
    assert run(window, [1.0, 1.0, 1.0, 1.0, 1.4, 1.5, 1.5, 1.5, 1.5, 7.0]) == [
        (1.0, True, 0.0, 0.0),
        (1.0, True, 0.0, 0.0),
        (1.0, True, 0.0, 0.0),
        (1.0, False, 0.5, 0.0),
        (1.4, False, 0.1, 0.0),
        (1.5, True, 0.0, 0.0),  # a new window: up to 2*limit around the edge
        (1.5, True, 0.0, 0.0),
        (1.5, True, 0.0, 0.0),
        (1.5, False, 1.5, 0.0),
        (7.0, True, 0.0, 0.0),
    ]


def test_fixed_window_limit_is_at_least_one_and_rounds() -> None:
    assert FixedWindow(rate_per_s=0.1, window_s=1.0).limit == 1
    assert FixedWindow(rate_per_s=2.6, window_s=1.0).limit == 3


def test_sliding_window_log_is_exact_over_any_window() -> None:
    log = SlidingWindowLog(rate_per_s=1.0, window_s=3.0)
    assert log.limit == 3
    assert run(log, [0.0, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.0]) == [
        (0.0, True, 0.0, 0.0),
        (1.0, True, 0.0, 0.0),
        (2.0, True, 0.0, 0.0),
        (2.5, False, 0.5, 0.0),  # the entry at 0 stops counting at 3
        (3.0, True, 0.0, 0.0),
        (3.5, False, 0.5, 0.0),
        (4.0, True, 0.0, 0.0),
        (4.0, False, 1.0, 0.0),
    ]


def test_sliding_window_log_takes_one_entry_per_unit_of_cost() -> None:
    log = SlidingWindowLog(rate_per_s=2.0, window_s=2.0)
    assert run(log, [0.0, 1.0, 1.0], cost=2.0) == [
        (0.0, True, 0.0, 0.0),
        (1.0, True, 0.0, 0.0),
        (1.0, False, 1.0, 0.0),
    ]
    assert log.try_acquire(9.0, cost=5.0).retry_after_s == math.inf


def test_sliding_window_counter_weights_the_previous_window() -> None:
    counter = SlidingWindowCounter(rate_per_s=1.0, window_s=10.0)
    assert run(counter, [5.0] * 11 + [10.0, 11.0, 11.0, 12.0, 25.0]) == [
        *[(5.0, True, 0.0, 0.0)] * 10,
        (5.0, False, 6.0, 0.0),  # these 10 weigh 90 % at 11, where 9 + 1 fits
        (10.0, False, 1.0, 0.0),  # previous 10 at weight 1.0
        (11.0, True, 0.0, 0.0),  # 10 * 0.9 + 0 + 1 = 10
        (11.0, False, 1.0, 0.0),  # 10 * 0.8 + 1 + 1 = 10 at 12
        (12.0, True, 0.0, 0.0),
        (25.0, True, 0.0, 0.0),  # two windows later: the previous count is gone
    ]


def test_unlimited_always_allows_without_allocating() -> None:
    limiter = Unlimited()
    assert all(limiter.try_acquire(t, 1e9) is ALLOW for t in (0.0, 0.0, -5.0))


@pytest.mark.parametrize("name", sorted(LIMITERS))
def test_every_registered_limiter_allows_the_first_request_with_the_shared_constant(
    name: str,
) -> None:
    limiter = make_limiter(name, rate_per_s=5.0, burst=2, window_s=1.0)
    assert limiter.try_acquire(100.0) is ALLOW


@pytest.mark.parametrize("name", sorted(set(LIMITERS) - {"none"}))
def test_every_limiter_rejects_a_non_positive_cost(name: str) -> None:
    limiter = make_limiter(name, rate_per_s=5.0, burst=2, window_s=1.0)
    with pytest.raises(ValueError, match="cost must be > 0"):
        limiter.try_acquire(0.0, cost=0.0)


def test_registry_names_the_six_algorithms() -> None:
    assert sorted(LIMITERS) == [
        "fixed_window",
        "leaky_bucket",
        "none",
        "sliding_window_counter",
        "sliding_window_log",
        "token_bucket",
    ]


def test_make_limiter_names_the_allowed_algorithms_for_an_unknown_one() -> None:
    with pytest.raises(ValueError, match=r"'gcra'.*fixed_window.*token_bucket"):
        make_limiter("gcra", rate_per_s=1.0, burst=1, window_s=1.0)


@pytest.mark.parametrize(
    ("algorithm", "params", "message"),
    [
        ("token_bucket", {"rate_per_s": 0.0, "burst": 1, "window_s": 1.0}, "rate_per_s"),
        ("token_bucket", {"rate_per_s": 1.0, "burst": 0, "window_s": 1.0}, "burst"),
        ("leaky_bucket", {"rate_per_s": 1.0, "burst": 1.5, "window_s": 1.0}, "burst"),
        ("leaky_bucket", {"rate_per_s": math.inf, "burst": 1, "window_s": 1.0}, "rate_per_s"),
        ("fixed_window", {"rate_per_s": 1.0, "burst": 1, "window_s": 0.0}, "window_s"),
        ("sliding_window_log", {"rate_per_s": -1.0, "burst": 1, "window_s": 1.0}, "rate_per_s"),
        ("sliding_window_counter", {"rate_per_s": 1.0, "burst": 1, "window_s": -2.0}, "window_s"),
    ],
)
def test_bad_parameters_raise_a_value_error_naming_the_field(
    algorithm: str, params: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_limiter(algorithm, **params)  # type: ignore[arg-type]


def test_burst_given_as_a_whole_float_is_accepted() -> None:
    bucket = make_limiter("token_bucket", rate_per_s=1.0, burst=2.0, window_s=1.0)  # type: ignore[arg-type]
    assert [bucket.try_acquire(0.0).allowed for _ in range(3)] == [True, True, False]


def test_keyed_limiter_keeps_one_limiter_per_key() -> None:
    keyed = KeyedLimiter(lambda: TokenBucket(rate_per_s=1.0, burst=1))
    trace = [(key, keyed.try_acquire(key, 0.0).allowed) for key in ["ann", "bob", "ann", "bob"]]
    assert trace == [("ann", True), ("bob", True), ("ann", False), ("bob", False)]
    assert len(keyed) == 2


def test_keyed_limiter_evicts_the_least_recently_used_key_which_restarts_fresh() -> None:
    keyed = KeyedLimiter(lambda: TokenBucket(rate_per_s=1.0, burst=1), max_keys=2)
    trace = []
    for key in ["a", "b", "a", "c", "b", "a"]:
        trace.append(
            (key, keyed.try_acquire(key, 0.0).allowed, sorted(k for k in "abc" if k in keyed))
        )
    assert trace == [
        ("a", True, ["a"]),
        ("b", True, ["a", "b"]),
        ("a", False, ["a", "b"]),  # "a" is now the most recently used
        ("c", True, ["a", "c"]),  # "b" evicted
        ("b", True, ["b", "c"]),  # "b" back with a full bucket; "a" evicted
        ("a", True, ["a", "b"]),
    ]


def test_keyed_limiter_rejects_a_bad_max_keys() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        KeyedLimiter(Unlimited, max_keys=0)
