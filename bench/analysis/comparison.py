"""The model against measurement: :func:`join`, :func:`relative_error`,
:func:`saturation_throughput`, :func:`knee`, :func:`accuracy` (the targets, as an
:class:`AccuracyReport`), :func:`knee_items` (the capacity per core against the capacity
search's), :func:`explain` (where the model fails, in words computed from
the numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

ERROR_MAX = 0.01
"""Error rate below which a load counts as sustained (saturation throughput)."""
SUSTAINED_SHARE = 0.95
"""Goodput share of the offered load below which a load is past saturation."""


def _metric(frame: pd.DataFrame, metric: str) -> str:
    """The column that holds ``metric``: ``<metric>_mean`` in an aggregated frame."""
    for name in (f"{metric}_mean", metric):
        if name in frame:
            return name
    raise ValueError(f"no column {metric!r} (or {metric}_mean); have: {', '.join(frame.columns)}")


def _rounded(values: pd.Series) -> pd.Series:
    return values.astype(float).round(6)


def join(
    measured: pd.DataFrame, predicted: pd.DataFrame, on: Sequence[str] = ("codec", "offered_per_s")
) -> pd.DataFrame:
    """Aggregated measured and predicted frames side by side on ``on`` (offered loads
    matched to 1e-6): every other column gets ``_measured`` or ``_predicted``. Only the
    points both have; sorted by ``on``."""
    on = list(on)
    m = measured.copy()
    p = predicted.copy()
    for frame in (m, p):
        if "offered_per_s" in on:
            frame["offered_per_s"] = _rounded(frame["offered_per_s"])
    m = m.rename(columns={c: f"{c}_measured" for c in m.columns if c not in on})
    p = p.rename(columns={c: f"{c}_predicted" for c in p.columns if c not in on})
    out = m.merge(p, on=on, how="inner")
    return out.sort_values(on, kind="stable").reset_index(drop=True)


COMPARED: tuple[tuple[str, str], ...] = (
    ("server_ack_p50_ms", "ack_p50_ms"),
    ("server_ack_p99_ms", "ack_p99_ms"),
    ("ack_p50_ms", "ack_p50_ms"),
    ("ack_p99_ms", "ack_p99_ms"),
    ("deliver_p50_ms", "deliver_p50_ms"),
    ("deliver_p99_ms", "deliver_p99_ms"),
    ("acked_per_s", "acked_per_s"),
    ("server_cpu_us_per_msg", "server_cpu_us_per_msg"),
)
"""(measured column, predicted column): the server's own ack latency against the model's
latency from the same arrival stamp (:func:`predicted_column` falls back to the model's
ack latency from the send for predictions without it), the generator's against the
model's from the send."""


def predicted_column(joined: pd.DataFrame, m_col: str, p_col: str) -> str:
    """The predicted column to hold ``m_col`` against: ``m_col`` itself when the
    prediction has it (the model's server-side ack latency, its stage means), else
    ``p_col``."""
    own = f"{m_col}_mean_predicted"
    if m_col != p_col and own in joined and bool(joined[own].notna().any()):
        return m_col
    return p_col


def has_measured(joined: pd.DataFrame, metric: str) -> bool:
    """True when the joined frame holds some measured value of ``metric``."""
    col = f"{metric}_mean_measured"
    return col in joined and bool(joined[col].notna().any())


def relative_error(
    joined: pd.DataFrame, pairs: Sequence[tuple[str, str]] = COMPARED
) -> pd.DataFrame:
    """One row per (pair, codec, load): ``measured``, ``measured_ci95``, ``predicted``,
    ``predicted_ci95`` and ``rel_error`` = (predicted − measured) ÷ measured (NaN when
    the measured value is 0 or missing). Pairs without measured values are left out."""
    records: list[dict[str, Any]] = []
    for m_col, p_col in pairs:
        p_col = predicted_column(joined, m_col, p_col)
        if not has_measured(joined, m_col) or f"{p_col}_mean_predicted" not in joined:
            continue
        for _, r in joined.iterrows():
            m, p = float(r[f"{m_col}_mean_measured"]), float(r[f"{p_col}_mean_predicted"])
            rel = (p - m) / m if m and math.isfinite(m) and math.isfinite(p) else math.nan
            records.append(
                {
                    "metric": m_col,
                    "model_metric": p_col,
                    "codec": r["codec"],
                    "offered_per_s": float(r["offered_per_s"]),
                    "measured": m,
                    "measured_ci95": float(r.get(f"{m_col}_ci95_measured", math.nan)),
                    "predicted": p,
                    "predicted_ci95": float(r.get(f"{p_col}_ci95_predicted", math.nan)),
                    "rel_error": rel,
                    "generator_bound": bool(r.get("generator_bound_measured", False)),
                }
            )
    return pd.DataFrame.from_records(
        records,
        columns=[
            "metric", "model_metric", "codec", "offered_per_s", "measured", "measured_ci95",
            "predicted", "predicted_ci95", "rel_error", "generator_bound",
        ],
    )  # fmt: skip


def saturation_throughput(
    agg: pd.DataFrame, error_max: float = ERROR_MAX, shortfall: float = SUSTAINED_SHARE
) -> pd.DataFrame:
    """Per codec of an aggregated frame (see the module docstring): ``saturation_per_s``,
    ``at_offered_per_s`` (the load that gave it), ``reached`` and ``points`` used."""
    records = []
    for codec, g in agg.groupby("codec", sort=True):
        g = g[~g["generator_bound"].astype(bool)] if "generator_bound" in g else g
        err = g[_metric(g, "error_rate")].astype(float)
        acked = g[_metric(g, "acked_per_s")].astype(float)
        offered = g["offered_per_s"].astype(float)
        ok = err < error_max
        sustained = ok & (acked >= shortfall * offered)
        best = acked[ok].idxmax() if ok.any() else None
        records.append(
            {
                "codec": codec,
                "saturation_per_s": float(acked[best]) if best is not None else math.nan,
                "at_offered_per_s": float(offered[best]) if best is not None else math.nan,
                "reached": bool((~sustained).any()),
                "points": len(g),
            }
        )
    return pd.DataFrame.from_records(
        records, columns=["codec", "saturation_per_s", "at_offered_per_s", "reached", "points"]
    )


def knee(
    agg: pd.DataFrame,
    metric: str = "ack_p99_ms",
    *,
    k: float = 3.0,
    slo_ms: float | None = None,
    x: str = "offered_per_s",
    by: Sequence[str] = ("codec",),
) -> pd.DataFrame:
    """Per group: ``baseline_ms`` (``metric`` at the lowest ``x``), ``threshold_ms``
    (``slo_ms`` if given, else ``k`` × baseline) and ``knee_<x>``: the first ``x``,
    ascending, whose value exceeds the threshold (NaN: never)."""
    col, xcol = _metric(agg, metric), (x if x in agg else _metric(agg, x))
    records = []
    for key, g in agg.groupby(list(by), sort=True):
        g = g.sort_values(xcol)
        values = g[col].astype(float).to_numpy()
        base = float(values[0])
        threshold = float(slo_ms) if slo_ms is not None else k * base
        over = np.flatnonzero(~(values <= threshold))
        at = float(g[xcol].to_numpy()[over[0]]) if len(over) else math.nan
        names = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        records.append({**names, "baseline_ms": base, "threshold_ms": threshold, f"knee_{x}": at})
    return pd.DataFrame.from_records(records)


@dataclass(frozen=True)
class AccuracyItem:
    """One check of the model against a measurement."""

    target: str
    codec: str
    offered_per_s: float
    metric: str
    measured: float
    predicted: float
    rel_error: float
    tolerance: float
    status: str  # "pass" | "miss" | "n/a"
    note: str = ""


@dataclass(frozen=True)
class AccuracyReport:
    """The accuracy targets, item by item: at every load up to 80 % of the measured
    saturation throughput, acked throughput within 5 %, ack p50 within 15 %, ack p99
    within 25 % and delivery p99 within 25 %; the saturation throughput within 10 %; and,
    when :meth:`with_items` adds :func:`knee_items`, the capacity per core within 10 %.
    ``latency_basis`` says which measured ack latency the items use."""

    items: tuple[AccuracyItem, ...]
    latency_basis: str
    capacity: pd.DataFrame = field(repr=False)

    @property
    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "miss": 0, "n/a": 0}
        for item in self.items:
            out[item.status] += 1
        return out

    @property
    def passed(self) -> bool:
        """True when nothing missed and something was checked."""
        c = self.counts
        return c["miss"] == 0 and c["pass"] > 0

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([item.__dict__ for item in self.items])

    def misses(self) -> list[AccuracyItem]:
        return [i for i in self.items if i.status == "miss"]

    def with_items(self, extra: Sequence[AccuracyItem]) -> AccuracyReport:
        """The same report with ``extra`` items appended (e.g. :func:`knee_items`)."""
        return replace(self, items=(*self.items, *extra))


THROUGHPUT_TOLERANCE = 0.05
"""Acked throughput (``acked_per_s``), model vs measured, per codec and load."""
ACK_P50_TOLERANCE = 0.15
"""Ack latency p50, per codec and load (the server's own when measured)."""
ACK_P99_TOLERANCE = 0.25
"""Ack latency p99, per codec and load (the server's own when measured)."""
DELIVERY_P99_TOLERANCE = 0.25
"""Delivery latency p99 as the load generator sees it (the only delivery figure measured)."""
SATURATION_TOLERANCE = 0.10
"""Saturation throughput, per codec."""
KNEE_TOLERANCE = 0.10
"""The knee: capacity per server core at the SLO, per codec (:func:`knee_items`)."""
LOAD_SHARE = 0.80
"""Loads above this share of the measured saturation throughput are not judged."""

SATURATION_TARGET = "saturation throughput"
KNEE_TARGET = "knee"
KNEE_METRIC = "capacity_per_core_per_s"
KNEE_LIMITS = ("slo", "throughput")
"""``capacity.csv`` ``limited_by`` values whose capacity is a measured knee; the others
(the generator ran out, the highest offer allowed held, a step failed, no bound) give at
most a lower bound, and their knee item is ``n/a``."""


def _rel(measured: float, predicted: float) -> float:
    """(predicted − measured) ÷ measured; NaN when either is missing or measured is 0."""
    ok = measured and math.isfinite(measured) and math.isfinite(predicted)
    return (predicted - measured) / measured if ok else math.nan


def accuracy(
    joined: pd.DataFrame,
    *,
    latency_basis: str = "auto",
    throughput_tolerance: float = THROUGHPUT_TOLERANCE,
    ack_p50_tolerance: float = ACK_P50_TOLERANCE,
    ack_p99_tolerance: float = ACK_P99_TOLERANCE,
    delivery_p99_tolerance: float = DELIVERY_P99_TOLERANCE,
    saturation_tolerance: float = SATURATION_TOLERANCE,
    load_share: float = LOAD_SHARE,
) -> AccuracyReport:
    """Check the targets on a :func:`join` of aggregated measured and predicted frames.

    Per codec and load: acked throughput (``acked_per_s``), ack p50 and p99, delivery p99
    (``deliver_p99_ms``, the generator's: the server measures no delivery latency), each
    within its own tolerance; per codec: the saturation throughput.

    ``latency_basis``: ``server`` compares the model's ack latency with the server's own
    (``server_ack_*``), ``client`` with the generator's, ``auto`` = server when measured.
    Loads over ``load_share`` × the measured saturation throughput are left out of the
    per-load checks (all loads when saturation was not reached); generator-bound points
    are ``n/a``, and so is an item whose metric either side lacks. The saturation item is
    ``n/a`` when the measured run did not saturate.
    """
    if latency_basis == "auto":
        latency_basis = "server" if has_measured(joined, "server_ack_p50_ms") else "client"
    if latency_basis not in ("server", "client"):
        raise ValueError(f"latency_basis = {latency_basis!r}: use auto, server or client")
    prefix = "server_" if latency_basis == "server" else ""
    checks = (
        ("acked throughput", "acked_per_s", "acked_per_s", throughput_tolerance),
        ("ack p50", f"{prefix}ack_p50_ms", "ack_p50_ms", ack_p50_tolerance),
        ("ack p99", f"{prefix}ack_p99_ms", "ack_p99_ms", ack_p99_tolerance),
        ("delivery p99", "deliver_p99_ms", "deliver_p99_ms", delivery_p99_tolerance),
    )
    for name, tol in (
        ("throughput_tolerance", throughput_tolerance),
        ("ack_p50_tolerance", ack_p50_tolerance),
        ("ack_p99_tolerance", ack_p99_tolerance),
        ("delivery_p99_tolerance", delivery_p99_tolerance),
        ("saturation_tolerance", saturation_tolerance),
    ):
        _check_tolerance(name, tol)
    sat_m = saturation_throughput(_side(joined, "measured"))
    sat_p = saturation_throughput(_side(joined, "predicted"))
    items: list[AccuracyItem] = []
    for _, r in joined.iterrows():
        codec, load = str(r["codec"]), float(r["offered_per_s"])
        cap = sat_m.set_index("codec").loc[codec] if codec in set(sat_m["codec"]) else None
        limit = load_share * cap["saturation_per_s"] if cap is not None else math.inf
        too_high = cap is not None and bool(cap["reached"]) and load > limit
        for label, m_col, p_col, tolerance in checks:
            p_col = predicted_column(joined, m_col, p_col)
            m = float(r.get(f"{m_col}_mean_measured", math.nan))
            p = float(r.get(f"{p_col}_mean_predicted", math.nan))
            rel = _rel(m, p)
            status, note = _status(rel, tolerance, m, p)
            if bool(r.get("generator_bound_measured", False)):
                status, note = "n/a", "generator-bound point"
            elif too_high:
                status, note = "n/a", f"above {load_share:.0%} of measured capacity"
            items.append(
                AccuracyItem(
                    f"{label} within {tolerance:.0%}", codec, load, m_col, m, p, rel,
                    tolerance, status, note,
                )
            )  # fmt: skip
    for _, m_row in sat_m.iterrows():
        codec = str(m_row["codec"])
        p_row = sat_p.set_index("codec").loc[codec]
        m, p = float(m_row["saturation_per_s"]), float(p_row["saturation_per_s"])
        rel = _rel(m, p)
        status, note = _status(rel, saturation_tolerance, m, p)
        if not bool(m_row["reached"]):
            status = "n/a"
            note = f"the measured run did not saturate (≥ {m:,.0f}/s sustained at every load)"
        elif not bool(p_row["reached"]):
            note = "the model sustained every load: its saturation lies above the loads run"
        items.append(
            AccuracyItem(
                f"{SATURATION_TARGET} within {saturation_tolerance:.0%}", codec,
                float(m_row["at_offered_per_s"]), "acked_per_s", m, p, rel,
                saturation_tolerance, status, note,
            )
        )  # fmt: skip
    return AccuracyReport(tuple(items), latency_basis, sat_m)


def knee_items(
    measured_capacity: Sequence[Mapping[str, Any]],
    model_capacity_per_core_per_s: Mapping[str, float],
    *,
    tolerance: float = KNEE_TOLERANCE,
) -> tuple[AccuracyItem, ...]:
    """One "knee within 10 %" item per codec: the model's capacity per server core
    (sends/s, ``model_capacity_per_core_per_s``) against the measured one.

    ``measured_capacity``: the capacity search's ``capacity.csv`` rows (one per codec;
    ``per_server_core_per_s``, its 95 % interval ``per_core_ci_low_per_s`` /
    ``per_core_ci_high_per_s``, ``capacity_offered_per_s``, ``limited_by``). The item is
    ``n/a`` when the search found no knee — it ran out of generator, the highest offer
    allowed held, a step failed, no offer met the SLO — when a codec has no measured row,
    or when the model has no capacity for it. Codecs in either input, sorted."""
    _check_tolerance("tolerance", tolerance)
    rows = {str(r["codec"]): r for r in measured_capacity}
    items = []
    for codec in sorted(set(rows) | set(model_capacity_per_core_per_s)):
        p = _num(model_capacity_per_core_per_s.get(codec))
        row = rows.get(codec)
        if row is None:
            items.append(
                AccuracyItem(
                    f"{KNEE_TARGET} within {tolerance:.0%}", codec, math.nan, KNEE_METRIC,
                    math.nan, p, math.nan, tolerance, "n/a", "no measured capacity",
                )
            )  # fmt: skip
            continue
        m = _num(row.get("per_server_core_per_s"))
        limited = str(row.get("limited_by", ""))
        offered = _num(row.get("capacity_offered_per_s"))
        rel = _rel(m, p)
        status, note = _status(rel, tolerance, m, p)
        low, high = _num(row.get("per_core_ci_low_per_s")), _num(row.get("per_core_ci_high_per_s"))
        if limited not in KNEE_LIMITS:
            status = "n/a"
            note = _NO_KNEE.get(limited, f"no knee measured (limited by {limited or '?'})")
        elif not (offered > 0):
            status, note = "n/a", "no offer met the SLO"
        elif not (p > 0):
            status, note = "n/a", "no model capacity"
        elif math.isfinite(low) and math.isfinite(high):
            note = f"measured 95 % CI {low:,.0f}–{high:,.0f}/s per core"
        items.append(
            AccuracyItem(
                f"{KNEE_TARGET} within {tolerance:.0%}", codec, offered, KNEE_METRIC, m, p,
                rel, tolerance, status, note,
            )
        )  # fmt: skip
    return tuple(items)


_NO_KNEE = {
    "generator": "generator-bound: the load generator ran out before the server's knee",
    "max_load": "no knee: the SLO held up to the highest offer allowed",
    "failed": "no knee: a search step failed",
    "none": "no knee: the search found no bound",
}


def _num(value: Any) -> float:
    """A float, NaN for a missing or non-numeric value."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _check_tolerance(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} = {value!r}: expected a share above 0, e.g. 0.1 for 10 %")


def _status(rel: float, tolerance: float, measured: float, predicted: float) -> tuple[str, str]:
    if not math.isfinite(rel):
        if not math.isfinite(measured):
            return "n/a", "no measured value"
        if not math.isfinite(predicted):
            return "n/a", "no predicted value"
        return "n/a", "measured value is 0"
    return ("pass", "") if abs(rel) <= tolerance else ("miss", "")


def _side(joined: pd.DataFrame, side: str) -> pd.DataFrame:
    """The measured or predicted half of a joined frame, suffix removed."""
    suffix = f"_{side}"
    cols = {c: c[: -len(suffix)] for c in joined.columns if c.endswith(suffix)}
    out = joined[["codec", "offered_per_s", *cols]].rename(columns=cols)
    flags = out.get("generator_bound", pd.Series(False, index=out.index))
    return out.assign(generator_bound=flags.eq(True))


def explain(report: AccuracyReport, errors: pd.DataFrame, joined: pd.DataFrame) -> str:
    """Markdown: how many checks pass, each miss with its numbers and its own target, and
    the likely cause of each pattern of misses — all computed from ``report``,
    :func:`relative_error`'s table and the joined frame."""
    c = report.counts
    lines = [
        f"**{c['pass']} of {c['pass'] + c['miss']} accuracy checks pass** "
        f"({c['n/a']} not applicable); ack latency compared with the "
        f"{'server' if report.latency_basis == 'server' else 'load generator'}'s own figures"
        + (", delivery latency with the load generator's." if _has_delivery(report) else ".")
    ]
    groups: dict[tuple[str, str, str], list[AccuracyItem]] = {}
    for item in report.misses():
        groups.setdefault((item.codec, item.metric, _kind(item)), []).append(item)
    for (codec, metric, _), items in groups.items():
        where = ", ".join(
            f"{i.rel_error:+.0%} at {i.offered_per_s:,.0f}/s (model {i.predicted:.3g}, "
            f"measured {i.measured:.3g})"
            for i in items
        )
        note = f"; {items[0].note}" if items[0].note else ""
        lines.append(f"- {codec} {metric} off by {where} — target ±{items[0].tolerance:.0%}{note}.")
    lines += [f"- {reason}" for reason in _causes(report, errors, joined)]
    if len(lines) == 1:
        lines.append("- The model meets every target that applies to this run.")
    return "\n".join(lines)


def _kind(item: AccuracyItem) -> str:
    """``per-load``, ``saturation`` or ``knee``: which family of target an item is."""
    for kind in (SATURATION_TARGET, KNEE_TARGET):
        if item.target.startswith(f"{kind} within"):
            return kind
    return "per-load"


def _has_delivery(report: AccuracyReport) -> bool:
    return any(i.metric == "deliver_p99_ms" and i.status != "n/a" for i in report.items)


def _tolerance_text(report: AccuracyReport, metrics: Sequence[str]) -> str:
    """The targets on ``metrics`` in words, each with its own tolerance: "±15 % (p50) and
    ±25 % (p99)"; the module's defaults when the report has no such item."""
    defaults = {"p50": ACK_P50_TOLERANCE, "p99": ACK_P99_TOLERANCE}
    parts = []
    for metric in metrics:
        q = metric.rsplit("_", 2)[-2]
        tol = next((i.tolerance for i in report.items if i.metric == metric), defaults[q])
        parts.append(f"±{tol * 100:.0f} % ({q})")
    return " and ".join(parts)


def _causes(report: AccuracyReport, errors: pd.DataFrame, joined: pd.DataFrame) -> list[str]:
    out: list[str] = []
    per_load = [i for i in report.items if _kind(i) == "per-load"]
    missed = {(i.metric, i.codec) for i in per_load if i.status == "miss"}
    for metric, codec in sorted(missed):
        judged = {
            i.offered_per_s
            for i in per_load
            if (i.metric, i.codec) == (metric, codec) and i.status != "n/a"
        }
        e = errors[
            (errors["metric"] == metric)
            & (errors["codec"] == codec)
            & errors["offered_per_s"].isin(judged)
        ].dropna(subset=["rel_error"])
        rel = e.sort_values("offered_per_s")["rel_error"].to_numpy()
        if not len(rel):
            continue
        if (rel < 0).all():
            ratio = float(np.median(e["measured"] / e["predicted"]))
            out.append(
                f"{codec} {metric}: the model is below the measurement at every load judged "
                f"(median ×{ratio:.2g}): it leaves out time the server spends, or the "
                "calibration's per-operation costs are too low."
            )
        elif (rel > 0).all():
            out.append(
                f"{codec} {metric}: the model is above the measurement at every load judged: "
                "its costs are too high for this machine (recalibrate)."
            )
        if len(rel) > 1 and abs(rel[-1]) > 2 * abs(rel[0]):
            out.append(
                f"{codec} {metric}: the error grows with load ({rel[0]:+.0%} → {rel[-1]:+.0%}): "
                "queueing near saturation — service-time variability, batching, or the "
                "machine shared with the load generator — is not what the model assumes."
            )
    if has_measured(joined, "server_ack_p50_ms") and has_measured(joined, "ack_p50_ms"):
        gap = joined["ack_p50_ms_mean_measured"] - joined["server_ack_p50_ms_mean_measured"]
        out.append(
            f"The load generator adds {gap.median():.2g} ms to the median ack (client-side "
            "minus server-side, median over loads): network stack, the generator's own loop "
            "and schedule lag, which the model does not simulate."
        )
        targets = _tolerance_text(report, ("server_ack_p50_ms", "server_ack_p99_ms"))
        out.append(
            "Server-side quantiles are read from the server's histogram (ten buckets per "
            "decade, interpolated inside one): each is within about ±13 % of the true value, "
            f"which eats into the {targets} targets."
        )
    cpu_m = "server_cpu_us_per_msg_mean_measured"
    cpu_p = "server_cpu_us_per_msg_mean_predicted"
    if cpu_m in joined and cpu_p in joined:
        ratio = (joined[cpu_m] / joined[cpu_p]).replace([np.inf, -np.inf], np.nan).dropna()
        if len(ratio) and float(ratio.median()) > 1.25:
            out.append(
                f"The server process used ×{float(ratio.median()):.2g} the CPU per message "
                "that the model charges (median over loads): the model's CPU is the event "
                "loop's, while the process also runs store threads, passes the interpreter "
                "lock between them and the loop, and shares two cores with the load "
                "generator — time the model does not see, so its latencies come out low."
            )
    bound = int(joined.get("generator_bound_measured", pd.Series(dtype=bool)).eq(True).sum())
    if bound:
        out.append(f"{bound} measured point(s) were generator-bound and are not judged.")
    return out
