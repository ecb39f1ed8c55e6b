"""Latency histograms for the load generator: µs resolution, mergeable, compact on the wire.

Every latency the generator measures (ack, delivery, schedule lag, history reads) goes
into an HdrHistogram (Gil Tene's High Dynamic Range Histogram) that tracks 1 µs .. 60 s
with 3 significant digits: about 0.1 % error at any value, a fixed ~140 KiB of counts
however many values are recorded, and merging is exact (counts add bucket by bucket).

* :class:`LatencyHistogram` — one histogram: ``record_us``, ``percentile_ms``,
  ``mean_ms``, ``merge``, and ``encode`` / ``decode`` to HdrHistogram's compressed
  base64 text (the standard interchange form; other HdrHistogram tools read it).
* :class:`HistogramSet` — histograms keyed by ``(name, codec)``, e.g. ``("ack", "json")``
  or ``("deliver", "protobuf")``; ``to_json`` / ``from_json`` give a plain
  ``{name: {codec: encoded}}`` dict, and ``merge`` folds in another set (a worker's).

Pure: no clock, no I/O, no gevent or asyncio — a Locust worker, the master and pytest
all import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]  # no stubs

__all__ = [
    "HIGHEST_US",
    "LOWEST_US",
    "SIGNIFICANT_DIGITS",
    "HistogramSet",
    "LatencyHistogram",
]

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3


class LatencyHistogram:
    """Latencies in µs, clamped to ``[0, HIGHEST_US]``; reports in ms."""

    __slots__ = ("_h", "clamped")

    def __init__(self, hdr: HdrHistogram | None = None) -> None:
        self._h = (
            hdr if hdr is not None else HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        )
        self.clamped = 0
        """Values outside the range, recorded at its nearest end (kept per process)."""

    def record_us(self, value_us: float, count: int = 1) -> None:
        """Record ``count`` occurrences of ``value_us`` (negative → 0, over 60 s → 60 s)."""
        value = int(value_us)
        if value < 0 or value > HIGHEST_US:
            self.clamped += count
            value = 0 if value < 0 else HIGHEST_US
        self._h.record_value(value, count)

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return int(self._h.get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        """The value at ``percentile`` (0..100) in ms; NaN when empty."""
        if self.count == 0:
            return float("nan")
        return float(self._h.get_value_at_percentile(percentile)) / 1000.0

    def mean_ms(self) -> float:
        """The mean in ms; NaN when empty."""
        if self.count == 0:
            return float("nan")
        return float(self._h.get_mean_value()) / 1000.0

    def max_ms(self) -> float:
        """The largest value in ms (to the histogram's precision); NaN when empty."""
        if self.count == 0:
            return float("nan")
        return float(self._h.get_max_value()) / 1000.0

    def count_at_or_above_ms(self, threshold_ms: float) -> int:
        """How many values are ≥ ``threshold_ms`` (bucket precision: ±0.1 %)."""
        threshold_us = threshold_ms * 1000.0
        return sum(count for value_us, count in self.buckets() if value_us >= threshold_us)

    def buckets(self) -> Iterator[tuple[int, int]]:
        """``(value_us, count)`` for every non-empty bucket, ascending."""
        for item in self._h.get_recorded_iterator():
            yield int(item.value_iterated_to), int(item.count_at_value_iterated_to)

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts to this histogram (exact, bucket by bucket)."""
        self._h.add(other._h)
        self.clamped += other.clamped

    def encode(self) -> str:
        """HdrHistogram's compressed, base64 form (ASCII text)."""
        return bytes(self._h.encode()).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> LatencyHistogram:
        """The histogram :meth:`encode` wrote."""
        return cls(HdrHistogram.decode(text.encode("ascii")))

    def summary(self) -> dict[str, float]:
        """Count, mean and the usual percentiles in ms (NaN when empty)."""
        return {
            "count": self.count,
            "mean_ms": self.mean_ms(),
            "p50_ms": self.percentile_ms(50),
            "p90_ms": self.percentile_ms(90),
            "p99_ms": self.percentile_ms(99),
            "p999_ms": self.percentile_ms(99.9),
            "max_ms": self.max_ms(),
        }


Key = tuple[str, str]


class HistogramSet:
    """Histograms keyed by ``(name, codec)``, created on first use."""

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[Key, LatencyHistogram] = {}

    def get(self, name: str, codec: str) -> LatencyHistogram:
        """The histogram for ``(name, codec)``; an empty one is created if absent."""
        key = (name, codec)
        hist = self._by_key.get(key)
        if hist is None:
            hist = self._by_key[key] = LatencyHistogram()
        return hist

    def record_us(self, name: str, codec: str, value_us: float) -> None:
        """Shorthand for ``get(name, codec).record_us(value_us)``."""
        self.get(name, codec).record_us(value_us)

    def keys(self) -> list[Key]:
        """The keys present, sorted."""
        return sorted(self._by_key)

    def __iter__(self) -> Iterator[Key]:
        """The keys present, sorted."""
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def merge(self, other: HistogramSet) -> None:
        """Fold ``other``'s histograms into this set, key by key."""
        for (name, codec), hist in other._by_key.items():
            self.get(name, codec).merge(hist)

    def to_json(self) -> dict[str, dict[str, str]]:
        """``{name: {codec: encoded histogram}}`` — plain JSON data."""
        out: dict[str, dict[str, str]] = {}
        for name, codec in self.keys():
            out.setdefault(name, {})[codec] = self._by_key[(name, codec)].encode()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, str]]) -> HistogramSet:
        """The set :meth:`to_json` wrote."""
        hset = cls()
        for name, by_codec in data.items():
            for codec, text in by_codec.items():
                hset.get(name, codec).merge(LatencyHistogram.decode(text))
        return hset

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{name: {codec: LatencyHistogram.summary()}}`` for people and CSV rows."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for name, codec in self.keys():
            out.setdefault(name, {})[codec] = self._by_key[(name, codec)].summary()
        return out
