"""Breakers and retries: :func:`fault_windows`, :func:`retry_variants`,
:func:`timeseries_runs`, :func:`band`, :func:`retry_summary`, :func:`measured_timeseries`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
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
