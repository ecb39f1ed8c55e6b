"""Latencies counted cheaply on the generator's hot path, folded into histograms in bulk.

Recording a value into an HdrHistogram from Python costs several µs (bucket index
arithmetic in pure Python), and so does one Locust ``request`` event; at tens of
thousands of deliveries per second that was most of the generator's CPU. A
:class:`LatencyTally` instead counts each value in a dict keyed by the value rounded
*down to its HdrHistogram bucket* (3 significant digits: exact below 2,048 µs, then
buckets of 2, 4, 8 … µs), so recording is a few integer operations and a dict update,
and the dict stays small (at most ~1,024 keys per power of two). :meth:`LatencyTally.drain`
hands the counts over and starts again; folding them into a
:class:`~bench._support.histo.LatencyHistogram` with ``record_us(value, count)`` gives
exactly the histogram that recording every value would have given (same buckets, same
counts; values out of range still clamp there).

:func:`locust_figures` turns drained counts into what one Locust statistics row
needs (count, sum, min, max in ms, and the row's rounded response-time buckets), so the
same counts feed Locust's statistics too (:mod:`bench.load.runstate` folds them once a
second). Its min, max and mean are those of the bucket floors: within 0.1 % of the raw
values.

Pure: no clock, no I/O, no gevent, no Locust.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bench._support.histo import HIGHEST_US

__all__ = ["LatencyTally", "LocustFigures", "bucket_floor_us", "locust_figures"]

_SUB_BUCKET_BITS = 11
"""HdrHistogram with 3 significant digits has 2,048 sub-buckets: values below 2**11 µs
are exact, and each power of two above keeps 1,024 buckets."""


def bucket_floor_us(value_us: int) -> int:
    """The lowest value of ``value_us``'s HdrHistogram bucket (1 µs .. 60 s, 3 digits);
    values out of range are returned as they are (the histogram clamps them)."""
    shift = value_us.bit_length() - _SUB_BUCKET_BITS
    if shift > 0 and 0 <= value_us <= HIGHEST_US:
        return value_us >> shift << shift
    return value_us


class LatencyTally:
    """Counts of µs values by HdrHistogram bucket, plus the bytes they came with."""

    __slots__ = ("counts", "size_bytes")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.size_bytes = 0

    def add(self, value_us: int, size_bytes: int = 0) -> None:
        """Count one value (µs, an int) of a message of ``size_bytes``."""
        shift = value_us.bit_length() - _SUB_BUCKET_BITS
        if shift > 0 and 0 <= value_us <= HIGHEST_US:
            value_us = value_us >> shift << shift
        counts = self.counts
        counts[value_us] = counts.get(value_us, 0) + 1
        self.size_bytes += size_bytes

    def drain(self) -> tuple[dict[int, int], int]:
        """The counts and bytes so far; the tally starts again from empty."""
        counts, size = self.counts, self.size_bytes
        self.counts, self.size_bytes = {}, 0
        return counts, size

    def __len__(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class LocustFigures:
    """One Locust statistics row's share of some drained counts (times in ms)."""

    count: int
    total_ms: float
    min_ms: float
    max_ms: float
    buckets: dict[int, int]
    """Locust's rounded response time (ms) → count."""
    size_bytes: int


def locust_figures(
    counts: Mapping[int, int], size_bytes: int, bucket: Callable[[float], int]
) -> LocustFigures | None:
    """The row figures of ``counts`` (µs value → count), response times rounded by
    ``bucket`` (Locust's ``bucket_response_time``); None when there are none."""
    if not counts:
        return None
    total = 0.0
    buckets: dict[int, int] = {}
    for value_us, n in counts.items():
        ms = max(value_us, 0) / 1000.0
        total += ms * n
        key = bucket(ms)
        buckets[key] = buckets.get(key, 0) + n
    lo, hi = max(min(counts), 0) / 1000.0, max(max(counts), 0) / 1000.0
    return LocustFigures(sum(counts.values()), total, lo, hi, buckets, size_bytes)
