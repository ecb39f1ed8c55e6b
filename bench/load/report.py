"""What one load-generator process measured, and the merged file the run writes.

Pure (no gevent, no asyncio, no clock reads: times are passed in), so pytest can check
merging without starting Locust. :class:`ProcessStats` is the accumulator every Locust
process (local runner or worker) fills while its users run; :meth:`ProcessStats.part`
turns it into a plain dict (a *part*) that travels to the master as a Locust message;
:func:`merge_parts` folds the parts into the document ``--chat-out`` names.

The ``--chat-out`` file (JSON), key by key:

==================  ==================================================================
``schema``          ``"chatcap.locust.v1"``
``mode``            ``"local"`` (one process) or ``"distributed"`` (a master's merge)
``plan``            the resolved settings: scenario, seed, codec, room size, send rate,
                    arrival, body bytes, ack timeout, max attempts
``started_unix_s``  earliest test start among the parts (wall clock, s)
``stopped_unix_s``  latest test stop among the parts
``histograms``      ``{name: {codec: encoded}}``, HdrHistogram compressed base64, values
                    in µs (:mod:`bench._support.histo`); names: ``ack`` (ack receipt − intended
                    send time: the open-loop figure), ``ack_from_send`` (ack receipt −
                    actual first send: without the generator's own lateness),
                    ``deliver`` (receipt − sender's ``sent_at_us``), ``schedule_lag``
                    (actual − intended send time), ``history`` (REST page round trip)
``summary``         ``{name: {codec: {count, mean_ms, p50_ms, p90_ms, p99_ms, p999_ms,
                    max_ms}}}`` read from the merged histograms (``null`` when empty)
``loss``            :data:`bench.load.loss.REPORT_KEYS` summed: sent, retries, acked, failed,
                    unacked, delivered, missing, duplicated, receivers
``loss_by_codec``   ``{codec: {the same keys}}``: sends counted under the sender's codec,
                    deliveries (and missing, duplicated, receivers) under the receiver's;
                    the codecs add up to ``loss``
``errors``          ``{code: count}``: every Error frame by ``code``, plus ``timeout``
                    (no answer within ``client.ack_timeout_ms``), ``closed`` (connection
                    lost) and ``connect`` (could not connect)
``outcomes``        ``{outcome: count}``: how each message ended — ``acked``, or the
                    outcome of its last attempt when the retry policy stopped
``generator``       the generator's own health: ``processes``, ``users``, ``cpu_s``
                    (process CPU, all parts), ``wall_s`` (longest part), ``cpu_pct``
                    (``cpu_s / wall_s × 100``: 100 = one core busy),
                    ``max_cpu_pct_per_process``, ``max_schedule_lag_ms``,
                    ``sends_intended`` (scheduled sends whose time had come),
                    ``sends_sent`` (first attempts sent), ``late_answers`` (answers after
                    the sender gave up), ``connects``, ``disconnects``;
                    ``window_started_unix_s`` (latest among the parts; null when the
                    warm-up was not cut), ``warmup_values`` (latencies the cut dropped);
                    ``schedule_lag_p99_ms`` (all codecs), ``kept_pace`` (bool) and
                    ``limits`` (why not: :func:`pace_limits`) — merged documents only
``series``          what the users saw second by second (:mod:`bench.load.series`):
                    ``origin_unix_s`` (the whole second at or before the earliest
                    start), ``step_s`` (1), ``seconds`` (n), ``t_s`` (each second's end,
                    s since ``started_unix_s``: row ``t_s`` covers ``(t_s − 1, t_s]``),
                    lists of n counts — ``sent`` (first attempts), ``attempts`` (retries
                    included), ``goodput`` (acked in time), ``acked_after_timeout``,
                    ``timeouts``, ``late_answers`` — and ``errors`` (``{code: list}``,
                    Error frames answering an attempt); ``stopping_unix_s`` (when the
                    users began to stop: later seconds are the stop's); the whole run,
                    warm-up included; ``null`` when no part has one
``workers``         one entry per part: ``worker`` index and its ``generator`` dict
``missing_workers`` workers that started but sent no final part (distributed only)
==================  ==================================================================

A generator that could not keep up shows ``max_schedule_lag_ms`` well above the
latencies it measures, ``sends_intended > sends_sent``, or ``max_cpu_pct_per_process``
near 100: its figures describe the generator, not the server (:func:`generator_bound`;
:func:`pace_limits` adds a schedule lag p99 over :data:`PACE_LAG_P99_MAX_MS`, and the
merged document says ``kept_pace: false`` with those reasons in ``limits``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench._support.histo import HistogramSet, LatencyHistogram
from bench.load.loss import LossLedger, merge_reports
from bench.load.series import SecondSeries, merge_series
from bench.load.tally import LatencyTally

__all__ = [
    "LEDGER_COLUMNS",
    "LEDGER_TAB",
    "SCHEMA",
    "ProcessStats",
    "generator_bound",
    "ledger_table",
    "merge_parts",
    "pace_limits",
    "write_json",
]

SCHEMA = "chatcap.locust.v1"

PACE_LAG_P99_MAX_MS = 50.0
"""Sends leaving later than this (schedule lag p99) mean the offered pace slipped (the
same bar as :data:`bench.run.figures.LAG_P99_MAX_MS`)."""

_GENERATOR_SUMS = (
    "users",
    "sends_intended",
    "sends_sent",
    "late_answers",
    "connects",
    "disconnects",
)


class ProcessStats:
    """One process's histograms, loss ledger, error counts, per-second series and
    self-metrics.

    ``started_ns`` is the users' event clock (``time.perf_counter_ns``) read at
    ``started_unix_s``: it anchors :attr:`series` (None: events are stamped in Unix ns).
    The hot path counts latencies in :class:`~bench.load.tally.LatencyTally` objects
    (:meth:`tally`); :meth:`drain` empties them and returns their counts, so the caller
    can feed Locust's statistics; :meth:`fold_histograms` (called by :meth:`part`)
    records everything counted into :attr:`histograms` — exactly what recording each
    value would have given.
    """

    def __init__(
        self, started_unix_s: float, started_cpu_s: float, started_ns: int | None = None
    ) -> None:
        self.started_unix_s = started_unix_s
        self.started_cpu_s = started_cpu_s
        self.histograms = HistogramSet()
        self.tallies: dict[tuple[str, str], LatencyTally] = {}
        self._unfolded: dict[tuple[str, str], dict[int, int]] = {}
        self.ledgers: dict[str, LossLedger] = {}
        """One loss ledger per codec (a user records into its own codec's)."""
        self.errors: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.max_lag_us = 0
        self.window_started_unix_s: float | None = None
        """When :meth:`start_window` cut the warm-up off the latencies (None: not cut)."""
        self.warmup_values = 0
        """Latency values the cut dropped (all histograms)."""
        self.counts: Counter[str] = Counter()
        """``_GENERATOR_SUMS`` counters: users, sends_intended, sends_sent, …"""
        self.series = SecondSeries(started_unix_s, started_ns)
        """Per-second counts of sends, attempts, goodput, timeouts, … (the whole run)."""

    def ledger(self, codec: str) -> LossLedger:
        """The loss ledger of ``codec``'s users in this process."""
        ledger = self.ledgers.get(codec)
        if ledger is None:
            ledger = self.ledgers[codec] = LossLedger()
        return ledger

    def loss_by_codec(self) -> dict[str, dict[str, int]]:
        """Each codec's ledger report, as of now."""
        return {codec: ledger.report() for codec, ledger in sorted(self.ledgers.items())}

    def snapshot(self, worker: int, now_unix_s: float) -> dict[str, Any]:
        """The ledger so far, for the web UI while the test runs (a part's ledger keys)."""
        return {
            "worker": worker,
            "started_unix_s": self.started_unix_s,
            "stopped_unix_s": now_unix_s,
            "loss_by_codec": self.loss_by_codec(),
        }

    def tally(self, name: str, codec: str) -> LatencyTally:
        """The tally of histogram ``(name, codec)`` (created on first use)."""
        key = (name, codec)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = LatencyTally()
        return tally

    def drain(self) -> list[tuple[str, str, dict[int, int], int]]:
        """Empty every tally; returns ``(name, codec, counts, bytes)`` for each that had
        counts. The counts wait, added up by bucket, for :meth:`fold_histograms` (one
        histogram record per bucket at the end is cheaper than one per bucket a second)."""
        drained = []
        for (name, codec), tally in sorted(self.tallies.items()):
            counts, size = tally.drain()
            if not counts:
                continue
            waiting = self._unfolded.setdefault((name, codec), {})
            for value_us, n in counts.items():
                waiting[value_us] = waiting.get(value_us, 0) + n
            drained.append((name, codec, counts, size))
        return drained

    def fold_histograms(self) -> None:
        """Drain the tallies and record every count into :attr:`histograms` (exact)."""
        self.drain()
        for (name, codec), counts in self._unfolded.items():
            hist = self.histograms.get(name, codec)
            for value_us, n in counts.items():
                hist.record_us(value_us, n)
        self._unfolded = {}

    def start_window(self, now_unix_s: float) -> list[tuple[str, str, dict[int, int], int]]:
        """The measured window starts now: latencies counted so far (the ramp and the
        warm-up) leave the histograms and the maximum lag; counts, the loss ledger,
        errors and the per-second series keep the whole run. Returns what the tallies
        held (:meth:`drain`), so the caller can still add it to Locust's rows, which
        cover the whole run."""
        drained = self.drain()
        self.warmup_values += sum(n for counts in self._unfolded.values() for n in counts.values())
        self.warmup_values += sum(
            h.count for h in (self.histograms.get(*k) for k in self.histograms)
        )
        self._unfolded = {}
        self.histograms = HistogramSet()
        self.max_lag_us = 0
        self.window_started_unix_s = now_unix_s
        return drained

    def record_lag(self, codec: str, lag_us: int) -> None:
        """How late a send went out against its intended time."""
        self.tally("schedule_lag", codec).add(lag_us)
        if lag_us > self.max_lag_us:
            self.max_lag_us = lag_us

    def part(self, worker: int, stopped_unix_s: float, stopped_cpu_s: float) -> dict[str, Any]:
        """This process's contribution as plain data (JSON- and msgpack-safe); the
        tallies are folded into the histograms first."""
        self.fold_histograms()
        wall_s = max(stopped_unix_s - self.started_unix_s, 1e-9)
        cpu_s = max(stopped_cpu_s - self.started_cpu_s, 0.0)
        generator: dict[str, Any] = {key: int(self.counts[key]) for key in _GENERATOR_SUMS}
        generator.update(
            cpu_s=cpu_s,
            wall_s=wall_s,
            cpu_pct=100.0 * cpu_s / wall_s,
            max_schedule_lag_ms=self.max_lag_us / 1000.0,
            window_started_unix_s=self.window_started_unix_s,
            warmup_values=self.warmup_values,
        )
        by_codec = self.loss_by_codec()
        return {
            "worker": worker,
            "started_unix_s": self.started_unix_s,
            "stopped_unix_s": stopped_unix_s,
            "histograms": self.histograms.to_json(),
            "loss": merge_reports(by_codec.values()),
            "loss_by_codec": by_codec,
            "errors": dict(self.errors),
            "outcomes": dict(self.outcomes),
            "series": self.series.part(),
            "generator": generator,
        }


def merge_parts(
    parts: Iterable[Mapping[str, Any]],
    plan: Mapping[str, Any],
    mode: str,
    missing_workers: Iterable[int] = (),
) -> dict[str, Any]:
    """The ``--chat-out`` document (see the module docstring) from processes' parts."""
    parts = sorted(parts, key=lambda p: int(p["worker"]))
    histograms = HistogramSet()
    errors: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for part in parts:
        histograms.merge(HistogramSet.from_json(part["histograms"]))
        errors.update(part["errors"])
        outcomes.update(part["outcomes"])
    generator = _merge_generator([p["generator"] for p in parts])
    lag = LatencyHistogram()
    for name, codec in histograms:
        if name == "schedule_lag":
            lag.merge(histograms.get(name, codec))
    generator["schedule_lag_p99_ms"] = lag.percentile_ms(99) if lag.count else None
    limits = pace_limits({"generator": generator})
    generator.update(kept_pace=not limits, limits=limits)
    started = min((p["started_unix_s"] for p in parts), default=None)
    return {
        "schema": SCHEMA,
        "mode": mode,
        "plan": dict(plan),
        "started_unix_s": started,
        "stopped_unix_s": max((p["stopped_unix_s"] for p in parts), default=None),
        "histograms": histograms.to_json(),
        "summary": _nan_to_none(histograms.summary()),
        "loss": merge_reports(p["loss"] for p in parts),
        "loss_by_codec": _merge_by_codec(parts),
        "errors": dict(sorted(errors.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "series": merge_series((p.get("series") for p in parts), started),
        "generator": generator,
        "workers": [{"worker": p["worker"], "generator": p["generator"]} for p in parts],
        "missing_workers": sorted(missing_workers),
    }


def _merge_by_codec(parts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    codecs = sorted({codec for part in parts for codec in part.get("loss_by_codec", {})})
    return {
        codec: merge_reports(
            p["loss_by_codec"][codec] for p in parts if codec in p.get("loss_by_codec", {})
        )
        for codec in codecs
    }


LEDGER_COLUMNS = (
    ("codec", "Codec"),
    ("sent", "Sent"),
    ("sent_per_s", "Sends/s"),
    ("acked", "Acked"),
    ("delivered", "Delivered"),
    ("delivered_per_s", "Deliveries/s"),
    ("missing", "Missing"),
    ("duplicated", "Duplicated"),
    ("retries", "Retries"),
    ("failed", "Failed"),
    ("unacked", "Unacked"),
    ("receivers", "Receivers"),
)
"""The ledger table's columns, ``(key, title)``, in the web UI's order."""

LEDGER_TAB = "chatcap-ledger"
"""The key of the web UI's ledger tab: ``/?tab=chatcap-ledger`` opens it."""


def ledger_table(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The loss ledger of ``parts`` (finished parts or snapshots, :meth:`ProcessStats.snapshot`)
    as the web UI's table: one row per codec, then ``all``; rates per second of the
    longest span from the earliest start to the latest stop (or now)."""
    parts = list(parts)
    by_codec = _merge_by_codec(parts)
    started = min((float(p["started_unix_s"]) for p in parts), default=0.0)
    stopped = max((float(p["stopped_unix_s"]) for p in parts), default=0.0)
    wall_s = max(stopped - started, 0.0)
    rows = [_ledger_row(codec, report, wall_s) for codec, report in by_codec.items()]
    if by_codec:
        rows.append(_ledger_row("all", merge_reports(by_codec.values()), wall_s))
    return {"wall_s": wall_s, "processes": len(parts), "rows": rows}


def _ledger_row(codec: str, report: Mapping[str, int], wall_s: float) -> dict[str, Any]:
    def rate(count: int) -> float:
        return round(count / wall_s, 1) if wall_s > 0 else 0.0

    row: dict[str, Any] = {"codec": codec, **report}
    row.update(sent_per_s=rate(report["sent"]), delivered_per_s=rate(report["delivered"]))
    return {key: row[key] for key, _ in LEDGER_COLUMNS}


def _merge_generator(gens: list[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {key: sum(int(g[key]) for g in gens) for key in _GENERATOR_SUMS}
    cpu_s = sum(float(g["cpu_s"]) for g in gens)
    wall_s = max((float(g["wall_s"]) for g in gens), default=0.0)
    merged.update(
        processes=len(gens),
        cpu_s=cpu_s,
        wall_s=wall_s,
        cpu_pct=100.0 * cpu_s / wall_s if wall_s > 0 else 0.0,
        max_cpu_pct_per_process=max((float(g["cpu_pct"]) for g in gens), default=0.0),
        max_schedule_lag_ms=max((float(g["max_schedule_lag_ms"]) for g in gens), default=0.0),
        window_started_unix_s=_latest(g.get("window_started_unix_s") for g in gens),
        warmup_values=sum(int(g.get("warmup_values", 0)) for g in gens),
    )
    return merged


def _latest(times: Iterable[float | None]) -> float | None:
    """The latest of the parts' window starts; None when any part never cut (its
    latencies cover its whole run, so the merge does too)."""
    seen = list(times)
    if not seen or any(t is None for t in seen):
        return None
    return max(float(t) for t in seen if t is not None)


def generator_bound(document: Mapping[str, Any], cpu_pct_max: float = 90.0) -> list[str]:
    """Why the generator, not the server, may have limited this run (empty: it kept up).

    A process busier than ``cpu_pct_max`` % of a core, or more than 1 % of the scheduled
    sends never sent, means the offered load was not the planned one.
    """
    gen = document["generator"]
    reasons = []
    if gen["max_cpu_pct_per_process"] > cpu_pct_max:
        reasons.append(f"a generator process used {gen['max_cpu_pct_per_process']:.0f}% CPU")
    if gen["sends_intended"] > 1.01 * gen["sends_sent"] + 1:
        behind = gen["sends_intended"] - gen["sends_sent"]
        reasons.append(f"{behind} scheduled sends never went out")
    return reasons


def pace_limits(
    document: Mapping[str, Any],
    cpu_pct_max: float = 90.0,
    lag_p99_max_ms: float = PACE_LAG_P99_MAX_MS,
) -> list[str]:
    """Why this run did not get the offered pace (empty: it did): :func:`generator_bound`'s
    reasons, and sends that left late — ``generator.schedule_lag_p99_ms`` over
    ``lag_p99_max_ms``."""
    reasons = generator_bound(document, cpu_pct_max)
    lag = document["generator"].get("schedule_lag_p99_ms")
    if lag is not None and lag > lag_p99_max_ms:
        reasons.append(f"sends left late: schedule lag p99 {lag:.0f} ms")
    return reasons


def _nan_to_none(value: Any) -> Any:
    """JSON has no NaN: empty histograms' figures become ``null``."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(path: str | Path, document: Mapping[str, Any]) -> Path:
    """Write ``document`` (creating folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n")
    tmp.replace(path)
    return path
