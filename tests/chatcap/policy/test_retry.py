"""The client retry policy: which outcomes retry, how long to wait, when to stop."""

import math

import pytest

from chatcap.policy import Backoff, NoBudget, RatioRetryBudget, RetryDecision, RetryPolicy


class FixedRandom:
    """A random source that always says the same number."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


class RecordingBudget:
    """A budget that says yes (or no) and writes down every call."""

    def __init__(self, allow: bool = True) -> None:
        self.allow = allow
        self.calls: list[tuple[str, float]] = []

    def on_request(self, now: float) -> None:
        self.calls.append(("on_request", now))

    def on_success(self, now: float) -> None:
        self.calls.append(("on_success", now))

    def on_failure(self, now: float) -> None:
        self.calls.append(("on_failure", now))

    def try_retry(self, now: float) -> bool:
        self.calls.append(("try_retry", now))
        return self.allow


def policy(max_attempts: int = 4, jitter: str = "none", budget: object = None) -> RetryPolicy:
    backoff = Backoff(base_s=0.1, cap_s=1.0, multiplier=2.0, jitter=jitter)
    return RetryPolicy(max_attempts, backoff, budget if budget is not None else NoBudget())  # type: ignore[arg-type]


HALF = FixedRandom(0.5)


def test_acked_never_retries_and_counts_as_a_success() -> None:
    budget = RecordingBudget()
    decision = policy(budget=budget).decide("acked", 1, 3.0, HALF)
    assert decision == RetryDecision(False, 0.0, "acked")
    assert budget.calls == [("on_success", 3.0)]


@pytest.mark.parametrize(
    "outcome", ["timeout", "overloaded", "store_busy", "unavailable", "rate_limited", "error"]
)
def test_retryable_outcomes_retry_after_the_backoff(outcome: str) -> None:
    assert policy().decide(outcome, 1, 0.0, HALF) == RetryDecision(True, 0.1, "retry")


@pytest.mark.parametrize("outcome", ["bad_request", "bad_frame", "not_member", "too_large"])
def test_bad_requests_are_not_retried(outcome: str) -> None:
    assert policy().decide(outcome, 1, 0.0, HALF).reason == "not_retryable"


def test_delays_grow_by_the_multiplier_up_to_the_cap() -> None:
    p = policy(max_attempts=10)
    delays = [p.decide("timeout", n, 0.0, HALF).delay_s for n in range(1, 7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_full_jitter_scales_the_ceiling_by_the_draw() -> None:
    p = policy(jitter="full")
    assert p.decide("overloaded", 2, 0.0, FixedRandom(0.25)).delay_s == pytest.approx(0.05)


def test_the_delay_is_at_least_the_servers_retry_after() -> None:
    p = policy()
    assert p.decide("rate_limited", 1, 0.0, HALF, retry_after_s=0.7).delay_s == 0.7
    assert p.decide("rate_limited", 1, 0.0, HALF, retry_after_s=0.01).delay_s == 0.1


def test_an_infinite_retry_after_means_never() -> None:
    decision = policy().decide("rate_limited", 1, 0.0, HALF, retry_after_s=math.inf)
    assert decision == RetryDecision(False, 0.0, "never")


def test_it_stops_at_max_attempts() -> None:
    p = policy(max_attempts=3)
    reasons = [p.decide("timeout", n, 0.0, HALF).reason for n in (1, 2, 3)]
    assert reasons == ["retry", "retry", "max_attempts"]


def test_one_attempt_means_never_retry() -> None:
    assert policy(max_attempts=1).decide("timeout", 1, 0.0, HALF).reason == "max_attempts"


def test_the_budget_hears_every_attempt_and_is_asked_before_a_retry() -> None:
    budget = RecordingBudget(allow=False)
    p = policy(budget=budget)
    p.on_send(1, 0.0)
    first = p.decide("timeout", 1, 2.0, HALF)
    p.on_send(2, 2.5)  # a retry does not count as a request
    assert first == RetryDecision(False, 0.0, "budget")
    assert budget.calls == [("on_request", 0.0), ("on_failure", 2.0), ("try_retry", 2.0)]


def test_a_ratio_budget_caps_retries_at_its_share_of_requests() -> None:
    p = policy(budget=RatioRetryBudget(ratio=0.5, min_retries_per_s=0.0, window_s=10.0))
    trace = []
    for n in range(4):
        p.on_send(1, float(n))
        trace.append(p.decide("store_busy", 1, float(n), HALF).retry)
    assert trace == [False, True, False, True]


def test_decorrelated_jitter_grows_from_the_previous_delay() -> None:
    p = policy(jitter="decorrelated")
    first = p.decide("timeout", 1, 0.0, FixedRandom(1.0))
    second = p.decide("timeout", 2, 0.0, FixedRandom(1.0), previous_delay_s=first.delay_s)
    assert (first.delay_s, second.delay_s) == pytest.approx((0.3, 0.9))


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        policy().decide("timeout", 0, 0.0, HALF)


def test_max_attempts_must_be_a_whole_number() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        policy(max_attempts=0)
