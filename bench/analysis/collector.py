"""The garbage collector at each measured point, against what the calibration charges.

CPython's collector stops the whole interpreter; the model (:class:`sim.calibration.
GcPauses`) charges its pauses from rates and pauses that ``bench calibrate`` measured on
servers of its own. A tail the model misses at high load is often a collection it did not
expect: :func:`collector_table` puts, per codec, load and generation, the server's own
``chatcap_gc_pause_seconds`` in the point's window (``summary.csv``'s
``server_gc<g>_per_kmsg`` and ``server_gc<g>_pause_ms``) beside the rate and pause the
model charges a message of that point — its room's members (Delivers per Ack), the
connections it held (``point.json``'s ``users``), the filling or full idempotency table
(:data:`chatcap.pipeline.dedup.SERVER_DEDUP_ENTRIES` messages since the server started).
:func:`collector_summary` says it in one line. Nothing here is judged or fitted: the
table names a cause; the calibration is what would change.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.loading import load_summary
from bench.analysis.paths import resolve
from chatcap.pipeline.dedup import SERVER_DEDUP_ENTRIES
from chatcap.pipeline.stages import GC_GENERATIONS
from chatcap.results import read_manifest
from sim.calibration import DEFAULT_COSTS, Costs, load_costs

__all__ = ["COLLECTOR_COLUMNS", "NO_COLLECTOR", "collector_summary", "collector_table"]

COLLECTOR_COLUMNS: tuple[str, ...] = (
    "codec",
    "offered_per_s",
    "generation",
    "members",
    "connections",
    "full_share",
    "measured_per_kmsg",
    "calibrated_per_kmsg",
    "rate_ratio",
    "measured_pause_ms",
    "calibrated_pause_ms",
    "pause_ratio",
    "measured_paused_ms_per_s",
    "calibrated_paused_ms_per_s",
)
"""One row per (codec, offered load, generation): the room's other members and the
connections the model charges; ``full_share`` the part of the window's messages past the
idempotency table's size (the full-table rates); collections per 1,000 messages and the
mean pause, measured and calibrated, each with measured ÷ calibrated; the time paused
per second of the window, both ways."""

NO_COLLECTOR = "no collector figures (the run or the calibration has none)"


def _ratio(measured: float, calibrated: float) -> float:
    if not (math.isfinite(measured) and math.isfinite(calibrated)) or calibrated <= 0:
        return math.nan
    return measured / calibrated


def _median(group: pd.DataFrame, column: str) -> float:
    return float(pd.to_numeric(group[column], errors="coerce").median())


def _users_by_point(run_dir: Path, manifest: dict[str, Any]) -> dict[tuple[str, float], float]:
    """Median ``users`` of each (codec, offered load): the points' ``point.json`` files,
    else the manifest's ``points`` list."""
    points: list[Any] = []
    for file in sorted((run_dir / "points").glob("*/point.json")):
        try:
            points.append(json.loads(file.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    if not points:
        points = [p for p in manifest.get("points") or () if isinstance(p, dict)]
    found: dict[tuple[str, float], list[float]] = {}
    for point in points:
        users = point.get("users")
        if isinstance(users, (int, float)):
            key = (str(point.get("codec")), round(float(point.get("offered_per_s", math.nan)), 6))
            found.setdefault(key, []).append(float(users))
    return {k: statistics.median(v) for k, v in found.items()}


def full_share(acked_per_s: float, acked_total: float, warmup_s: float, entries: int) -> float:
    """The part of a window's messages that came after the server's ``entries``-th (a
    fresh server per point; ``acked_per_s × warmup_s`` messages before the window)."""
    if not (acked_total > 0 and math.isfinite(acked_per_s)):
        return math.nan
    start = max(acked_per_s, 0.0) * max(warmup_s, 0.0)
    end = start + acked_total
    return min(max((end - max(start, entries)) / acked_total, 0.0), 1.0)


def _calibrated_rate(costs: Costs, g: int, members: float, share_full: float) -> float:
    """Collections of generation ``g`` per message, as the model counts them: the filling
    table's rates, the full table's for ``share_full`` of the messages (the filling ones
    where the calibration has no full-table figures, as the model)."""
    per_msg, per_rec = costs.gc_pauses_per_msg, costs.gc_pauses_per_recipient
    if g >= len(per_msg):
        return math.nan
    filling = per_msg[g] + (per_rec[g] if g < len(per_rec) else 0.0) * members
    if costs.gc_pauses_per_msg_full:
        full_rec = costs.gc_pauses_per_recipient_full
        full = (
            costs.gc_pauses_per_msg_full[g] + (full_rec[g] if g < len(full_rec) else 0.0) * members
        )
    else:
        full = filling
    share = share_full if math.isfinite(share_full) else 0.0
    return (1.0 - share) * filling + share * full


def _calibrated_pause_ms(costs: Costs, g: int, connections: float) -> float:
    if g >= len(costs.gc_pause_us):
        return math.nan
    grow = costs.gc_pause_us_per_connection
    per_conn = grow[g] if g < len(grow) else 0.0
    conns = connections if math.isfinite(connections) else 0.0
    return (costs.gc_pause_us[g] + per_conn * conns) / 1000.0


def collector_table(
    run_dir: str | Path,
    costs: Costs | str | Path | None,
    *,
    entries: int = SERVER_DEDUP_ENTRIES,
) -> pd.DataFrame:
    """:data:`COLLECTOR_COLUMNS` for a measured run folder and the calibration — its
    :class:`~sim.calibration.Costs` or its file (None or ``""``: the model's built-in
    costs, which have no collector figures) — medians over each point's repeats (see the
    module docstring). Empty when the run has no collector columns or the costs no
    collector figures."""
    if not isinstance(costs, Costs):
        costs = load_costs(resolve(costs)) if costs else DEFAULT_COSTS
    path = resolve(run_dir)
    rows = load_summary(path)
    columns = [f"server_gc{g}_per_kmsg" for g in GC_GENERATIONS]
    if rows.empty or not costs.gc_pause_us or not all(c in rows for c in columns):
        return pd.DataFrame(columns=list(COLLECTOR_COLUMNS))
    rows = rows[rows["source"] == "measured"] if "source" in rows else rows
    manifest = read_manifest(path)
    warmup = float(manifest.get("warmup_s") or 0.0)
    users = _users_by_point(path, manifest)
    records: list[dict[str, Any]] = []
    for (codec, load), group in rows.groupby(["codec", "offered_per_s"], sort=True):
        acked = pd.to_numeric(group["acked_per_s"], errors="coerce")
        delivered = pd.to_numeric(group["delivered_per_s"], errors="coerce")
        members = float((delivered / acked).median())
        total = group["acked_total"] if "acked_total" in group else acked * group["duration_s"]
        share = float(
            pd.Series(
                [
                    full_share(float(a), float(t), warmup, entries)
                    for a, t in zip(acked, pd.to_numeric(total, errors="coerce"), strict=True)
                ]
            ).median()
        )
        conns = users.get((str(codec), round(float(load), 6)), math.nan)
        rate_per_s = float(acked.median())
        for i, g in enumerate(GC_GENERATIONS):
            m_rate = float(pd.to_numeric(group[f"server_gc{g}_per_kmsg"], errors="coerce").median())
            m_pause = float(
                pd.to_numeric(group[f"server_gc{g}_pause_ms"], errors="coerce").median()
            )
            c_rate = _calibrated_rate(costs, i, members if math.isfinite(members) else 0.0, share)
            c_rate_k = c_rate * 1000.0
            c_pause = _calibrated_pause_ms(costs, i, conns)
            m_paused = m_rate / 1000.0 * rate_per_s * (m_pause if math.isfinite(m_pause) else 0.0)
            records.append(
                {
                    "codec": str(codec), "offered_per_s": float(load), "generation": g,
                    "members": members, "connections": conns, "full_share": share,
                    "measured_per_kmsg": m_rate, "calibrated_per_kmsg": c_rate_k,
                    "rate_ratio": _ratio(m_rate, c_rate_k),
                    "measured_pause_ms": m_pause, "calibrated_pause_ms": c_pause,
                    "pause_ratio": _ratio(m_pause, c_pause),
                    "measured_paused_ms_per_s": m_paused,
                    "calibrated_paused_ms_per_s": c_rate * rate_per_s * c_pause,
                }
            )  # fmt: skip
    return pd.DataFrame.from_records(records, columns=list(COLLECTOR_COLUMNS))


def _spread(values: Sequence[float]) -> str:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return "n/a"
    mid = statistics.median(finite)
    if len(finite) == 1:
        return f"×{mid:.2g}"
    return f"×{mid:.2g} ({finite[0]:.2g}–{finite[-1]:.2g})"


def collector_summary(table: pd.DataFrame) -> str:
    """One line: per generation, measured ÷ calibrated collections per message and mean
    pause (median over the points, and their range), e.g. ``collector, measured ÷
    calibrated over 9 points: gen 0 rate ×1.6 (1.2–2.1), pause ×2.9 …``;
    :data:`NO_COLLECTOR` for an empty table."""
    if table.empty:
        return f"collector: {NO_COLLECTOR}"
    points = table[["codec", "offered_per_s"]].drop_duplicates().shape[0]
    parts = []
    for g in GC_GENERATIONS:
        rows = table[table["generation"] == g]
        parts.append(
            f"gen {g} rate {_spread(rows['rate_ratio'].tolist())}, "
            f"pause {_spread(rows['pause_ratio'].tolist())}"
        )
    return f"collector, measured ÷ calibrated over {points} points: " + "; ".join(parts)
