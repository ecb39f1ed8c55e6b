"""Backoff and jitter: exact values on fixed draws, bounds on random ones."""

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcap.policy import JITTERS, Backoff


class Draws:
    """A SupportsRandom that returns the given draws in turn."""

    def __init__(self, *values: float) -> None:
        self._values = list(values)

    def random(self) -> float:
        return self._values.pop(0)


def test_jitter_registry_names_the_aws_four() -> None:
    assert list(JITTERS) == ["none", "full", "equal", "decorrelated"]


def test_no_jitter_doubles_from_base_up_to_the_cap() -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.0, jitter="none")
    rng = random.Random(0)
    assert [backoff.delay_s(attempt, rng) for attempt in range(6)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.0,
        1.0,
    ]


def test_full_jitter_is_uniform_below_the_exponential_ceiling() -> None:
    backoff = Backoff(base_s=1.0, cap_s=100.0, jitter="full")
    assert [backoff.delay_s(3, Draws(r)) for r in (0.0, 0.5, 0.75)] == [0.0, 4.0, 6.0]


def test_equal_jitter_keeps_half_the_ceiling_and_jitters_the_rest() -> None:
    backoff = Backoff(base_s=1.0, cap_s=100.0, multiplier=3.0, jitter="equal")
    assert [backoff.delay_s(2, Draws(r)) for r in (0.0, 0.5)] == [4.5, 6.75]


def test_decorrelated_jitter_grows_from_the_previous_delay() -> None:
    backoff = Backoff(base_s=1.0, cap_s=10.0, jitter="decorrelated")
    first = backoff.delay_s(0, Draws(0.5))  # uniform(1, 3)
    second = backoff.delay_s(1, Draws(0.5), previous_s=first)  # uniform(1, 6)
    third = backoff.delay_s(2, Draws(0.9), previous_s=second)  # uniform(1, 10.5), capped
    assert [first, second, third] == [2.0, 3.5, 9.55]
    assert backoff.delay_s(3, Draws(0.99), previous_s=third) == 10.0


@pytest.mark.parametrize("jitter", list(JITTERS))
@pytest.mark.parametrize("attempt", [1024, 10**6, 10**30])
def test_huge_attempts_give_at_most_the_cap_without_overflow(jitter: str, attempt: int) -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0, jitter=jitter)
    assert 0.0 <= backoff.delay_s(attempt, Draws(0.999), previous_s=30.0) <= 30.0
    assert backoff.ceiling_s(attempt) == 30.0


def test_a_numpy_generator_is_a_source_of_randomness() -> None:
    numpy = pytest.importorskip("numpy")
    backoff = Backoff(base_s=1.0, cap_s=8.0)
    delay = backoff.delay_s(2, numpy.random.default_rng(7))
    assert 0.0 <= delay < 4.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"base_s": 0.0, "cap_s": 1.0}, "base_s must be a finite number > 0"),
        ({"base_s": 1.0, "cap_s": math.nan}, "cap_s must be a finite number > 0"),
        ({"base_s": 2.0, "cap_s": 1.0}, r"cap_s must be >= base_s \(2.0\)"),
        ({"base_s": 1.0, "cap_s": 2.0, "multiplier": 0.5}, "multiplier must be >= 1"),
        ({"base_s": 1.0, "cap_s": 2.0, "jitter": "random"}, "jitter must be one of: none, full"),
    ],
)
def test_backoff_validation_names_the_field(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**params)  # type: ignore[arg-type]


@pytest.mark.parametrize("attempt", [-1, 1.5, True])
def test_attempt_must_be_a_non_negative_int(attempt: object) -> None:
    with pytest.raises(ValueError, match="attempt must be an int >= 0"):
        Backoff(base_s=1.0, cap_s=2.0).delay_s(attempt, Draws(0.5))  # type: ignore[arg-type]


base = st.floats(min_value=1e-3, max_value=10.0)
cap_factor = st.floats(min_value=1.0, max_value=1e4)
multipliers = st.floats(min_value=1.0, max_value=10.0)
attempts = st.integers(min_value=0, max_value=5000)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(base_s=base, factor=cap_factor, multiplier=multipliers, attempt=attempts, draw=draws)
def test_every_jitter_stays_within_its_bounds(
    base_s: float, factor: float, multiplier: float, attempt: int, draw: float
) -> None:
    cap_s = base_s * factor
    ceiling = {
        jitter: Backoff(base_s=base_s, cap_s=cap_s, multiplier=multiplier, jitter=jitter)
        for jitter in JITTERS
    }
    top_s = ceiling["none"].ceiling_s(attempt)
    assert base_s * (1 - 1e-12) <= top_s <= cap_s
    assert ceiling["none"].delay_s(attempt, Draws(draw)) == top_s
    assert 0.0 <= ceiling["full"].delay_s(attempt, Draws(draw)) <= top_s
    assert top_s / 2 <= ceiling["equal"].delay_s(attempt, Draws(draw)) <= top_s


@given(
    base_s=base, factor=cap_factor, previous=st.one_of(st.none(), st.floats(0.0, 1e6)), draw=draws
)
def test_decorrelated_jitter_stays_between_base_and_three_times_previous_capped(
    base_s: float, factor: float, previous: float | None, draw: float
) -> None:
    cap_s = base_s * factor
    backoff = Backoff(base_s=base_s, cap_s=cap_s, jitter="decorrelated")
    delay = backoff.delay_s(0, Draws(draw), previous_s=previous)
    last = base_s if previous is None else min(max(previous, base_s), cap_s)
    assert base_s <= delay <= min(cap_s, 3 * last)


@given(seed=st.integers(0, 2**32), attempts_made=st.integers(1, 40))
def test_decorrelated_sequences_stay_within_base_and_cap(seed: int, attempts_made: int) -> None:
    backoff = Backoff(base_s=0.05, cap_s=5.0, jitter="decorrelated")
    rng, previous = random.Random(seed), None
    for attempt in range(attempts_made):
        previous = backoff.delay_s(attempt, rng, previous_s=previous)
        assert 0.05 <= previous <= 5.0
