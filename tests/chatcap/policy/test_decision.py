"""Tests for the shared decision type and the exact retry-time helper."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcap.policy import ALLOW, Decision, seconds_until

times = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


def test_allow_is_a_shared_constant_that_allows_without_delay() -> None:
    assert Decision(True, retry_after_s=0.0, delay_s=0.0) == ALLOW


def test_decision_is_frozen() -> None:
    with pytest.raises(AttributeError):
        ALLOW.allowed = False  # type: ignore[misc]


def test_seconds_until_is_zero_for_past_or_present_times() -> None:
    assert seconds_until(5.0, 5.0) == 0.0
    assert seconds_until(5.0, 4.0) == 0.0


def test_seconds_until_infinity_is_infinite() -> None:
    assert seconds_until(5.0, math.inf) == math.inf


def test_seconds_until_survives_rounding_that_would_land_short() -> None:
    now, at_s = 5.221717727865457, 60.80464202945668
    assert now + (at_s - now) < at_s  # the naive difference is one ulp short here
    wait_s = seconds_until(now, at_s)
    assert now + wait_s >= at_s


@given(now=times, ahead_s=st.floats(min_value=0.0, max_value=1e9))
def test_waiting_seconds_until_a_time_always_reaches_it(now: float, ahead_s: float) -> None:
    at_s = now + ahead_s
    wait_s = seconds_until(now, at_s)
    assert wait_s >= 0.0
    assert now + wait_s >= at_s
    assert wait_s <= max(at_s - now, 0.0) + 4 * math.ulp(max(abs(at_s), abs(now), 1e-300))
