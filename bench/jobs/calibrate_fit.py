"""From measured points to the model's costs: the fits, then the calibration file's contents.

:func:`fit_line`, :func:`fit_loop_costs` and the per-batch figures turn the points
:mod:`bench.jobs.calibrate` measured into :class:`sim.calibration.Costs`;
:func:`build_costs` writes them with their provenance (``notes``, the plan, the raw
points); :func:`format_table` is the table the command prints.
"""

from __future__ import annotations

import gc
import math
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from bench._support.clients import WINDOW
from bench._support.metrics_scrape import histogram_quantile
from bench._support.servers import (
    SCENARIO_OVERRIDES,
)
from chatcap.policy.commit import commit_place
from chatcap.results import git_sha, machine_info
from chatcap.scenario import CODEC_NAMES, Scenario
from sim.calibration import Costs

ROOM_SIZES = (1, 2, 21)  # 1 = echo
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LONE_WINDOW = 1  # one send in flight: every message a batch of its own
LONE_ROOM = 21  # the lone fan-out point's room: members asleep between messages
COLD_GAPS_MS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # the cold-path probe's idle gaps
COLD_CODEC = "json"  # the probe's codec: the penalty is the loop's idleness, not a codec's
COLD_ROOM = 10  # the cold fan-out's room: the sender and 9 members idle for the gap too
PING_PROBE_S = 0.25  # the background probe's keepalive interval: many pings in a short hold


@dataclass(frozen=True)
class Plan:
    """How much to measure (``--quick`` shrinks every count)."""

    repeat: int
    messages: dict[int, int]  # room size → measured messages
    lone_messages: int  # echo messages at one in flight (per_batch_loop_us)
    codec_target_s: float
    codec_repeat: int
    store_repeat: int
    commits_per_repeat: int
    commit_samples: int
    timeout_s: float
    sustained_commits: int = 3000  # the store's sustained run: this many commits ...
    sustained_batch: int = 4  # ... of this many rows each
    background_base_s: float = 1.0  # the background probe: the idle server alone ...
    background_connections: int = 200  # ... then this many idle connections ...
    background_hold_s: float = 2.0  # ... held this long, pinged every PING_PROBE_S
    scrapes: int = 20  # GET /metrics this many times
    cold_seconds: float = 1.5  # the cold-path probe: about this long per gap ...
    cold_min_messages: int = 30  # ... but at least this many sends ...
    cold_max_messages: int = 400  # ... and at most this many
    gc_crowd_min: int = 1000  # the collector probe: at least this many idle connections ...
    gc_crowd_max: int = 5000  # ... at most this many ...
    gc_hold_s: float = 120.0  # ... held at most this long (the client is ended after) ...
    gc_messages: int = 20_000  # ... while this many echo messages (fewer in bigger rooms)
    gc_full: bool = True  # ... then the table filled and the same again


FULL = Plan(
    repeat=3,
    messages={1: 10_000, 2: 5_000, 21: 1_500},
    lone_messages=3_000,
    codec_target_s=0.02,
    codec_repeat=7,
    store_repeat=7,
    commits_per_repeat=20,
    commit_samples=100,
    timeout_s=120.0,
)
QUICK = Plan(
    repeat=1,
    messages={1: 2_000, 2: 1_000, 21: 400},
    lone_messages=500,
    codec_target_s=0.002,
    codec_repeat=3,
    store_repeat=3,
    commits_per_repeat=3,
    commit_samples=20,
    timeout_s=60.0,
    sustained_commits=600,
    sustained_batch=4,
    background_base_s=0.3,
    background_connections=40,
    background_hold_s=0.5,
    scrapes=5,
    cold_seconds=0.3,
    cold_min_messages=10,
    cold_max_messages=60,
    gc_crowd_min=200,
    gc_crowd_max=200,
    gc_hold_s=60.0,
    gc_messages=3_000,
    gc_full=False,
)


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b·x``; returns ``(a, b)``. Needs two distinct x."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        raise ValueError("fit_line needs points at two distinct x at least")
    design = np.column_stack([np.ones(len(xs)), np.asarray(xs, dtype=float)])
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(ys, dtype=float), rcond=None)
    return float(a), float(b)


@dataclass(frozen=True)
class Point:
    """One server measurement: a room of ``room_size`` members speaking ``codec``."""

    codec: str
    room_size: int
    repeat: int
    messages: int
    deliveries: int
    process_us_per_msg: float  # the whole server process, measured phase
    loop_share: float  # event-loop thread / process CPU over the client run
    loop_us_per_msg: float
    window: int = WINDOW  # sends in flight
    server_ack_mean_ms: float = math.nan  # the server's own mean, frame in → Ack out
    server_ack_buckets: tuple[tuple[float, float], ...] = ()  # (le s, cumulative count)
    wall_s: float = math.nan  # the load client's run, wall clock
    server_cpu_s: float = math.nan  # the server process over that run (/proc)
    client_cpu_s: float = math.nan  # the load client process (its rusage)
    # the server's stage means over the point (chatcap.pipeline.stages), ms; NaN if none
    stage_means_ms: tuple[tuple[str, float], ...] = ()
    # the garbage collector over the point, by generation: collections, and their time (s)
    gc_collections: tuple[float, ...] = ()
    gc_pause_s: tuple[float, ...] = ()
    # the server's own store commits over the point: batches, rows, seconds (/metrics)
    commit_batches: float = 0.0
    commit_rows: float = 0.0
    commit_s: float = 0.0
    crowd: int = 0  # idle connections held on the server meanwhile (the collector probe)
    table_full: bool = False  # the server's idempotency table was full (the same probe)
    # the collector probe's load-shaped point (loadclient --case rooms): ``crowd`` is then
    # its own connections, in rooms of ``room_size``, every one of them sending in turn
    active: bool = False

    @property
    def frames(self) -> int:
        """Frames written per message: the Ack + one Deliver per other member."""
        return self.room_size


@dataclass(frozen=True)
class ColdPoint:
    """One gap of the cold-path probe: one send in flight, ``gap_ms`` idle before each."""

    gap_ms: float
    repeat: int
    messages: int
    server_ack_mean_ms: float  # the server's own mean, frame in → Ack out (/metrics)
    rtt_p50_ms: float  # the client's round trip
    rtt_mean_ms: float
    cpu_us_per_msg: float  # the server process's CPU per message (schedstat)
    room_size: int = 1  # 1: the echo; COLD_ROOM: the cold fan-out (members reading)
    fanout_stage_ms: float = math.nan  # the server's fanout stage mean (/metrics)


@dataclass(frozen=True)
class GcProbe:
    """The collector probe's points (JSON, rooms of 1, 2, 21) and the crowd of idle
    connections its server held meanwhile."""

    points: tuple[Point, ...]
    crowd: int


@dataclass(frozen=True)
class BackgroundProbe:
    """What the background probe read (server CPU seconds over each phase)."""

    base_s: float  # the idle server, no connection: how long ...
    base_cpu_s: float  # ... and its CPU meanwhile
    connections: int  # idle connections held ...
    hold_s: float  # ... this long ...
    hold_cpu_s: float  # ... and the server's CPU meanwhile
    ping_interval_s: float  # the keepalive interval the probe's server ran with
    scrapes: int  # GET /metrics this many times ...
    scrape_s: float  # ... taking this long ...
    scrape_cpu_s: float  # ... and the server's CPU meanwhile


def background_costs(probe: BackgroundProbe) -> tuple[float, float, float]:
    """``(background_us_per_s, ping_us, scrape_us)`` from the probe: the idle server's
    CPU per second; the hold's CPU less that base, over the pings it held (connections ×
    hold ÷ interval); the scrapes' CPU less the base over their time, per scrape. Never
    below 0 (a noisy base can exceed a small hold)."""
    base = probe.base_cpu_s / probe.base_s * 1e6 if probe.base_s > 0 else 0.0
    pings = probe.connections * probe.hold_s / probe.ping_interval_s
    held_us = probe.hold_cpu_s * 1e6 - base * probe.hold_s
    ping = max(0.0, held_us / pings) if pings > 0 else 0.0
    scraped_us = probe.scrape_cpu_s * 1e6 - base * probe.scrape_s
    scrape = max(0.0, scraped_us / probe.scrapes) if probe.scrapes > 0 else 0.0
    return max(0.0, base), ping, scrape


def cold_messages(gap_ms: float, plan: Plan) -> int:
    """Sends at ``gap_ms``: about ``plan.cold_seconds`` of them (a send and its answer
    take ~0.5 ms besides the gap), within the plan's bounds."""
    n = int(plan.cold_seconds * 1000.0 / (gap_ms + 0.5))
    return max(plan.cold_min_messages, min(plan.cold_max_messages, n))


def cold_penalty_us_by_gap_ms(points: Sequence[ColdPoint]) -> dict[float, float]:
    """``{gap ms: penalty µs}``: per gap the median over repeats of the server's mean ack
    latency, less the same at the smallest gap (back-to-back: the warm path the other
    figures were measured on), never below 0. The model's :class:`sim.calibration.ColdPath`
    makes it non-decreasing. Empty with fewer than two gaps measured.

    The server's own latency, not the client's round trip: the model's latency is the
    server's (frame read → Ack written), and what an idle client pays to wake up is the
    client's. Both are in ``details`` (:func:`cold_summary`)."""
    by_gap: dict[float, list[float]] = {}
    for p in points:
        if p.room_size == 1 and math.isfinite(p.server_ack_mean_ms):
            by_gap.setdefault(p.gap_ms, []).append(p.server_ack_mean_ms)
    if len(by_gap) < 2:
        return {}
    medians = {gap: statistics.median(values) for gap, values in sorted(by_gap.items())}
    base = medians[min(medians)]
    return {gap: max(0.0, (ms - base) * 1000.0) for gap, ms in medians.items()}


FANOUT_AWAKE_GAP_MS = 1.0
"""Below this gap the cold fan-out's probe is not the generator's case: its readers (one
client process, one message in flight) still fall asleep between messages, while a load
generator sending that often keeps its readers busy. :func:`fanout_us_by_gap_ms` puts the
busy readers' cost (the windowed fan-out's per-frame slope) at gap 0 instead."""


def fanout_us_by_gap_ms(
    points: Sequence[ColdPoint], encode_deliver_us: float, busy_us: float | None = None
) -> dict[float, float]:
    """``{gap ms: µs per recipient}`` of the cold fan-out (members idle for the gap as
    well as the loop): per gap the median over repeats of the server's ``fanout`` stage
    mean, less the Deliver's one encoding, ÷ the ``room_size − 1`` frames written — wall
    time on the loop (the writes wake their readers), not only its CPU. With
    ``busy_us`` (a frame to a busy reader: the windowed fan-out's slope), the gaps below
    :data:`FANOUT_AWAKE_GAP_MS` give way to ``{0: busy_us}``. Empty with fewer than two
    gaps."""
    by_gap: dict[float, list[float]] = {}
    for p in points:
        if p.room_size > 1 and math.isfinite(p.fanout_stage_ms):
            us = (p.fanout_stage_ms * 1000.0 - encode_deliver_us) / (p.room_size - 1)
            by_gap.setdefault(p.gap_ms, []).append(max(0.0, us))
    table = {gap: statistics.median(values) for gap, values in sorted(by_gap.items())}
    if busy_us is not None and table:
        table = {g: v for g, v in table.items() if g >= FANOUT_AWAKE_GAP_MS}
        table[0.0] = max(0.0, busy_us)
        table = dict(sorted(table.items()))
    return table if len(table) >= 2 else {}


def cold_summary(points: Sequence[ColdPoint]) -> dict[str, dict[str, float]]:
    """Per gap (``"0.3"``): medians over repeats of the server mean, the client round
    trip (p50, mean) and the server CPU per message — the probe's whole picture."""
    out: dict[str, dict[str, float]] = {}
    echo = [p for p in points if p.room_size == 1]
    for gap in sorted({p.gap_ms for p in echo}):
        at = [p for p in echo if p.gap_ms == gap]
        out[f"{gap:g}"] = {
            "server_ack_mean_ms": statistics.median(p.server_ack_mean_ms for p in at),
            "rtt_p50_ms": statistics.median(p.rtt_p50_ms for p in at),
            "rtt_mean_ms": statistics.median(p.rtt_mean_ms for p in at),
            "cpu_us_per_msg": statistics.median(p.cpu_us_per_msg for p in at),
        }
    return out


def loop_residual_us(point: Point, costs: Costs) -> float:
    """``y`` of the module docstring: loop µs less the codec work the model adds itself."""
    codec = point.codec
    y = point.loop_us_per_msg - costs.decode_us[codec] - costs.encode_ack_us[codec]
    if point.room_size > 1:
        y -= costs.encode_deliver_us[codec]
    return y


def fit_loop_costs(points: Sequence[Point], costs: Costs) -> tuple[float, float]:
    """``(per_send_fixed_us, per_recipient_send_us)`` by least squares over the
    windowed ``points`` (lone-message points are left to :func:`per_batch_loop_us`)."""
    used = [p for p in points if p.window == WINDOW]
    return fit_line([p.frames for p in used], [loop_residual_us(p, costs) for p in used])


# fine enough that a stall in 0.2 % of the batches (a WAL checkpoint) keeps its
# frequency: with 200 quantiles the top one stood for 0.5 % and the model drew the stall
# 2.5 times too often
WAIT_QUANTILES = tuple((i + 0.5) / 1000 for i in range(1000))


def _on_path_ms(point: Point, costs: Costs) -> float:
    """What the model puts on a lone echo's server-side path: ingress, the batch's loop
    cost, a commit of one, the Ack (ms)."""
    c = point.codec
    loop_us = (
        costs.per_send_fixed_us
        + costs.decode_us[c]
        + costs.per_batch_loop_us
        + costs.encode_ack_us[c]
        + costs.per_recipient_send_us
    )
    return loop_us / 1000.0 + costs.store_commit_fixed_ms


def per_batch_wait_samples_ms(points: Sequence[Point], costs: Costs) -> tuple[float, ...]:
    """The wait's distribution: 1,000 evenly spaced quantiles of each lone point's server
    ack latency (read from its histogram's buckets, interpolated as Prometheus does) less
    that point's modelled path, clipped at 0; the median over points, quantile by
    quantile. Empty when no lone point has buckets or every quantile is 0."""
    lone = [
        p for p in points if p.window == LONE_WINDOW and p.room_size == 1 and p.server_ack_buckets
    ]
    if not lone:
        return ()
    rows = [
        [
            max(0.0, histogram_quantile(q, p.server_ack_buckets) * 1000.0 - _on_path_ms(p, costs))
            for q in WAIT_QUANTILES
        ]
        for p in lone
    ]
    samples = tuple(float(v) for v in np.median(np.asarray(rows), axis=0))
    return samples if any(v > 0 for v in samples) else ()


def per_batch_wait_ms(points: Sequence[Point], costs: Costs) -> float:
    """Wall time per lone batch that neither the loop's CPU nor the commit explains:
    each lone echo point's server-side mean ack latency less what the model puts on
    that path (ingress, the batch's loop cost, a commit of one, the Ack); the median,
    never below 0. 0 when no lone point has a server figure."""
    lone = [
        p
        for p in points
        if p.window == LONE_WINDOW and p.room_size == 1 and math.isfinite(p.server_ack_mean_ms)
    ]
    if not lone:
        return 0.0
    extra = [p.server_ack_mean_ms - _on_path_ms(p, costs) for p in lone]
    return max(0.0, float(statistics.median(extra)))


def per_recipient_lone_us(points: Sequence[Point], costs: Costs) -> float | None:
    """The cost of one frame to a member that sleeps between messages: per codec and
    repeat, the lone fan-out point (a room of :data:`LONE_ROOM`, one send in flight) less
    the lone echo point, less the one Deliver encode, over the ``LONE_ROOM − 1`` extra
    frames; the median, never below 0. None without such pairs.

    A write to a socket whose reader is asleep wakes it, which on loopback is done inside
    the writer's own ``write()`` — dearer than the windowed fan-out's writes, whose
    reader is busy. Chat members at a few messages per second are asleep between them.
    """
    echo = {(p.codec, p.repeat): p for p in points if p.window == LONE_WINDOW and p.room_size == 1}
    slopes = []
    for p in points:
        if p.window != LONE_WINDOW or p.room_size != LONE_ROOM or (p.codec, p.repeat) not in echo:
            continue
        base = echo[(p.codec, p.repeat)]
        extra = p.loop_us_per_msg - base.loop_us_per_msg - costs.encode_deliver_us[p.codec]
        slopes.append(extra / (LONE_ROOM - 1))
    return max(0.0, float(statistics.median(slopes))) if slopes else None


def lone_stage_us(points: Sequence[Point], stage: str) -> float | None:
    """The median over lone echo points (one send in flight: an idle loop) of the
    server's own mean time of ``stage``, µs; None when no such point timed it."""
    values = []
    for p in points:
        if p.window != LONE_WINDOW or p.room_size != 1:
            continue
        ms = dict(p.stage_means_ms).get(stage, math.nan)
        if math.isfinite(ms):
            values.append(ms * 1000.0)
    return float(statistics.median(values)) if values else None


def stage_split_us(points: Sequence[Point], costs: Costs) -> tuple[float, float]:
    """``(ingress_stage_us, post_submit_us)``: the parts of ``per_send_fixed_us`` the
    server's own stopwatch puts after ``t_in`` — the ingress stage beyond the decode
    (limiter, checks, dedup: the median lone ``ingress`` mean less the decode, median
    over codecs) and what the loop does after the submit before the writer's turn (the
    lone ``queue`` stage: nothing else waits on an idle loop). Clipped so that the two
    never exceed ``per_send_fixed_us``; (0, 0) without stage times."""
    ingress = []
    for codec in CODEC_NAMES:
        us = lone_stage_us([p for p in points if p.codec == codec], "ingress")
        if us is not None:
            ingress.append(us - costs.decode_us[codec])
    post = lone_stage_us(points, "queue")
    fixed = costs.per_send_fixed_us
    ingress_us = min(max(0.0, statistics.median(ingress)) if ingress else 0.0, fixed)
    post_us = min(max(0.0, post or 0.0), fixed - ingress_us)
    return ingress_us, post_us


def per_batch_thread_us(points: Sequence[Point], costs: Costs) -> float:
    """CPU outside the loop per lone batch, less SQLite's commit itself (done with the
    interpreter lock released): each lone echo point's process − loop µs per message less
    ``store_commit_fixed_ms``; the median, never below 0. 0 without lone points."""
    lone = [p for p in points if p.window == LONE_WINDOW and p.room_size == 1]
    if not lone:
        return 0.0
    commit_us = costs.store_commit_fixed_ms * 1000.0
    extra = [p.process_us_per_msg - p.loop_us_per_msg - commit_us for p in lone]
    return max(0.0, float(statistics.median(extra)))


def per_batch_loop_us(points: Sequence[Point], costs: Costs) -> float:
    """The loop's cost of a batch of one beyond the per-send figures: each lone echo
    point's residual less ``per_send_fixed + per_recipient`` (one frame); the median,
    never below 0. 0 when there is no lone point."""
    lone = [p for p in points if p.window == LONE_WINDOW and p.room_size == 1]
    if not lone:
        return 0.0
    fixed, per_recipient = costs.per_send_fixed_us, costs.per_recipient_send_us
    extra = [loop_residual_us(p, costs) - fixed - per_recipient for p in lone]
    return max(0.0, float(statistics.median(extra)))


@dataclass(frozen=True)
class StoreFigures:
    ms_by_batch: dict[int, float]  # median over repeats of each repeat's mean commit ms
    fixed_ms: float  # batch of one
    per_msg_ms: float  # least-squares slope over the batch sizes
    intercept_ms: float  # the same fit's value at batch size 0
    samples_ms: tuple[float, ...]  # raw batch-of-one commits
    sustained_ms: tuple[float, ...] = ()  # a sustained run's commits, in order
    sustained_batch: int = 0  # ... each of this many rows


STALL_FACTOR = 10.0  # a sustained-run commit over this × the median is a stall


@dataclass(frozen=True)
class GcFigures:
    """The collector's figures by generation (:func:`gc_costs`); empty: none measured."""

    per_msg: tuple[float, ...] = ()
    per_recipient: tuple[float, ...] = ()
    per_msg_full: tuple[float, ...] = ()
    per_recipient_full: tuple[float, ...] = ()
    pause_us: tuple[float, ...] = ()
    pause_us_per_connection: tuple[float, ...] = ()


def _gc_rates(points: Sequence[Point], g: int) -> tuple[float, float]:
    """Generation ``g``'s collections per message against the Delivers per message: the
    least-squares line, clamped at 0 (one room size, or a slope below 0: the mean)."""
    xs = [float(p.room_size - 1) for p in points]
    ys = [p.gc_collections[g] / p.messages for p in points]
    a, b = fit_line(xs, ys) if len(set(xs)) >= 2 else (statistics.fmean(ys), 0.0)
    if b < 0:  # no growth with the room: the mean alone
        a, b = statistics.fmean(ys), 0.0
    return max(a, 0.0), max(b, 0.0)


def _connections(p: Point) -> int:
    """The connections a collector point's server held: a load-shaped point's own, else
    the crowd plus the load client's :data:`WINDOW`."""
    return p.crowd if p.active else p.crowd + WINDOW


def _gc_pause(points: Sequence[Point], g: int) -> tuple[float, float]:
    """Generation ``g``'s pause (µs) against the connections held (:func:`_connections`):
    per count of connections, its time ÷ its collections; a line through those (one count
    alone, or a slope below 0: the mean), clamped at 0."""
    by_crowd: list[tuple[float, float]] = []
    for held in sorted({_connections(p) for p in points}):
        same = [p for p in points if _connections(p) == held]
        count = sum(p.gc_collections[g] for p in same)
        if count:
            total = sum(p.gc_pause_s[g] for p in same)
            by_crowd.append((float(held), total / count * 1e6))
    if not by_crowd:
        return 0.0, 0.0
    if len(by_crowd) == 1:
        return max(by_crowd[0][1], 0.0), 0.0
    c0, s0 = fit_line([c for c, _ in by_crowd], [v for _, v in by_crowd])
    if s0 < 0:
        c0, s0 = statistics.fmean(v for _, v in by_crowd), 0.0
    return max(c0, 0.0), max(s0, 0.0)


def gc_costs(points: Sequence[Point]) -> GcFigures:
    """The collector's figures from the windowed points' ``chatcap_gc_pause_seconds``, by
    generation: the rates while the idempotency table fills and once it is full
    (``Point.table_full``; none without such points), each a line against the Delivers
    per message (:func:`_gc_rates`), and the pause against the connections held
    (:func:`_gc_pause`, every point). With load-shaped points (``Point.active``: many
    connections in rooms, all sending, as under a load generator's users) the filling
    rates come from them alone, and the pause's line runs from the points of a server
    alone to theirs: the collector of a server whose connections all speak is not that
    of one sender beside an idle crowd (its young collections measured ~10× longer here
    at 1,000 connections: 0.84 against 0.085 ms). Empty when no point counted a
    collection."""
    usable = [p for p in points if p.window == WINDOW and p.gc_collections and p.messages > 0]
    if not usable or not any(sum(p.gc_collections) for p in usable):
        return GcFigures()
    generations = min(len(p.gc_collections) for p in usable)
    active = [p for p in usable if p.active and not p.table_full]
    filling = active or [p for p in usable if not p.table_full] or usable
    full = [p for p in usable if p.table_full]
    rates = [_gc_rates(filling, g) for g in range(generations)]
    rates_full = [_gc_rates(full, g) for g in range(generations)] if full else []
    paused = active + [p for p in usable if not p.active and p.crowd == 0] if active else usable
    pauses = [_gc_pause(paused, g) for g in range(generations)]
    return GcFigures(
        per_msg=tuple(a for a, _ in rates),
        per_recipient=tuple(b for _, b in rates),
        per_msg_full=tuple(a for a, _ in rates_full),
        per_recipient_full=tuple(b for _, b in rates_full),
        pause_us=tuple(a for a, _ in pauses),
        pause_us_per_connection=tuple(b for _, b in pauses),
    )


def server_gc_thresholds() -> tuple[int, ...]:
    """``gc_thresholds``: the collector's thresholds the server runs with — this
    interpreter's ``gc.get_threshold()``: ``python -m server`` is the same Python and
    never sets them (a test holds it to that)."""
    return tuple(int(t) for t in gc.get_threshold())


def in_server_commit(
    points: Sequence[Point], stall_every_rows: float, stall_ms: float
) -> float | None:
    """``store_commit_in_server_fixed_ms``: a batch of one as the server itself commits
    it between the loop's work (caches cold): ``chatcap_store_commit_seconds`` ÷ its
    batches over the points whose batches are of one (the lone points), less one row's
    share of the checkpoints (``stall_ms`` per ``stall_every_rows``: the model adds those
    itself), never below 0. None without such a point.

    Only the batch of one: the windowed points' bigger batches hold checkpoints at a rate
    of their own (their keys, their file), which a mean cannot take apart, so the
    per-row slope stays the isolated store's (``store_commit_per_msg_ms``)."""
    values = [
        p.commit_s / p.commit_batches * 1000.0
        for p in points
        if p.commit_batches > 0 and p.commit_rows / p.commit_batches < 1.05
    ]
    if not values:
        return None
    share = stall_ms / stall_every_rows if stall_every_rows > 0 else 0.0
    return max(statistics.median(values) - share, 0.0)


def checkpoint_stalls(commits_ms: Sequence[float], batch: int) -> tuple[float, float]:
    """``(store_stall_every_rows, store_stall_ms)`` from a sustained run of commits of
    ``batch`` rows each, in order: a commit over :data:`STALL_FACTOR` × the median is a
    stall (SQLite's WAL checkpoint, every ~1,000 pages written); the rows written per
    stall, and a stall's mean time beyond the median commit. ``(0, 0)`` without a stall
    (or without commits)."""
    if not commits_ms or batch < 1:
        return 0.0, 0.0
    median = statistics.median(commits_ms)
    stalls = [ms for ms in commits_ms if ms > STALL_FACTOR * median]
    if not stalls:
        return 0.0, 0.0
    rows = len(commits_ms) * batch
    return rows / len(stalls), statistics.fmean(stalls) - median


NOTES = (
    "Measured parts, never whole load runs. decode/encode: our codecs on a Send, Ack "
    "and Deliver with the scenario's body size (median of timeit repeats). "
    "per_send_fixed_us and per_recipient_send_us: least-squares line y = fixed + K * "
    "per_recipient through the real server's echo (K = 1: one Ack) and fan-out (room of "
    "K: one Ack + K - 1 Delivers) points, where y = event-loop-thread CPU per message - "
    "decode - encode_ack - encode_deliver (K > 1), because the model adds those codec "
    "costs itself; the model charges store commits where the server runs them "
    "(details.commit_on): on the loop as loop CPU, on a pool thread as store time. "
    "per_batch_loop_us: the echo case at one send in flight (every message a batch of "
    "one), loop CPU per message less what the model charges an echo (median), less the "
    "commit of one when the server commits on the loop (details.commit_on). "
    "per_batch_thread_us: the same points' process CPU less the loop's, less the commit "
    "itself (median). per_batch_wait_ms: the same points' server-side mean ack latency "
    "(histogram sum / count) less the loop costs and the commit of one on that path "
    "(median); per_batch_wait_samples_ms: the same from the histogram's buckets, 1,000 "
    "quantiles. store_commit_fixed_ms: mean commit of a batch of one (median over "
    "repeats); store_commit_per_msg_ms: least-squares slope over batch sizes 1..256 "
    "(SQLite WAL, synchronous NORMAL, temp file); commit_samples_ms: raw batch-of-one "
    "commits. store_commit_in_server_fixed_ms: the server's own commits of one row over "
    "its lone points (chatcap_store_commit_seconds per batch, median, one row's share "
    "of the checkpoints out). store_stall_every_rows, store_stall_ms: a sustained run "
    "of commits on one file; a commit over 10x the median is a stall (the WAL "
    "checkpoint): rows per stall, and its time beyond the median. gc_pauses_per_msg, "
    "gc_pauses_per_recipient, gc_pause_us: the windowed server points' garbage "
    "collections (chatcap_gc_pause_seconds), by generation: collections per message "
    "against Delivers per message (least-squares line, clamped at 0) and the pause, a "
    "line against the connections held (alone, then with a crowd of idle connections). "
    "gc_thresholds: the server interpreter's gc.get_threshold(); the model triggers "
    "collections at the generations' summed rate and CPython's rule picks each one's "
    "generation. cold_penalty_us_by_gap_ms: one JSON connection, one send in flight, an "
    "idle gap before each send (0 = back-to-back); per gap the server's mean ack "
    "latency (histogram sum / count) less the same back-to-back (median over repeats). "
    "fanout_us_by_gap_ms: the same probe in a room of 10 (9 members reading, idle for "
    "the gap too): the server's fanout stage mean less one Deliver encoding, per frame "
    "written (median over repeats); below a 1 ms gap the windowed fan-out's per-frame "
    "slope (busy readers) at gap 0 instead. ingress_stage_us, post_submit_us: the lone "
    "echo points' own stage times (chatcap_send_stage_seconds): ingress less the "
    "decode, and the queue wait of an idle loop — the parts of per_send_fixed_us after "
    "the frame's arrival stamp. background_us_per_s, ping_us, scrape_us: a server with "
    "no connection (CPU per second), then idle connections held with keepalive pings "
    "every 0.25 s (CPU less that base, per ping), then GET /metrics (CPU less the base, "
    "per scrape)."
)


def _plain(value: Any) -> Any:
    """Strict-JSON data: NaN → None, ±inf → "+Inf"/"-Inf" (as Prometheus writes ``le``)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def cpu_use(points: Sequence[Point]) -> dict[str, float | None]:
    """Each side's CPU over the server points, % of one core: the server process and the
    load client (None when no point timed them)."""
    timed = [p for p in points if p.wall_s > 0]
    wall = sum(p.wall_s for p in timed)
    if not timed or wall <= 0:
        return {"server_cpu_pct": None, "client_cpu_pct": None}
    return {
        "server_cpu_pct": 100.0 * sum(p.server_cpu_s for p in timed) / wall,
        "client_cpu_pct": 100.0 * sum(p.client_cpu_s for p in timed) / wall,
    }


def build_costs(
    codec: dict[str, dict[str, float]],
    points: Sequence[Point],
    store: StoreFigures,
    scenario: Scenario,
    plan: Plan,
    created: datetime,
    cpu_sets: Mapping[str, Any] | None = None,
    cold: Sequence[ColdPoint] = (),
    background: BackgroundProbe | None = None,
    gc: GcProbe | None = None,
) -> Costs:
    """The file's figures; ``cpu_sets``: where the server and the load client ran
    (:meth:`bench._support.cpus.CpuPlan.describe`), kept in ``details`` with
    :func:`cpu_use`; ``cold``: the cold-path probe's points."""
    partial = Costs(
        decode_us=codec["decode_us"],
        encode_ack_us=codec["encode_ack_us"],
        encode_deliver_us=codec["encode_deliver_us"],
    )
    fixed, per_recipient = fit_loop_costs(points, partial)
    machine = machine_info()
    by_codec = {
        c: fit_loop_costs([p for p in points if p.codec == c], partial) for c in CODEC_NAMES
    }
    windowed = [p for p in points if p.window == WINDOW]
    process_fit = fit_line([p.frames for p in windowed], [p.process_us_per_msg for p in windowed])
    per_recipient_windowed = per_recipient
    lone_slope = per_recipient_lone_us(points, partial)
    if lone_slope is not None:
        per_recipient = lone_slope  # the regime of chat members (see the function)
    fitted = replace(
        partial, per_send_fixed_us=max(fixed, 0.0), per_recipient_send_us=max(per_recipient, 0.0)
    )
    commit_on = commit_place(
        scenario.server.store.commit_on,
        scenario.server.store.synchronous,
        scenario.server.processes,
    )
    per_batch = per_batch_loop_us(points, fitted)
    stall_every, stall_ms = checkpoint_stalls(store.sustained_ms, store.sustained_batch)
    in_server = in_server_commit(points, stall_every, stall_ms)
    # the commit the lone points' loop CPU holds: the server's own, where it was counted
    commit_one_ms = in_server if in_server is not None else store.fixed_ms
    if commit_on == "loop":
        # the lone points' loop CPU holds the commit, which the model charges to the loop
        # itself when the scenario commits there (sim.model): not twice
        per_batch = max(0.0, per_batch - commit_one_ms * 1000.0)
        thread_us = per_batch_thread_us(points, replace(fitted, store_commit_fixed_ms=0.0))
    else:
        thread_us = per_batch_thread_us(
            points, replace(fitted, store_commit_fixed_ms=store.fixed_ms)
        )
    on_path = replace(
        fitted,
        per_batch_loop_us=per_batch + thread_us,
        store_commit_fixed_ms=commit_one_ms if commit_on == "loop" else store.fixed_ms,
    )
    bg = background_costs(background) if background is not None else (0.0, 0.0, 0.0)
    # the collector: from its own probe (a crowd held), else the server points
    gc_points = gc.points if gc is not None and gc.points else points
    gcf = gc_costs(gc_points)
    ingress_stage, post_submit = stage_split_us(points, fitted)
    wait_ms = per_batch_wait_ms(points, on_path)
    wait_samples = per_batch_wait_samples_ms(points, on_path)
    if stall_every > 0:  # the model charges the checkpoints by rows: not in the waits too
        threshold = STALL_FACTOR * store.fixed_ms
        wait_samples = tuple(0.0 if v > threshold else v for v in wait_samples)
        if not any(v > 0 for v in wait_samples):
            wait_samples = ()
    details: dict[str, Any] = {
        "scenario": scenario.name,
        "body_bytes": scenario.workload.body_bytes,
        "window": WINDOW,
        "lone_window": LONE_WINDOW,
        "plan": {**asdict(plan), "messages": {str(k): v for k, v in plan.messages.items()}},
        "server_points": [_plain({**asdict(p), "frames": p.frames}) for p in points],
        "per_recipient_windowed_us": per_recipient_windowed,
        "per_recipient_lone_us": lone_slope,
        "loop_fit_by_codec": {
            c: {"per_send_fixed_us": f, "per_recipient_send_us": r}
            for c, (f, r) in by_codec.items()
        },
        "process_cpu_fit": {
            "intercept_us": process_fit[0],
            "per_frame_us": process_fit[1],
            "note": "whole-process CPU (store threads included), codec costs not subtracted",
        },
        "cold_path": {
            "codec": COLD_CODEC,
            "by_gap_ms": _plain(cold_summary(cold)),
            "points": [_plain(asdict(p)) for p in cold],
        },
        "commit_on": commit_on,
        "gc_probe": {
            "crowd": gc.crowd if gc is not None else 0,
            "points": [_plain(asdict(p)) for p in gc.points] if gc is not None else [],
            "note": "collections and pause seconds by generation 0, 1, 2 per point",
        },
        "background": _plain(asdict(background)) if background is not None else None,
        "store_fit_intercept_ms": store.intercept_ms,
        "store_sustained": {
            "batch": store.sustained_batch,
            "commits": len(store.sustained_ms),
            "median_ms": statistics.median(store.sustained_ms) if store.sustained_ms else None,
            "stalls": sum(
                1
                for v in store.sustained_ms
                if v > STALL_FACTOR * statistics.median(store.sustained_ms)
            )
            if store.sustained_ms
            else 0,
        },
        "store_overrides": SCENARIO_OVERRIDES,
        "cpus": machine["cpus"],
        "cpu_sets": dict(cpu_sets or {}),
        "cpu_use": cpu_use(points),
        "platform": machine["platform"],
    }
    return Costs(
        decode_us=partial.decode_us,
        encode_ack_us=partial.encode_ack_us,
        encode_deliver_us=partial.encode_deliver_us,
        per_send_fixed_us=max(fixed, 0.0),
        per_recipient_send_us=max(per_recipient, 0.0),
        per_batch_loop_us=per_batch,
        per_batch_thread_us=thread_us,
        per_batch_wait_ms=wait_ms,
        per_batch_wait_samples_ms=wait_samples,
        cold_penalty_us_by_gap_ms=cold_penalty_us_by_gap_ms(cold),
        fanout_us_by_gap_ms=fanout_us_by_gap_ms(
            cold, partial.encode_deliver_us[COLD_CODEC], per_recipient_windowed
        ),
        store_stall_every_rows=stall_every,
        store_stall_ms=stall_ms,
        gc_pauses_per_msg=gcf.per_msg,
        gc_pauses_per_recipient=gcf.per_recipient,
        gc_pauses_per_msg_full=gcf.per_msg_full,
        gc_pauses_per_recipient_full=gcf.per_recipient_full,
        gc_pause_us=gcf.pause_us,
        gc_pause_us_per_connection=gcf.pause_us_per_connection,
        gc_thresholds=server_gc_thresholds() if gcf.pause_us else (),
        ingress_stage_us=ingress_stage,
        post_submit_us=post_submit,
        background_us_per_s=bg[0],
        ping_us=bg[1],
        scrape_us=bg[2],
        store_commit_fixed_ms=store.fixed_ms,
        store_commit_per_msg_ms=store.per_msg_ms,
        store_commit_in_server_fixed_ms=in_server if in_server is not None else 0.0,
        store_commit_ms_by_batch=dict(store.ms_by_batch),
        commit_samples_ms=store.samples_ms,
        host=platform.node() or "unknown-host",
        created_utc=created.isoformat(),
        git_sha=git_sha(),
        python=platform.python_version(),
        packages=dict(machine["packages"]),
        notes=NOTES,
        details=details,
    )


def format_table(costs: Costs) -> str:
    """The figures as a human table, with the [sim] values they suggest."""
    lines = [f"{'figure':28}{'json':>12}{'protobuf':>12}  unit"]
    for name in ("decode_us", "encode_ack_us", "encode_deliver_us"):
        table = getattr(costs, name)
        lines.append(f"{name:28}{table['json']:12.3f}{table['protobuf']:12.3f}  µs")
    lines.append(f"{'per_send_fixed_us':28}{costs.per_send_fixed_us:24.2f}  µs (loop)")
    lines.append(f"{'per_recipient_send_us':28}{costs.per_recipient_send_us:24.2f}  µs (loop)")
    lines.append(f"{'per_batch_loop_us':28}{costs.per_batch_loop_us:24.2f}  µs (loop)")
    lines.append(f"{'per_batch_thread_us':28}{costs.per_batch_thread_us:24.2f}  µs (thread)")
    lines.append(f"{'per_batch_wait_ms':28}{costs.per_batch_wait_ms:24.4f}  ms (time)")
    waits = costs.per_batch_wait_samples_ms
    if waits:
        lines.append(
            f"per_batch_wait_samples_ms    {len(waits)} quantiles, median "
            f"{statistics.median(waits):.4f} ms, p99 {waits[int(0.99 * len(waits))]:.4f} ms"
        )
    cold = costs.cold_penalty_us_by_gap_ms
    if cold:
        curve = ", ".join(f"{gap:g}: {us:.0f}" for gap, us in sorted(cold.items()))
        lines.append(f"cold penalty µs by gap ms     {curve}")
    lines.append(f"{'ingress_stage_us':28}{costs.ingress_stage_us:24.2f}  µs (of fixed)")
    lines.append(f"{'post_submit_us':28}{costs.post_submit_us:24.2f}  µs (of fixed)")
    lines.append(f"{'background_us_per_s':28}{costs.background_us_per_s:24.2f}  µs/s")
    lines.append(f"{'ping_us':28}{costs.ping_us:24.2f}  µs")
    lines.append(f"{'scrape_us':28}{costs.scrape_us:24.1f}  µs")
    lines.append(f"{'store_stall_every_rows':28}{costs.store_stall_every_rows:24.0f}  rows")
    lines.append(f"{'store_stall_ms':28}{costs.store_stall_ms:24.3f}  ms")
    if costs.gc_pause_us:
        by_gen = " · ".join(
            f"gen {g}: {a:.4f} + {b:.5f}/member × {us:.0f} µs + {c:.3f} µs/connection"
            for g, (a, b, us, c) in enumerate(
                zip(
                    costs.gc_pauses_per_msg,
                    costs.gc_pauses_per_recipient or (0.0,) * len(costs.gc_pause_us),
                    costs.gc_pause_us,
                    costs.gc_pause_us_per_connection or (0.0,) * len(costs.gc_pause_us),
                    strict=True,
                )
            )
        )
        lines.append(f"{'gc pauses per message':28} {by_gen}")
        if costs.gc_pauses_per_msg_full:
            full = " · ".join(
                f"gen {g}: {a:.5f} + {b:.6f}/member"
                for g, (a, b) in enumerate(
                    zip(
                        costs.gc_pauses_per_msg_full,
                        costs.gc_pauses_per_recipient_full
                        or (0.0,) * len(costs.gc_pauses_per_msg_full),
                        strict=True,
                    )
                )
            )
            lines.append(f"{'  … its table full':28} {full}")
        if costs.gc_thresholds:
            shown = ", ".join(str(t) for t in costs.gc_thresholds)
            lines.append(f"{'gc_thresholds':28} ({shown}): CPython's rule picks each generation")
    lines.append(f"{'store_commit_fixed_ms':28}{costs.store_commit_fixed_ms:24.4f}  ms")
    lines.append(f"{'store_commit_per_msg_ms':28}{costs.store_commit_per_msg_ms:24.4f}  ms")
    by_batch = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(costs.store_commit_ms_by_batch.items()))
    lines.append(f"commit ms by batch size      {by_batch}")
    samples = costs.commit_samples_ms
    if samples:
        lines.append(
            f"commit_samples_ms            {len(samples)} samples, median "
            f"{statistics.median(samples):.4f} ms, max {max(samples):.4f} ms"
        )
    lines.append(
        f"suggested [sim]: store_service_ms = {costs.store_commit_fixed_ms:.4f}, "
        f"store_per_msg_ms = {costs.store_commit_per_msg_ms:.4f}"
    )
    return "\n".join(lines)
