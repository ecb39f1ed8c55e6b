"""The write queue's drain rate and the ``overloaded`` answer's retry hint.

When the bounded write queue is full, a Send is refused at once with ``overloaded`` and a
``retry_after_ms``: about how long the queue now waiting takes to drain at the rate the
writer finished its last :data:`DRAIN_BATCHES` batches. The window ends at *now*, not at
the last batch, so a stalled store makes the rate (and the hint) fall instead of
freezing at its last good value. Before any batch has finished the rate is unknown and
the hint is :data:`UNKNOWN_RATE_RETRY_AFTER_MS`; the hint is capped at
:data:`OVERLOAD_RETRY_AFTER_CAP_MS`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, NamedTuple

__all__ = [
    "DRAIN_BATCHES",
    "OVERLOAD_RETRY_AFTER_CAP_MS",
    "UNKNOWN_RATE_RETRY_AFTER_MS",
    "DrainRate",
    "overload_retry_after_ms",
]

DRAIN_BATCHES: Final = 32
UNKNOWN_RATE_RETRY_AFTER_MS: Final = 1000
OVERLOAD_RETRY_AFTER_CAP_MS: Final = 60_000


class Drained(NamedTuple):
    """One finished batch: when it finished and how many sends left the queue with it."""

    at_s: float
    sends: int


class DrainRate:
    """Sends leaving the queue per second, over the last ``batches`` finished batches.

    The window holds each batch as a plain ``(at_s, sends)`` pair, the fields of
    :class:`Drained` (``record`` runs once per batch: a ``NamedTuple`` costs a call)."""

    __slots__ = ("_batches", "_done", "_sends")

    def __init__(self, batches: int = DRAIN_BATCHES) -> None:
        if batches < 1:
            raise ValueError(f"batches must be >= 1, got {batches!r}")
        self._batches = batches
        self._done: deque[tuple[float, int]] = deque(maxlen=batches)
        self._sends = 0  # the sum over _done, kept as batches come and go

    def record(self, now: float, sends: int) -> None:
        """A batch of ``sends`` finished (committed or failed) at ``now``."""
        done = self._done
        if len(done) == self._batches:
            self._sends += sends - done[0][1]
        else:
            self._sends += sends
        done.append((now, sends))

    def per_s(self, now: float) -> float | None:
        """The recent rate; None while unknown (no batch yet, or none before ``now``)."""
        done = self._done
        if not done:
            return None
        span_s = now - done[0][0]
        if span_s <= 0:
            return None
        return self._sends / span_s


def overload_retry_after_ms(queue_depth: int, rate_per_s: float | None) -> int:
    """The ``overloaded`` hint: the queue's drain time at ``rate_per_s``, whole ms."""
    if rate_per_s is None or rate_per_s <= 0:
        return UNKNOWN_RATE_RETRY_AFTER_MS
    wait_ms = math.ceil(queue_depth / rate_per_s * 1000.0)
    return max(1, min(OVERLOAD_RETRY_AFTER_CAP_MS, wait_ms))
