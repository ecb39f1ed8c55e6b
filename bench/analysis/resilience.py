"""Breakers and retries: :func:`fault_windows`, :func:`retry_variants`,
:func:`timeseries_runs`, :func:`band`, :func:`retry_summary`, :func:`measured_timeseries`;
the retry storm measured: :func:`measured_goodput`, :func:`recovery_window`,
:func:`storm_check`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.capacity import _timed
from bench.analysis.model import overall_rows, run_points
from bench.analysis.paths import resolve
from chatcap.results import read_manifest
from chatcap.scenario import Scenario


def fault_windows(scenario: Scenario) -> list[tuple[float, float]]:
    """The scenario's fault episodes as (start, end) seconds from run start."""
    return [(e.start_s, e.start_s + e.duration_s) for e in scenario.server.faults.episodes]


RETRY_FIXES: dict[str, dict[str, Any]] = {
    "+ backoff": {
        "client.retry.base_ms": 100.0,
        "client.retry.cap_ms": 2000.0,
        "client.retry.multiplier": 2.0,
    },
    "+ jitter": {"client.retry.jitter": "full"},
    "+ retry budget": {"client.retry_budget.kind": "ratio"},
    "+ breaker": {
        "server.breaker.enabled": True,
        "server.breaker.window_type": "count",
        "server.breaker.window_size": 10,
        "server.breaker.minimum_calls": 10,
        "server.breaker.slow_call_duration_s": 0.1,
        "server.breaker.slow_call_rate_pct": 50.0,
        "server.breaker.open_duration_s": 2.0,
    },
}
"""Each fix alone, on top of the retry-storm scenario. The breaker judges the last 10
commits, and its slow-call limit sits under the episode's added store latency, so that
it can see a short spike at all."""


def retry_variants(
    scenario: Scenario, fixed: Scenario | None = None, *, quick: bool = False
) -> dict[str, Scenario]:
    """``as configured``, each of :data:`RETRY_FIXES` alone (not with ``quick``), and
    ``all fixes`` (``fixed`` when given — e.g. ``scenarios/retry-storm-fixed.toml`` —
    else every fix at once)."""
    out = {"as configured": scenario}
    if not quick:
        out.update({name: scenario.with_overrides(fix) for name, fix in RETRY_FIXES.items()})
    combined: dict[str, Any] = {}
    for fix in RETRY_FIXES.values():
        combined.update(fix)
    out["all fixes"] = fixed if fixed is not None else scenario.with_overrides(combined)
    return out


def timeseries_runs(
    scenarios: Mapping[str, Scenario],
    replications: int,
    *,
    executor: Executor | None = None,
    seed: int | None = None,
    duration_s: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each named scenario × replications: the time series (``variant``, ``replication``
    and ``sim.timeseries_frame``'s columns) and the summary rows (``variant`` added)."""
    ts_frames, row_frames = [], []
    for name, scn in scenarios.items():
        scn = _timed(scn, duration_s, None if duration_s is None else min(5.0, duration_s / 4))
        rows, frames = run_points(
            scn, [({}, {"variant": name})], replications, executor=executor, seed=seed,
            keep_frames=True,
        )  # fmt: skip
        row_frames.append(overall_rows(rows))
        for f in frames:
            ts_frames.append(f["timeseries"].assign(variant=name, replication=f["replication"]))
    return pd.concat(ts_frames, ignore_index=True), pd.concat(row_frames, ignore_index=True)


def band(
    ts: pd.DataFrame, columns: Sequence[str], by: Sequence[str] = ("variant", "t_s")
) -> pd.DataFrame:
    """Mean and 95 % CI half-width (Student t; 0 for one replication) of ``columns`` per
    ``by`` across replications: ``<c>_mean``, ``<c>_ci95``."""
    from scipy import stats  # type: ignore[import-untyped]

    g = ts.groupby(list(by), sort=True)[list(columns)]
    mean, sd, n = g.mean(), g.std(ddof=1).fillna(0.0), g.count()
    t = stats.t.ppf(0.975, np.maximum(n - 1, 1))
    half = pd.DataFrame(
        np.where(n > 1, sd / np.sqrt(n) * t, 0.0), index=sd.index, columns=sd.columns
    )
    return pd.concat([mean.add_suffix("_mean"), half.add_suffix("_ci95")], axis=1).reset_index()


def recovery_s(ts: pd.DataFrame, fault_end_s: float, share: float = 0.9) -> float:
    """Seconds after ``fault_end_s`` until goodput is back to ``share`` of the offered load
    for good (every later interval); NaN when it never is. One replication's series."""
    after = ts[ts["t_s"] > fault_end_s].sort_values("t_s")
    good = (after["acked_per_s"] >= share * after["offered_per_s"]).to_numpy()
    if not len(good) or not good[-1]:
        return math.nan
    bad = np.flatnonzero(~good)
    first_good = 0 if not len(bad) else int(bad[-1]) + 1
    return float(after["t_s"].to_numpy()[first_good] - fault_end_s)


def retry_summary(rows: pd.DataFrame, ts: pd.DataFrame, fault_end_s: float) -> pd.DataFrame:
    """Per variant (mean over replications): goodput, attempts per message (sends ÷
    first sends: the retry amplification), error rate, ack p99 and recovery time."""
    r = rows.assign(
        attempts_per_msg=rows["sent_total"] / (rows["offered_per_s"] * rows["duration_s"])
    )
    rec = ts.groupby(["variant", "replication"]).apply(
        lambda g: recovery_s(g, fault_end_s), include_groups=False
    )
    r = r.merge(rec.rename("recovery_s").reset_index(), on=["variant", "replication"])
    cols = ["acked_per_s", "attempts_per_msg", "error_rate", "ack_p99_ms", "recovery_s"]
    out = r.groupby("variant", sort=False)[cols].mean()
    return out.rename(columns={"acked_per_s": "goodput_per_s"}).reset_index()


def measured_timeseries(run_dir: str | Path) -> pd.DataFrame:
    """Per point of a measured run, from its ``samples.csv`` (the in-run ``/metrics``
    scrapes): ``t_s`` (end of each interval, from the first scrape), ``acked_per_s`` and
    ``received_per_s`` (frames the server read). Empty when no point has samples."""
    path = resolve(run_dir)
    names = {p["point"]: p for p in read_manifest(path).get("points", [])}
    frames = []
    for samples in sorted(path.glob("points/*/samples.csv")):
        s = pd.read_csv(samples)
        if len(s) < 2:
            continue
        dt = s["t_s"].diff()
        point = names.get(samples.parent.name, {})
        frames.append(
            pd.DataFrame(
                {
                    "point": samples.parent.name,
                    "codec": point.get("codec", ""),
                    "offered_per_s": float(point.get("offered_per_s", math.nan)),
                    "t_s": s["t_s"],
                    "acked_per_s": s["acks"].diff() / dt,
                    "received_per_s": s["frames_received"].diff() / dt,
                }
            ).iloc[1:]
        )
    cols = ["point", "codec", "offered_per_s", "t_s", "acked_per_s", "received_per_s"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


# ---------------------------------------------------------------------------- the storm measured

RECOVERY_AFTER_S = 12.0
"""The recovery window starts this long after the last fault episode ends (the retry
storm's test, ``tests/sim/test_retry_storm.py``: ``WELL_AFTER``), and runs to the end."""

STORM_TOLERANCE = 0.15
"""Measured mean goodput over the recovery window within this share of the model's."""

STAYS_DOWN_SHARE = 0.5
"""Goodput under this share of the offered load over the recovery window: it stayed down
(the metastable failure)."""

_SERVER_STARTED = re.compile(r"^ts=(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*event=server\.started")

_MEASURED_COLUMNS = [
    "point", "codec", "load_per_s", "clock", "server_offset_s", "t_run_s", "t_s",
    "offered_per_s", "attempts_per_s", "goodput_per_s", "acked_after_timeout_per_s",
    "timeouts_per_s", "late_answers_per_s", "errors_per_s",
]  # fmt: skip


def recovery_window(scenario: Scenario, after_s: float = RECOVERY_AFTER_S) -> tuple[float, float]:
    """``(last episode's end + after_s, workload.duration_s)``: seconds from the run's
    start (the fault episodes' clock), rows ``t_s`` in ``(start, end]``. The retry storm's
    is (25, 40). A ValueError when the scenario has no fault episode or the run ends first."""
    windows = fault_windows(scenario)
    if not windows:
        raise ValueError(
            f"scenario {scenario.name!r}: no server.faults.episodes, so no recovery window"
        )
    start, end = max(e for _, e in windows) + after_s, scenario.workload.duration_s
    if start >= end:
        raise ValueError(
            f"scenario {scenario.name!r}: workload.duration_s = {end:g} ends before the "
            f"recovery window starts ({start:g} s: {after_s:g} s after the last episode)"
        )
    return start, end


def server_started_unix_s(point_dir: str | Path) -> float | None:
    """When the point's server started its fault plan (Unix s): the ``server.started`` line
    of its log (``server.stderr``; the log's local time, ms); None when there is none."""
    path = Path(point_dir) / "server.stderr"
    if not path.exists():
        return None
    with path.open(errors="replace") as fh:
        for line in fh:
            m = _SERVER_STARTED.match(line)
            if m:
                return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def measured_goodput(run_dir: str | Path) -> pd.DataFrame:
    """Per point of a measured run, one row per whole second of its ``chat.json`` series
    (:mod:`bench.load.series`): what the clients saw, second by second.

    ``t_s`` is the second's end on the server's clock — seconds since the server started,
    which is where the scenario's fault episodes are (``server.faults.episodes`` count
    from the server's start, and the model's ``t_s`` from its run's start), found from the
    ``server.started`` line of ``server.stderr``: ``clock = "server"``,
    ``server_offset_s`` the Locust run's start minus the server's. Without that line
    ``t_s`` is ``t_run_s`` (``clock = "locust"``). ``t_run_s``: since the Locust run's start.
    Rates (per s): ``offered_per_s`` (messages first sent: the model's ``offered_per_s``),
    ``attempts_per_s`` (retries included: the model's ``sent_per_s``), ``goodput_per_s``
    (acked in time: the model's ``acked_per_s``), ``acked_after_timeout_per_s``,
    ``timeouts_per_s``, ``late_answers_per_s``, ``errors_per_s`` (Error frames, all
    codes). ``load_per_s``: the point's offered load as planned. Only whole seconds inside
    the Locust run are kept: from its start to when its users began to stop (the series'
    ``stopping_unix_s``; else ``stopped_unix_s``). A point without a series (a
    ``chat.json`` from before it existed) is left out; empty when none has one."""
    path = resolve(run_dir)
    names = {p["point"]: p for p in read_manifest(path).get("points", [])}
    frames = []
    for chat in sorted(path.glob("points/*/chat.json")):
        doc = json.loads(chat.read_text())
        series = doc.get("series")
        if not series or not series.get("seconds"):
            continue
        started, stopped = float(doc["started_unix_s"]), float(doc["stopped_unix_s"])
        if series.get("stopping_unix_s") is not None:  # the users began to stop then
            stopped = min(stopped, float(series["stopping_unix_s"]))
        origin = int(series["origin_unix_s"])
        begins = origin + np.arange(int(series["seconds"]), dtype=float)
        keep = (begins >= started) & (begins + 1.0 <= stopped)
        server_at = server_started_unix_s(chat.parent)
        offset = math.nan if server_at is None else started - server_at
        t_run = begins + 1.0 - started

        def rate(counts: Sequence[int]) -> np.ndarray:
            return np.asarray(counts, dtype=float)

        errors = np.zeros(len(begins))
        for counts in series.get("errors", {}).values():
            errors += rate(counts)
        point = names.get(chat.parent.name, {})
        frame = pd.DataFrame(
            {
                "point": chat.parent.name,
                "codec": point.get("codec", doc.get("plan", {}).get("codec", "")),
                "load_per_s": float(point.get("offered_per_s", math.nan)),
                "clock": "locust" if server_at is None else "server",
                "server_offset_s": offset,
                "t_run_s": t_run,
                "t_s": t_run if server_at is None else t_run + offset,
                "offered_per_s": rate(series["sent"]),
                "attempts_per_s": rate(series["attempts"]),
                "goodput_per_s": rate(series["goodput"]),
                "acked_after_timeout_per_s": rate(series["acked_after_timeout"]),
                "timeouts_per_s": rate(series["timeouts"]),
                "late_answers_per_s": rate(series["late_answers"]),
                "errors_per_s": errors,
            }
        )
        frames.append(frame[keep])
    if not frames:
        return pd.DataFrame(columns=_MEASURED_COLUMNS)
    return pd.concat(frames, ignore_index=True)[_MEASURED_COLUMNS]


def _in_window(frame: pd.DataFrame, window: tuple[float, float]) -> pd.DataFrame:
    return frame[(frame["t_s"] > window[0]) & (frame["t_s"] <= window[1])]


def _need(frame: pd.DataFrame, side: str, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{side} frame: no column {', '.join(missing)} (expected {source})")


def storm_check(
    measured: pd.DataFrame,
    modelled: pd.DataFrame,
    window: tuple[float, float],
    *,
    tolerance: float = STORM_TOLERANCE,
    down_share: float = STAYS_DOWN_SHARE,
) -> pd.DataFrame:
    """The retry storm, measured against the model over the recovery ``window`` (rows
    ``t_s`` in ``(start, end]``, :func:`recovery_window`): one row.

    ``measured`` is :func:`measured_goodput`'s frame (every point in it counts alike),
    ``modelled`` the model's time series (``sim`` ``timeseries``, one scenario; every
    replication in it counts alike). Columns: ``window``; ``measured_goodput_per_s`` and
    ``modelled_goodput_per_s`` (mean goodput per second over the window); ``rel_error``
    (measured ÷ modelled − 1; 0 when both are 0, infinite when only the model's is);
    ``within`` (``|rel_error| ≤ tolerance``); ``measured_share`` and ``modelled_share``
    (goodput ÷ offered load, first sends, over the window); ``measured_stays_down`` and
    ``modelled_stays_down`` (share under ``down_share``: still down long after the
    spike — the metastable failure); ``same_fate`` (both stay down, or both recover);
    ``measured_seconds`` and ``modelled_seconds`` (rows in the window). An empty window
    gives NaN figures, ``within`` false."""
    if not window[0] < window[1]:
        raise ValueError(f"window = {window!r}: expected (start, end) with start < end")
    if not tolerance > 0.0:
        raise ValueError(f"tolerance = {tolerance!r}: must be > 0")
    if not 0.0 < down_share <= 1.0:
        raise ValueError(f"down_share = {down_share!r}: expected 0 < share ≤ 1")
    _need(measured, "measured", ("t_s", "goodput_per_s", "offered_per_s"), "measured_goodput's")
    _need(modelled, "modelled", ("t_s", "acked_per_s", "offered_per_s"), "the model's timeseries")
    m, s = _in_window(measured, window), _in_window(modelled, window)

    def mean(frame: pd.DataFrame, col: str) -> float:
        return float(frame[col].mean()) if len(frame) else math.nan

    def share(frame: pd.DataFrame, col: str) -> float:
        offered = float(frame["offered_per_s"].sum())
        return float(frame[col].sum()) / offered if offered > 0 else math.nan

    got, want = mean(m, "goodput_per_s"), mean(s, "acked_per_s")
    if math.isnan(got) or math.isnan(want):
        rel = math.nan
    elif want == 0.0:
        rel = 0.0 if got == 0.0 else math.inf
    else:
        rel = got / want - 1.0
    m_share, s_share = share(m, "goodput_per_s"), share(s, "acked_per_s")
    m_down, s_down = bool(m_share < down_share), bool(s_share < down_share)
    row = {
        "window": f"({window[0]:g}, {window[1]:g}]",
        "measured_goodput_per_s": got,
        "modelled_goodput_per_s": want,
        "rel_error": rel,
        "within": bool(abs(rel) <= tolerance),
        "measured_share": m_share,
        "modelled_share": s_share,
        "measured_stays_down": m_down,
        "modelled_stays_down": s_down,
        "same_fate": bool(m_down == s_down and not (math.isnan(m_share) or math.isnan(s_share))),
        "measured_seconds": len(m),
        "modelled_seconds": len(s),
    }
    return pd.DataFrame([row])
