"""A point's figures: its ``summary.csv`` row, whether the generator set the pace, and
what the capacity search reads from it (:func:`step_result`) and writes (:func:`capacity_row`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench._support.histo import HistogramSet, LatencyHistogram
from bench._support.metrics_scrape import ACK_LATENCY, GC_PAUSE, SEND_STAGE, Scrape
from bench.load.report import generator_bound
from bench.run.points import NAN, Point
from bench.run.search import SearchPlan, SearchResult, StepResult
from bench.run.window import Window
from chatcap.pipeline.stages import GC_GENERATIONS, SEND_STAGES

CPU_BOUND_PCT = 90.0
"""A generator process at or above this share of one core may have set the pace."""
LAG_P99_MAX_MS = 50.0
"""Sends leaving later than this (p99 of the schedule lag) mean the schedule slipped."""
LAG_SHARE_NOTE = 0.5
"""Schedule lag p99 above this share of the ack p99 earns the row a caution note."""
MACHINE_BUSY_PCT = 95.0

STAGE_COLUMNS: tuple[str, ...] = tuple(f"server_stage_{stage}_ms" for stage in SEND_STAGES)
"""The ``summary.csv`` columns of the mean stage times of a Send, in a Send's order."""


def _merged(doc: Mapping[str, Any], name: str) -> LatencyHistogram:
    """The ``name`` histogram of the ``--chat-out`` document, all codecs merged."""
    hists = HistogramSet.from_json(doc.get("histograms", {}))
    merged = LatencyHistogram()
    for hist_name, codec in hists:
        if hist_name == name:
            merged.merge(hists.get(hist_name, codec))
    return merged


def generator_limits(
    doc: Mapping[str, Any],
    cpu_pct_by_process: Mapping[int, float],
    *,
    cpu_pct_max: float = CPU_BOUND_PCT,
    lag_p99_max_ms: float = LAG_P99_MAX_MS,
) -> list[str]:
    """Why the generator, not the server, may have set this point's pace (empty: it kept up).

    ``doc`` is the ``--chat-out`` document (its own CPU and unsent-send check, and the
    schedule lag histogram); ``cpu_pct_by_process`` is each Locust process's CPU in the
    measured window from ``/proc``, % of one core.
    """
    reasons = generator_bound(doc, cpu_pct_max)
    if cpu_pct_by_process:
        top = max(cpu_pct_by_process.values())
        if top >= cpu_pct_max:
            reasons.append(f"a Locust process used {top:.0f}% of a core in the window (/proc)")
    lag = _merged(doc, "schedule_lag")
    if lag.count and lag.percentile_ms(99) > lag_p99_max_ms:
        reasons.append(f"sends left late: schedule lag p99 {lag.percentile_ms(99):.0f} ms")
    return reasons


def lag_note(doc: Mapping[str, Any], share: float = LAG_SHARE_NOTE) -> str:
    """A note when the generator's own lateness is a large part of the ack tail it reports.

    Not a generator-bound verdict (the load went out), a caution on ``ack_p99_ms``:
    ``ack_from_send`` in ``chat.json`` has the latency without the generator's lag.
    """
    lag, ack = _merged(doc, "schedule_lag"), _merged(doc, "ack")
    if not lag.count or not ack.count:
        return ""
    lag_p99, ack_p99 = lag.percentile_ms(99), ack.percentile_ms(99)
    if lag_p99 < 1.0 or lag_p99 <= share * ack_p99:
        return ""
    return (
        f"schedule lag p99 {lag_p99:.1f} ms is {lag_p99 / ack_p99:.0%} of ack p99 "
        f"{ack_p99:.1f} ms: the tail is partly the generator's"
    )


def error_rate(loss: Mapping[str, int]) -> float:
    """Share of answered send attempts that were not acked (in-flight ones left out)."""
    attempts = loss["sent"] + loss["retries"] - loss["unacked"]
    return max(attempts - loss["acked"], 0) / attempts if attempts > 0 else NAN


def server_means_ms(server: Scrape) -> dict[str, float]:
    """The server's mean ack latency and the mean time of each stage of a Send, ms, from a
    scrape difference (Δ sum ÷ Δ count; NaN where the count did not move).

    The stages do not add up to the ack latency: the loop turns between a batch settling
    and its Ack being written have no histogram (``server.metrics``), so what is left is
    ``server_ack_mean_ms`` less the sum of the ``server_stage_*_ms``.
    """
    means = {"server_ack_mean_ms": server.mean(ACK_LATENCY) * 1000.0}
    for stage, column in zip(SEND_STAGES, STAGE_COLUMNS, strict=True):
        means[column] = server.mean(SEND_STAGE, stage=stage) * 1000.0
    return means


def server_gc(server: Scrape) -> dict[str, float]:
    """The collector in a scrape difference, per generation: collections per 1,000 acks
    (``server_gc<g>_per_kmsg``) and the mean pause, ms (``server_gc<g>_pause_ms``; NaN
    when none was collected); all NaN without acks or without the histogram (a server
    from before it)."""
    acks = server.acks
    known = acks > 0 and any(n == GC_PAUSE + "_count" for n, _ in server.samples)
    out: dict[str, float] = {}
    for g in GC_GENERATIONS:
        count = server.total(GC_PAUSE + "_count", generation=g)
        out[f"server_gc{g}_per_kmsg"] = count / acks * 1000.0 if known else NAN
        out[f"server_gc{g}_pause_ms"] = server.mean(GC_PAUSE, generation=g) * 1000.0
    return out


def summary_row(
    run_id: str,
    scenario: str,
    point: Point,
    doc: Mapping[str, Any],
    window: Window,
    bytes_per_msg: float,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """One ``summary.csv`` row from the generator's document and the measured window."""
    server = window.server()
    seconds = window.seconds
    acked = server.acks
    loss = doc["loss"]
    ack, deliver = _merged(doc, "ack"), _merged(doc, "deliver")
    cpu_pct = window.generator_cpu_pct()
    reasons = generator_limits(doc, cpu_pct)
    acked_per_s = acked / seconds if seconds > 0 else NAN
    per_ack = loss["delivered"] / loss["acked"] if loss["acked"] else NAN
    all_notes = [n for n in (window.note, point.shape.note, *notes) if n]
    busy = window.machine_busy_pct()
    if busy >= MACHINE_BUSY_PCT:
        # every CPU busy: something outside the two sets (or a shared set) took time
        all_notes.append(f"machine CPU {busy:.0f}% busy: either side may have waited for a CPU")
    if reasons:
        all_notes.insert(0, "generator-bound: " + "; ".join(reasons))
    elif lag_note(doc):
        all_notes.append(lag_note(doc))
    return {
        "run_id": run_id,
        "scenario": scenario,
        "source": "measured",
        "codec": point.codec,
        "replication": point.replication,
        "seed": point.seed,
        "offered_per_s": point.shape.offered_per_s,
        "acked_per_s": acked_per_s,
        "delivered_per_s": acked_per_s * per_ack,
        "ack_mean_ms": ack.mean_ms(),
        "ack_p50_ms": ack.percentile_ms(50),
        "ack_p99_ms": ack.percentile_ms(99),
        "deliver_p50_ms": deliver.percentile_ms(50),
        "deliver_p99_ms": deliver.percentile_ms(99),
        "error_rate": error_rate(loss),
        "server_cpu_us_per_msg": server.cpu_s / acked * 1e6 if acked > 0 else NAN,
        "bytes_per_msg": bytes_per_msg,
        "duration_s": seconds,
        "sent_total": int(server.frames_received()),
        "acked_total": int(acked),
        "ack_p999_ms": ack.percentile_ms(99.9),
        "server_ack_p50_ms": server.quantile(ACK_LATENCY, 0.50) * 1000.0,
        "server_ack_p99_ms": server.quantile(ACK_LATENCY, 0.99) * 1000.0,
        **server_means_ms(server),
        **server_gc(server),
        "generator_bound": bool(reasons),
        "note": "; ".join(all_notes),
    }


_FIGURES = (
    "acked_per_s",
    "delivered_per_s",
    "ack_mean_ms",
    "ack_p50_ms",
    "ack_p99_ms",
    "deliver_p50_ms",
    "deliver_p99_ms",
    "error_rate",
    "server_cpu_us_per_msg",
)


def failed_row(run_id: str, scenario: str, point: Point, reason: str, bpm: float) -> dict[str, Any]:
    """A row for a point that could not be measured: NaN figures, the reason in the note."""
    row: dict[str, Any] = {
        "run_id": run_id,
        "scenario": scenario,
        "source": "measured",
        "codec": point.codec,
        "replication": point.replication,
        "seed": point.seed,
        "offered_per_s": point.shape.offered_per_s,
        "bytes_per_msg": bpm,
        "note": f"failed: {reason}",
    }
    row.update(dict.fromkeys(_FIGURES, NAN))
    return row


# ---------------------------------------------------------------------------- capacity search


def step_result(
    row: Mapping[str, Any],
    info: Mapping[str, Any],
    doc: Mapping[str, Any] | None,
    server_cores: int,
    generator_cores: int,
) -> StepResult:
    """A measured point as the capacity search sees it (:mod:`bench.run.search`).

    ``info`` is the point's ``point.json`` content (its window: server CPU seconds,
    generator CPU % per Locust process), ``doc`` the ``--chat-out`` document (None when
    the point failed). CPU shares are % of the cores each side could use.
    """
    offered = float(row["offered_per_s"])
    note = str(row.get("note", ""))
    if doc is None or note.startswith("failed"):
        return StepResult(offered, NAN, NAN, NAN, NAN, failed=note.removeprefix("failed: "))
    window = info.get("window", {})
    seconds = float(window.get("seconds", 0.0))
    cpu_by_pid = {int(k): float(v) for k, v in window.get("generator_cpu_pct", {}).items()}
    server_s = float(window.get("server", {}).get("cpu_s", NAN))
    server_pct = 100.0 * server_s / seconds / max(server_cores, 1) if seconds > 0 else NAN
    gen_pct = sum(cpu_by_pid.values()) / max(generator_cores, 1) if cpu_by_pid else NAN
    return StepResult(
        offered_per_s=offered,
        acked_per_s=float(row["acked_per_s"]),
        ack_p99_ms=float(row["ack_p99_ms"]),
        deliver_p99_ms=float(row["deliver_p99_ms"]),
        error_rate=float(row["error_rate"]),
        generator_limits=tuple(generator_limits(doc, cpu_by_pid)),
        lag_caution=bool(lag_note(doc)),
        server_cpu_pct=server_pct,
        generator_cpu_pct=gen_pct,
        server_cpu_us_per_msg=float(row["server_cpu_us_per_msg"]),
    )


def capacity_row(
    found: SearchResult,
    plan: SearchPlan,
    *,
    run_id: str,
    scenario: str,
    codec: str,
    cpus: Mapping[str, Any],
    server_cores: int,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """One ``capacity.csv`` row (:data:`chatcap.results.CAPACITY_COLUMNS`) from a search;
    ``cpus`` is :meth:`CpuPlan.describe`, ``server_cores`` what the server could use."""
    cores = max(server_cores, 1)
    at_lo = found.at(found.capacity_offered_per_s)
    at_limit = found.at(found.knee_per_s) if math.isfinite(found.knee_per_s) else []
    if found.limited_by == "max_load":
        at_limit = at_lo
    notes = [n for n in (found.note, str(cpus.get("note", ""))) if n]
    return {
        "run_id": run_id,
        "scenario": scenario,
        "source": "measured",
        "codec": codec,
        "capacity_per_s": found.capacity_per_s,
        "ci_low_per_s": found.ci_low_per_s,
        "ci_high_per_s": found.ci_high_per_s,
        "capacity_offered_per_s": found.capacity_offered_per_s,
        "knee_per_s": found.knee_per_s,
        "server_cores": cores,
        "per_server_core_per_s": found.capacity_per_s / cores,
        "per_core_ci_low_per_s": found.ci_low_per_s / cores,
        "per_core_ci_high_per_s": found.ci_high_per_s / cores,
        "server_cpus": str(cpus.get("server_cpus", "")),
        "generator_cpus": str(cpus.get("generator_cpus", "")),
        "isolated": bool(cpus.get("isolated", False)),
        "limited_by": found.limited_by,
        "why": found.why,
        "limit_offered_per_s": at_limit[0].offered_per_s if at_limit else NAN,
        "limit_server_cpu_pct": _mean_of(at_limit, "server_cpu_pct"),
        "limit_generator_cpu_pct": _mean_of(at_limit, "generator_cpu_pct"),
        "capacity_server_cpu_us_per_msg": _mean_of(at_lo, "server_cpu_us_per_msg"),
        "slo_p99_ms": plan.slo.p99_ms,
        "slo_error_rate": plan.slo.error_rate,
        "follow_min": plan.follow_min,
        "repeats": found.repeats,
        "steps": len(found.steps),
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "note": "; ".join(notes),
    }


def _mean_of(results: Sequence[StepResult], name: str) -> float:
    values = [float(getattr(r, name)) for r in results if math.isfinite(getattr(r, name))]
    return sum(values) / len(values) if values else NAN
