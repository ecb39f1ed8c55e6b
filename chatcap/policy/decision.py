"""The answer every policy gives: allow now, allow after a delay, or reject with a retry time.

Policies never read a clock. They are handed ``now`` (seconds on any epoch: ``loop.time()``
in the server, ``env.now`` in SimPy, plain numbers in tests) and return a ``Decision``.
Randomness comes in the same way, as any object with ``.random() -> float in [0, 1)``
(``random.Random`` and ``numpy.random.Generator`` both fit ``SupportsRandom``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ALLOW", "Decision", "SupportsRandom", "seconds_until"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of asking a policy for permission.

    ``allowed`` False carries ``retry_after_s``: the earliest wait after which the same
    request would pass if nothing else happened (``math.inf`` when it never can).
    ``allowed`` True may carry ``delay_s``: how long the caller must hold the request
    before sending it on (a shaper's queueing delay); 0 means go now.
    """

    allowed: bool
    retry_after_s: float = 0.0
    delay_s: float = 0.0


ALLOW = Decision(True)
"""The common answer, shared so the hot path allocates nothing."""


class SupportsRandom(Protocol):
    """A source of uniform draws in [0, 1), e.g. ``random.Random`` or a numpy Generator."""

    def random(self) -> float: ...


_MAX_NUDGES = 64


def seconds_until(now: float, at_s: float) -> float:
    """Smallest wait ``w >= 0`` such that ``now + w >= at_s`` holds in floating point.

    ``at_s - now`` alone can round so that ``now + (at_s - now)`` lands one ulp short of
    ``at_s``; a caller retrying after exactly that wait would be refused again. Nudging
    the wait up by ulps fixes that; it takes at most a few steps (never in the common
    case where ``at_s`` and ``now`` are within a factor of two, which is exact).
    """
    if at_s <= now:
        return 0.0
    if at_s == math.inf:
        return math.inf
    wait_s = at_s - now
    for _ in range(_MAX_NUDGES):
        if now + wait_s >= at_s:
            return wait_s
        wait_s = math.nextafter(wait_s, math.inf)
    return wait_s
