"""What the chat users saw, second by second: counts per whole second of the run.

The histograms and outcome counts of a ``--chat-out`` document cover the whole run; a
fault episode (a store latency spike, a retry storm after it) needs the same figures
*over time*, as the client sees them. A :class:`SecondSeries` keeps, per event kind, a
list of counts indexed by the second an event happened in — one integer addition on the
hot path, no list of events — and :func:`merge_series` adds several processes' series
up into the document's ``series`` key.

**The clock.** Seconds are whole seconds of the wall clock (Unix time), so that the
series of several Locust processes line up and add up exactly: second ``i`` of a series
covers ``[origin_unix_s + i, origin_unix_s + i + 1)``, ``origin_unix_s`` being the whole
second at or before the process's ``started_unix_s`` (the same clock and start as the
report's). Events are stamped with ``time.perf_counter_ns`` (what the users already
read): the series is anchored once, with the ``perf_counter_ns`` read at the same moment
as ``started_unix_s``, and counts the monotonic clock from there (a wall-clock step
during the run moves no event).

**The kinds** (:data:`SERIES_KEYS`), each counted when the client sees it:

* ``sent`` — messages first sent (first attempts; the model's ``offered_per_s``);
* ``attempts`` — every attempt sent, retries included (the model's ``sent_per_s``);
* ``goodput`` — messages acked *in time*: the Ack came while an attempt was still
  waiting, within ``client.ack_timeout_ms`` (the model's ``acked_per_s``);
* ``acked_after_timeout`` — messages acked while backing off: the attempt had timed out
  and the retry was not yet sent, so the client takes the Ack, though it came late;
  ``goodput + acked_after_timeout`` add up to the ``acked`` outcome;
* ``timeouts`` — attempts unanswered within the ack timeout;
* ``late_answers`` — answers that came too late to count: an Ack for a message the
  client was done with (acked already, or given up on), an Error for one done or
  backing off (the generator's ``late_answers``, second by second);

and ``errors``: ``{code: counts}``, the Error frames that answered a waiting attempt,
by code (a retry may follow). ``stopping_unix_s`` is when the runner began to stop the
users (the earliest among processes; None if never told): the seconds from there on
are the stop's, partly sent.

Pure: no clock reads (times are passed in), no gevent, no Locust.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["SERIES_KEYS", "SecondSeries", "merge_series"]

SERIES_KEYS = ("sent", "attempts", "goodput", "acked_after_timeout", "timeouts", "late_answers")
"""The per-second counts of every series, besides ``errors`` (by code)."""

_NS = 1_000_000_000


def _bump(counts: list[int], second: int, n: int) -> None:
    """Add ``n`` to ``counts[second]``, growing the list with zeros to reach it."""
    if second >= len(counts):
        counts.extend([0] * (second + 1 - len(counts)))
    counts[second] += n


class SecondSeries:
    """One process's per-second counts (see the module docstring)."""

    __slots__ = ("_origin_ns", "counts", "errors", "origin_unix_s", "stopping_unix_s")

    def __init__(self, started_unix_s: float, started_ns: int | None = None) -> None:
        """Anchor the series: ``started_ns`` is the event clock's reading (``perf_counter_ns``)
        at ``started_unix_s``; None = events are stamped in Unix nanoseconds."""
        if not math.isfinite(started_unix_s):
            raise ValueError(f"started_unix_s = {started_unix_s!r}: must be a finite time")
        self.origin_unix_s = math.floor(started_unix_s)
        if started_ns is None:
            started_ns = round(started_unix_s * _NS)
        self._origin_ns = started_ns - round((started_unix_s - self.origin_unix_s) * _NS)
        self.counts: dict[str, list[int]] = {key: [] for key in SERIES_KEYS}
        self.errors: dict[str, list[int]] = {}
        self.stopping_unix_s: float | None = None
        """When the runner began to stop the users (:meth:`stopping`); None: not yet."""

    def stopping(self, now_unix_s: float) -> None:
        """The runner begins to stop the users now (the first call counts)."""
        if self.stopping_unix_s is None:
            self.stopping_unix_s = now_unix_s

    def second(self, now_ns: int) -> int:
        """The index of the second ``now_ns`` falls in (0 for anything before the origin)."""
        return max((now_ns - self._origin_ns) // _NS, 0)

    def add(self, key: str, now_ns: int, n: int = 1) -> None:
        """Count ``n`` events of kind ``key`` (one of :data:`SERIES_KEYS`) at ``now_ns``."""
        _bump(self.counts[key], max((now_ns - self._origin_ns) // _NS, 0), n)

    def add_error(self, code: str, now_ns: int, n: int = 1) -> None:
        """Count ``n`` Error frames of ``code`` that answered an attempt, at ``now_ns``."""
        counts = self.errors.get(code)
        if counts is None:
            counts = self.errors[code] = []
        _bump(counts, max((now_ns - self._origin_ns) // _NS, 0), n)

    def __len__(self) -> int:
        """Seconds covered so far: up to the last one with an event."""
        lists = [*self.counts.values(), *self.errors.values()]
        return max((len(c) for c in lists), default=0)

    def part(self) -> dict[str, Any]:
        """The series as plain data (JSON- and msgpack-safe), every list as long as the
        longest: ``origin_unix_s``, ``step_s`` (1), ``seconds``, ``stopping_unix_s``, one
        list per :data:`SERIES_KEYS` and ``errors`` (``{code: list}``)."""
        n = len(self)

        def padded(counts: list[int]) -> list[int]:
            return [*counts, *([0] * (n - len(counts)))]

        out: dict[str, Any] = {"origin_unix_s": self.origin_unix_s, "step_s": 1, "seconds": n}
        out["stopping_unix_s"] = self.stopping_unix_s
        out.update({key: padded(self.counts[key]) for key in SERIES_KEYS})
        out["errors"] = {code: padded(c) for code, c in sorted(self.errors.items())}
        return out


def merge_series(
    series: Iterable[Mapping[str, Any] | None], started_unix_s: float | None = None
) -> dict[str, Any] | None:
    """Several processes' :meth:`SecondSeries.part` added up, second by second on the
    wall clock (each part shifted by its ``origin_unix_s``), ``stopping_unix_s`` the
    earliest; None when none has one (parts written before the series existed). With
    ``started_unix_s`` (the document's), ``t_s`` lists each second's end in seconds since
    it — the model's convention: row ``t_s`` covers ``(t_s − 1, t_s]``."""
    parts = [s for s in series if s]
    if not parts:
        return None
    for s in parts:
        if int(s.get("step_s", 1)) != 1:
            raise ValueError(f"series step_s = {s.get('step_s')!r}: only 1 s is supported")
    origin = min(int(s["origin_unix_s"]) for s in parts)
    n = max(int(s["origin_unix_s"]) - origin + int(s["seconds"]) for s in parts)

    def added(lists: Iterable[tuple[int, list[int]]]) -> list[int]:
        total = [0] * n
        for offset, counts in lists:
            for i, count in enumerate(counts):
                total[offset + i] += int(count)
        return total

    def offset(s: Mapping[str, Any]) -> int:
        return int(s["origin_unix_s"]) - origin

    out: dict[str, Any] = {"origin_unix_s": origin, "step_s": 1, "seconds": n}
    stops = [float(s["stopping_unix_s"]) for s in parts if s.get("stopping_unix_s") is not None]
    out["stopping_unix_s"] = min(stops, default=None)
    if started_unix_s is not None:
        out["t_s"] = [round(origin + i + 1 - started_unix_s, 3) for i in range(n)]
    for key in SERIES_KEYS:
        out[key] = added((offset(s), s.get(key, [])) for s in parts)
    codes = sorted({code for s in parts for code in s.get("errors", {})})
    out["errors"] = {
        code: added((offset(s), s["errors"][code]) for s in parts if code in s.get("errors", {}))
        for code in codes
    }
    return out
