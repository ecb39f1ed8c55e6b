"""chatcap.pipeline.answers: waits as protocol numbers."""

from __future__ import annotations

import math

import pytest

from chatcap.pipeline.answers import (
    THROTTLE_MAX_S,
    UINT32_MAX_MS,
    acquire_timeout_s,
    protocol_ms,
    throttle_until,
    waited_ms,
)


@pytest.mark.parametrize(
    ("seconds", "expected_ms"),
    [(0.0, 1), (1e-9, 1), (0.001, 1), (0.0011, 2), (0.25, 250), (1.2344, 1235), (5e6, 2**32 - 1)],
)
def test_protocol_ms_rounds_up_to_whole_ms_within_uint32(seconds: float, expected_ms: int) -> None:
    assert protocol_ms(seconds) == expected_ms


def test_protocol_ms_of_never_is_the_largest_value_without_a_fallback() -> None:
    assert protocol_ms(math.inf) == UINT32_MAX_MS


def test_protocol_ms_of_never_uses_the_fallback_when_given() -> None:
    assert protocol_ms(math.inf, never_s=30.0) == 30_000
    assert protocol_ms(0.5, never_s=30.0) == 500  # a finite wait ignores it


def test_waited_ms_rounds_up_and_is_never_negative() -> None:
    assert waited_ms(0.0501) == 51
    assert waited_ms(0.0) == 0
    assert waited_ms(-1e-6) == 0


def test_throttle_holds_for_the_retry_after_at_most_the_cap() -> None:
    assert throttle_until(10.0, 0.2) == pytest.approx(10.2)
    assert throttle_until(10.0, math.inf) == 10.0 + THROTTLE_MAX_S


@pytest.mark.parametrize(("ms", "expected_s"), [(0, 0.0), (math.inf, math.inf), (250, 0.25)])
def test_acquire_timeout_inf_waits_forever_and_zero_never_waits(
    ms: float, expected_s: float
) -> None:
    assert acquire_timeout_s(ms) == expected_s


def test_acquire_timeout_below_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="acquire_timeout_ms"):
        acquire_timeout_s(-1)
