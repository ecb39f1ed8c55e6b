"""Retry budgets: the ratio budget's window, gRPC's token throttle, the registry."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcap.policy import (
    BUDGETS,
    NoBudget,
    RatioRetryBudget,
    RetryBudget,
    TokenRetryThrottle,
    make_budget,
)


def test_ratio_budget_defaults_are_finagles() -> None:
    budget = RatioRetryBudget()
    assert budget.ratio == 0.2
    assert budget.allowance(0.0) == 100.0  # 10 retries/s reserve over a 10 s window


def test_ratio_budget_allows_the_reserve_with_no_traffic() -> None:
    budget = RatioRetryBudget(ratio=0.0, min_retries_per_s=1.0, window_s=3.0)
    assert [budget.try_retry(0.5) for _ in range(4)] == [True, True, True, False]


def test_ratio_budget_allows_a_share_of_requests() -> None:
    budget = RatioRetryBudget(ratio=0.5, min_retries_per_s=0.0, window_s=10.0)
    trace = []
    for now in (0.0, 1.0, 2.0, 3.0):
        budget.on_request(now)
        trace.append((now, budget.try_retry(now), budget.try_retry(now)))
    assert trace == [
        (0.0, False, False),  # 0.5 of 1 request: not a whole retry yet
        (1.0, True, False),
        (2.0, False, False),  # 1.5 allowed, 1 used
        (3.0, True, False),
    ]


def test_ratio_budget_forgets_requests_and_retries_older_than_the_window() -> None:
    budget = RatioRetryBudget(ratio=1.0, min_retries_per_s=0.0, window_s=4.0)
    for _ in range(3):
        budget.on_request(0.0)
    trace = [(now, budget.try_retry(now)) for now in (0.5, 1.0, 2.0, 3.0, 3.9, 4.0, 4.5)]
    assert trace == [
        (0.5, True),
        (1.0, True),
        (2.0, True),
        (3.0, False),
        (3.9, False),
        (4.0, False),  # bucket [0, 1) has left: the requests and the retry at 0.5
        (4.5, False),  # no requests in the window at all now
    ]
    assert (budget.requests_in_window, budget.retries_in_window) == (0, 2)


def test_ratio_budget_memory_is_a_fixed_ring_of_buckets() -> None:
    budget = RatioRetryBudget(window_s=10.0)
    for i in range(10_000):
        budget.on_request(i * 0.001)
    assert len(budget._requests) == 10
    assert RatioRetryBudget(window_s=1e6)._requests.__len__() == 600


def test_ratio_budget_counts_a_late_time_in_the_newest_bucket() -> None:
    budget = RatioRetryBudget(ratio=1.0, min_retries_per_s=0.0, window_s=2.0)
    budget.on_request(5.0)
    budget.on_request(1.0)  # earlier than already seen: still counted, never lost
    assert budget.requests_in_window == 2


@settings(deadline=None)
@given(
    ratio=st.floats(0.0, 2.0),
    reserve_per_s=st.floats(0.0, 5.0),
    window_s=st.floats(0.5, 20.0),
    events=st.lists(st.tuples(st.booleans(), st.floats(0.0, 1.0)), min_size=1, max_size=300),
)
def test_ratio_budget_never_exceeds_its_allowance(
    ratio: float,
    reserve_per_s: float,
    window_s: float,
    events: list[tuple[bool, float]],
) -> None:
    budget = RatioRetryBudget(ratio=ratio, min_retries_per_s=reserve_per_s, window_s=window_s)
    buckets = min(600, max(1, math.ceil(window_s)))
    width_s = window_s / buckets
    log: list[tuple[int, bool]] = []  # (bucket, is_retry) of everything counted
    now = 0.0
    for is_retry, delta in events:
        now += delta
        bucket = math.floor(now / width_s)
        admitted = False
        if not is_retry:
            budget.on_request(now)
            log.append((bucket, False))
        elif budget.try_retry(now):
            admitted = True
            log.append((bucket, True))
        in_window = [retry for b, retry in log if b > bucket - buckets]
        retries = sum(in_window)
        requests = len(in_window) - retries
        assert retries == budget.retries_in_window
        assert requests == budget.requests_in_window
        if admitted:
            # The budget holds when a retry is admitted; later the requests that paid for
            # it may age out of the window before the retry does, which is fine.
            assert retries <= reserve_per_s * window_s + ratio * requests + 1e-9


def test_token_throttle_follows_grpc_retry_throttling() -> None:
    throttle = TokenRetryThrottle(max_tokens=10.0, token_ratio=0.1)
    trace = [(throttle.tokens, throttle.try_retry(0.0))]
    for step in ["failure"] * 5 + ["success"] + ["failure"] * 7 + ["success"] * 200:
        throttle.on_failure() if step == "failure" else throttle.on_success()
        trace.append((throttle.tokens, throttle.try_retry(0.0)))
    assert trace[:8] == [
        (10.0, True),
        (9.0, True),
        (8.0, True),
        (7.0, True),
        (6.0, True),
        (5.0, False),  # retries only while tokens > max_tokens / 2
        (5.1, True),
        (4.1, False),
    ]
    assert trace[13] == (0.0, False)  # never below zero
    assert trace[-1] == (10.0, True)  # never above max_tokens


def test_token_throttle_reads_settings_to_three_decimals_like_grpc() -> None:
    throttle = TokenRetryThrottle(max_tokens=2.0, token_ratio=0.1234)
    throttle.on_failure()
    throttle.on_success()
    assert throttle.tokens == 1.123


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_tokens": 0.0}, r"max_tokens must be in \(0, 1000\]"),
        ({"max_tokens": 1001.0}, r"max_tokens must be in \(0, 1000\]"),
        ({"token_ratio": 0.0}, "token_ratio must be a finite number > 0"),
        ({"token_ratio": 0.0001}, "token_ratio must be >= 0.001"),
    ],
)
def test_token_throttle_validation_names_the_field(params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenRetryThrottle(**params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"ratio": -0.1}, "ratio must be a finite number >= 0"),
        ({"min_retries_per_s": -1.0}, "min_retries_per_s must be a finite number >= 0"),
        ({"window_s": 0.0}, "window_s must be a finite number > 0"),
    ],
)
def test_ratio_budget_validation_names_the_field(params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RatioRetryBudget(**params)


def test_no_budget_always_allows() -> None:
    budget = NoBudget()
    budget.on_request(0.0)
    budget.on_failure(0.0)
    budget.on_success(0.0)
    assert all(budget.try_retry(float(t)) for t in range(100))


def test_budget_registry_and_factory() -> None:
    assert list(BUDGETS) == ["ratio", "token", "none"]
    built: list[RetryBudget] = [
        make_budget("ratio", ratio=0.1, window_s=5.0),
        make_budget("token", max_tokens=4.0),
        make_budget("none"),
    ]
    assert [type(budget) for budget in built] == [RatioRetryBudget, TokenRetryThrottle, NoBudget]
    for budget in built:  # the common protocol, with time passed in
        budget.on_request(1.0)
        budget.on_failure(1.0)
        budget.on_success(1.0)
        assert budget.try_retry(1.0) in (True, False)


def test_make_budget_names_allowed_kinds_and_parameters() -> None:
    with pytest.raises(
        ValueError, match="unknown retry budget 'hedge'; use one of: ratio, token, none"
    ):
        make_budget("hedge")
    with pytest.raises(
        ValueError, match="'token' does not take ratio; it takes: max_tokens, token_ratio"
    ):
        make_budget("token", ratio=0.5)
