"""The model against measurement stage by stage: :func:`stage_table` (each stage of a
Send, measured beside modelled, judged against :data:`STAGE_TOLERANCE`),
:func:`stage_summary` (the checks in one line), :func:`has_stage_times`.

The stages are ``chatcap.pipeline.stages.SEND_STAGES`` (ingress, queue, commit, fanout,
ack); both sides carry each stage's mean as ``server_stage_<stage>_ms`` and the ack mean
as ``server_ack_mean_ms`` (a measured run: the server's histograms, Δ sum ÷ Δ count per
step; the model: its own stages and its ack mean). What the ack mean holds beyond the
five — the loop's turns between a commit's result and the Ack, the per-batch work — is
the :data:`REST` row: ``server_ack_mean_ms`` less the five stage means, on each side.

A point is judged as :func:`bench.analysis.comparison.accuracy` judges it: generator-bound
points and loads above :data:`~bench.analysis.comparison.LOAD_SHARE` of the measured
saturation throughput (when the run saturated) are ``n/a``, and so is a stage either side
lacks.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.analysis.comparison import (
    LOAD_SHARE,
    _check_tolerance,
    _rel,
    _side,
    _status,
    saturation_throughput,
)
from chatcap.pipeline.stages import SEND_STAGES

STAGE_TOLERANCE = 0.20
"""Each stage's mean (and the rest), model vs measured, per codec and load."""
REST = "rest"
"""The row for what the ack mean holds beyond the five stages."""
STAGE_ROWS: tuple[str, ...] = (*SEND_STAGES, REST)
"""The table's stages in a Send's order, the rest last."""
ACK_MEAN = "server_ack_mean_ms"
"""The ack mean the rest is taken from (both sides)."""
NO_STAGE_TIMES = "no stage times in this run (measured before the stage histograms)"
"""What :func:`stage_summary` says of a measured run without stage means."""

STAGE_COLUMNS = (
    "codec", "offered_per_s", "stage", "measured_ms", "predicted_ms", "rel_error",
    "tolerance", "status", "note",
)  # fmt: skip
""":func:`stage_table`'s columns (``model/stages.csv``)."""


def stage_column(stage: str) -> str:
    """The summary column of ``stage``'s mean: ``server_stage_<stage>_ms``."""
    return f"server_stage_{stage}_ms"


def _value(row: pd.Series, column: str, side: str) -> float:
    """``column``'s aggregated mean on one side of a joined row; NaN when absent."""
    try:
        return float(row.get(f"{column}_mean_{side}", math.nan))
    except (TypeError, ValueError):
        return math.nan


def _means(row: pd.Series, side: str) -> dict[str, float]:
    """Each stage's mean on one side, and the rest (NaN unless the ack mean and all five
    stages are there)."""
    out = {stage: _value(row, stage_column(stage), side) for stage in SEND_STAGES}
    ack = _value(row, ACK_MEAN, side)
    parts = [ack, *out.values()]
    out[REST] = ack - sum(out.values()) if all(math.isfinite(v) for v in parts) else math.nan
    return out


def _unjudged(joined: pd.DataFrame, load_share: float) -> dict[tuple[str, float], str]:
    """(codec, load) → why the point is not judged, by :func:`accuracy`'s rules: a
    generator-bound point, or a load above ``load_share`` × the measured saturation
    throughput of a run that saturated."""
    sat = saturation_throughput(_side(joined, "measured")).set_index("codec")
    out: dict[tuple[str, float], str] = {}
    for _, r in joined.iterrows():
        codec, load = str(r["codec"]), float(r["offered_per_s"])
        if bool(r.get("generator_bound_measured", False)):
            out[codec, load] = "generator-bound point"
            continue
        reached = codec in sat.index and bool(sat.loc[codec, "reached"])
        if reached and load > load_share * float(sat.loc[codec, "saturation_per_s"]):
            out[codec, load] = f"above {load_share:.0%} of measured capacity"
    return out


def stage_table(
    joined: pd.DataFrame,
    *,
    tolerance: float = STAGE_TOLERANCE,
    load_share: float = LOAD_SHARE,
) -> pd.DataFrame:
    """One row per (codec, offered load, stage) of a :func:`~bench.analysis.join` of
    aggregated measured and predicted frames — the five stages of a Send and the
    :data:`REST` — with :data:`STAGE_COLUMNS`: ``measured_ms`` and ``predicted_ms`` (the
    means over replications), ``rel_error`` = (predicted − measured) ÷ measured, and
    ``status`` ``pass`` (within ``tolerance``), ``miss`` or ``n/a`` with its ``note``:
    a generator-bound point or a load above ``load_share`` of the measured saturation
    throughput (as :func:`~bench.analysis.accuracy`), a stage either side lacks (a run
    measured before the stage histograms has none), or a measured rest at or below 0."""
    _check_tolerance("tolerance", tolerance)
    _check_tolerance("load_share", load_share)
    skip = _unjudged(joined, load_share)
    records: list[dict[str, Any]] = []
    for _, r in joined.iterrows():
        codec, load = str(r["codec"]), float(r["offered_per_s"])
        measured, predicted = _means(r, "measured"), _means(r, "predicted")
        for stage in STAGE_ROWS:
            m, p = measured[stage], predicted[stage]
            rel = _rel(m, p)
            status, note = _status(rel, tolerance, m, p)
            if (codec, load) in skip:
                status, note = "n/a", skip[codec, load]
            elif stage == REST and math.isfinite(m) and m <= 0:
                status, rel = "n/a", math.nan
                note = "measured rest ≤ 0: the stage means add up to the ack mean or more"
            records.append(
                {
                    "codec": codec, "offered_per_s": load, "stage": stage, "measured_ms": m,
                    "predicted_ms": p, "rel_error": rel, "tolerance": tolerance,
                    "status": status, "note": note,
                }
            )  # fmt: skip
    return pd.DataFrame.from_records(records, columns=list(STAGE_COLUMNS))


def has_stage_times(table: pd.DataFrame) -> bool:
    """True when a :func:`stage_table` holds some measured stage mean (a run measured
    before the server's stage histograms has none)."""
    stages = table[table["stage"].isin(SEND_STAGES)]
    return bool(pd.to_numeric(stages["measured_ms"], errors="coerce").notna().any())


def _pct(share: float) -> str:
    return f"{share * 100:+.0f} %"


def stage_summary(table: pd.DataFrame) -> str:
    """One line: how many stage checks pass of those judged and the worst miss by its
    stage, codec and load, e.g. ``stage means within 20 %: 31 of 40 (8 n/a); worst
    fanout +45 % at 4,000/s json``; :data:`NO_STAGE_TIMES` when the measured run has
    none."""
    if table.empty or not has_stage_times(table):
        return f"stage means: {NO_STAGE_TIMES}"
    tol = float(table["tolerance"].iloc[0])
    status = table["status"].astype(str)
    passed, missed = int(status.eq("pass").sum()), int(status.eq("miss").sum())
    na = len(table) - passed - missed
    head = f"stage means within {tol * 100:.0f} %"
    if not passed + missed:
        return f"{head}: none judged ({na} n/a)"
    line = f"{head}: {passed} of {passed + missed}" + (f" ({na} n/a)" if na else "")
    misses = table[status.eq("miss")]
    if misses.empty:
        return f"{line}; no miss"
    worst = misses.loc[misses["rel_error"].astype(float).abs().idxmax()]
    return (
        f"{line}; worst {worst['stage']} {_pct(float(worst['rel_error']))} at "
        f"{float(worst['offered_per_s']):,.0f}/s {worst['codec']}"
    )
