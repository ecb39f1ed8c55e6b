"""Exponential backoff with jitter, the jitter chosen by name.

Definitions from the AWS Architecture Blog, "Exponential Backoff and Jitter" (Marc
Brooker, 2015), with ``ceiling = min(cap_s, base_s * multiplier ** attempt)``:

================  ============================================================
``none``          ``ceiling``
``full``          ``uniform(0, ceiling)``
``equal``         ``ceiling / 2 + uniform(0, ceiling / 2)``
``decorrelated``  ``min(cap_s, uniform(base_s, 3 * previous))``, ``previous`` starting
                  at ``base_s`` (it ignores ``attempt`` and ``multiplier``)
================  ============================================================

``attempt`` 0 is the first retry. ``uniform(a, b)`` is ``a + (b - a) * rng.random()``, so
it includes ``a`` and stays below ``b``. Huge attempts give ``cap_s``, never an
OverflowError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chatcap.policy._checks import check_positive
from chatcap.policy.decision import SupportsRandom

__all__ = ["JITTERS", "Backoff", "Jitter"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delays growing by ``multiplier`` from ``base_s`` up to ``cap_s``, jittered."""

    base_s: float
    cap_s: float
    multiplier: float = 2.0
    jitter: str = "full"

    def __post_init__(self) -> None:
        check_positive("base_s", self.base_s)
        check_positive("cap_s", self.cap_s)
        if self.cap_s < self.base_s:
            raise ValueError(f"cap_s must be >= base_s ({self.base_s!r}), got {self.cap_s!r}")
        check_positive("multiplier", self.multiplier)
        if self.multiplier < 1.0:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if self.jitter not in JITTERS:
            allowed = ", ".join(JITTERS)
            raise ValueError(f"jitter must be one of: {allowed}; got {self.jitter!r}")

    def ceiling_s(self, attempt: int) -> float:
        """``min(cap_s, base_s * multiplier ** attempt)`` without overflow."""
        try:
            return min(self.cap_s, self.base_s * self.multiplier**attempt)
        except OverflowError:
            return self.cap_s

    def delay_s(self, attempt: int, rng: SupportsRandom, previous_s: float | None = None) -> float:
        """The wait before retry number ``attempt`` (0 = first retry).

        ``previous_s`` is the last delay returned, used by ``decorrelated`` only; None
        means this is the first retry (``base_s``); other values are clamped to
        ``[base_s, cap_s]``, the range ``decorrelated`` itself returns.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise ValueError(f"attempt must be an int >= 0, got {attempt!r}")
        return JITTERS[self.jitter](self, attempt, rng, previous_s)


Jitter = Callable[[Backoff, int, SupportsRandom, float | None], float]


def _no_jitter(
    backoff: Backoff, attempt: int, rng: SupportsRandom, previous_s: float | None
) -> float:
    return backoff.ceiling_s(attempt)


def _full_jitter(
    backoff: Backoff, attempt: int, rng: SupportsRandom, previous_s: float | None
) -> float:
    return backoff.ceiling_s(attempt) * rng.random()


def _equal_jitter(
    backoff: Backoff, attempt: int, rng: SupportsRandom, previous_s: float | None
) -> float:
    half_s = backoff.ceiling_s(attempt) / 2.0
    return half_s + half_s * rng.random()


def _decorrelated_jitter(
    backoff: Backoff, attempt: int, rng: SupportsRandom, previous_s: float | None
) -> float:
    base_s = backoff.base_s
    last_s = base_s if previous_s is None else min(max(previous_s, base_s), backoff.cap_s)
    return min(backoff.cap_s, base_s + (3.0 * last_s - base_s) * rng.random())


JITTERS: dict[str, Jitter] = {
    "none": _no_jitter,
    "full": _full_jitter,
    "equal": _equal_jitter,
    "decorrelated": _decorrelated_jitter,
}
"""Jitter functions by the name a scenario file uses."""
