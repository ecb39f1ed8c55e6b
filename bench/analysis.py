"""The notebooks' logic: load run folders, ask the model, compare, find capacity, plot.

Every notebook in ``notebooks/`` is a parameters cell and calls into this module (and
``sim``); everything a notebook shows is computed here, so the tests reach it.

* **paths** — :func:`resolve` (relative to the repository root, wherever the kernel
  runs), :func:`newest`, :func:`newest_calibration`, :func:`newest_codecs_csv`,
  :func:`newest_measured_run`;
* **loading** — :func:`load_summary` (a run folder's ``summary.csv`` as a frame),
  :func:`aggregate` (mean and 95 % CI per codec and load), :func:`measured_points`;
* **the model** — :func:`sizes` (:data:`QUICK` or :data:`FULL` run sizes),
  :func:`make_executor`, :func:`workload_overrides` (a load → users, rooms, codec),
  :func:`run_points` (any list of scenario overrides × replications on an executor),
  :func:`predict_measured` (the model at a measured run's loads), :func:`sweep_users`;
* **comparison** — :func:`join`, :func:`relative_error`, :func:`saturation_throughput`,
  :func:`knee`, :func:`accuracy` (the targets, as an :class:`AccuracyReport`),
  :func:`explain` (where the model fails, in words computed from the numbers);
* **capacity** — :class:`SLO`, :func:`bisect_max`, :func:`capacity_users_per_core`,
  :func:`capacity_table` (one search per grid combination), :func:`knee_sweep`,
  :func:`cores_needed`;
* **resilience** — :func:`fault_windows`, :func:`retry_variants`, :func:`timeseries_runs`,
  :func:`band`, :func:`retry_summary`, :func:`measured_timeseries`;
* **codecs** — :func:`envelope_sizes`, :func:`deliver_sizes`, :func:`codec_costs`,
  :func:`latency_histograms`, :func:`latency_figures`;
* **words** — the sentences the notebooks print (``*_text``, :func:`capacity_answer`,
  :func:`explain`), computed from the numbers;
* **plots** — ``plot_*``: each returns a ``matplotlib.figure.Figure`` (no pyplot, no
  global state; it renders with Agg anywhere).

Definitions used throughout (one place, so the notebooks and tests agree):

* an *aggregated* frame has one row per (keys, codec) with ``n`` and, for each metric
  ``c``, ``c_mean`` and ``c_ci95`` (``sim.summarize_runs``: Student t, NaN for n = 1);
* **saturation throughput** of a codec: the largest mean goodput (``acked_per_s``) over
  the offered loads whose mean ``error_rate`` is below 1 %, generator-bound points left
  out; it is *reached* when some load was not sustained (error rate ≥ 1 % or goodput
  below 95 % of the offered load), else it is only a lower bound;
* the **knee**: the first offered load whose p99 exceeds ``k`` × the p99 at the lowest
  load (or, given an SLO, the SLO's p99);
* **capacity per core**: the most users whose model run meets the SLO (mean over
  replications of each SLO metric, the ``mix`` row for a codec mix), divided by
  ``server.processes`` — the model runs one event loop per process, one process per core.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from chatcap.results import read_manifest, read_run
from chatcap.scenario import Scenario, load_scenario, load_scenario_data
from sim.api import replication_seed, run_task, summarize_runs
from sim.calibration import load_costs

P = ParamSpec("P")
T = TypeVar("T")

CODECS = ("json", "protobuf")
ERROR_MAX = 0.01
"""Error rate below which a load counts as sustained (saturation throughput)."""
SUSTAINED_SHARE = 0.95
"""Goodput share of the offered load below which a load is past saturation."""

# ---------------------------------------------------------------------------- paths


def repo_root() -> Path:
    """The checkout this module lives in (notebooks resolve their paths against it)."""
    return Path(__file__).resolve().parent.parent


def resolve(path: str | Path) -> Path:
    """An absolute path; a relative one is taken from the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


def newest(pattern: str, root: Path | None = None) -> Path | None:
    """The most recently modified match of ``pattern`` under ``root`` (default: the
    repository), the name breaking ties; None when nothing matches."""
    matches = list((root or repo_root()).glob(pattern))
    if not matches:
        return None
    return max(matches, key=lambda p: (p.stat().st_mtime, p.name))


def newest_calibration(root: Path | None = None) -> Path | None:
    """The newest ``results/calibration/*.json`` (written by ``python -m bench calibrate``)."""
    return newest("results/calibration/*.json", root)


def newest_codecs_csv(root: Path | None = None) -> Path | None:
    """The newest ``results/codecs/*/codecs.csv`` (written by ``python -m bench codecs``)."""
    return newest("results/codecs/*/codecs.csv", root)


def newest_measured_run(root: Path | None = None) -> Path | None:
    """The newest run folder under ``results/`` whose summary holds measured rows
    (``python -m bench run``), by the manifest's creation time; None when there is none."""
    found: list[tuple[str, Path]] = []
    for manifest in (root or repo_root()).glob("results/*/manifest.json"):
        run_dir = manifest.parent
        summary = run_dir / "summary.csv"
        if not summary.exists():
            continue
        try:  # a folder that is not a readable run is not a candidate
            first = pd.read_csv(summary, nrows=1, usecols=["source"])
            created = str(read_manifest(run_dir).get("created_utc", ""))
        except (ValueError, OSError):
            continue
        if len(first) and first["source"].iloc[0] == "measured":
            found.append((created, run_dir))
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------- loading


def load_summary(run_dir: str | Path) -> pd.DataFrame:
    """A run folder's summary rows (validated by ``chatcap.results.read_run``) as a frame;
    ``generator_bound`` is a bool column (False where absent) and ``note`` a string."""
    run = read_run(resolve(run_dir))
    frame = run.summary_frame()
    if frame.empty:
        raise ValueError(f"{run.path}: summary.csv has no rows")
    flags = frame["generator_bound"] if "generator_bound" in frame else [None] * len(frame)
    frame["generator_bound"] = [v is True for v in flags]
    notes = frame["note"] if "note" in frame else [None] * len(frame)
    frame["note"] = [v or "" for v in notes]
    return frame


def aggregate(rows: pd.DataFrame, keys: Sequence[str] = ("offered_per_s",)) -> pd.DataFrame:
    """Mean and 95 % CI of every numeric column per (keys, codec) — ``sim.summarize_runs``
    — plus ``generator_bound`` (any replication was) and ``source``."""
    keys = list(keys)
    rows = rows.drop(columns=["point"], errors="ignore")
    if "generator_bound" not in rows:
        rows = rows.assign(generator_bound=False)
    rows = rows.assign(generator_bound=rows["generator_bound"].eq(True))
    out = summarize_runs(rows, keys)
    by = [*keys, "codec"]
    extra = rows.groupby(by, sort=False, dropna=False).agg(
        source=("source", "first"), generator_bound=("generator_bound", "any")
    )
    out = out.merge(extra.reset_index(), on=by, how="left")
    return out.sort_values(by, kind="stable").reset_index(drop=True)


def measured_points(run_dir: str | Path) -> pd.DataFrame:
    """The distinct (codec, offered load) points of a measured run with their users and
    per-user rate: from the manifest's ``points`` when present, else derived from the
    summary rows and the scenario's per-user rate (as ``bench run`` does)."""
    path = resolve(run_dir)
    manifest = read_manifest(path)
    if manifest.get("points"):
        frame = pd.DataFrame(manifest["points"])
    else:
        scenario = _manifest_scenario(manifest, path)
        frame = load_summary(path)[["codec", "offered_per_s"]].copy()
        rate = scenario.workload.send_rate_per_user_per_s
        frame["users"] = [max(1, round(x / rate)) for x in frame["offered_per_s"]]
        frame["send_rate_per_user_per_s"] = frame["offered_per_s"] / frame["users"]
    cols = ["codec", "offered_per_s", "users", "send_rate_per_user_per_s"]
    frame = frame[cols].drop_duplicates(["codec", "offered_per_s"])
    return frame.sort_values(["codec", "offered_per_s"]).reset_index(drop=True)


def _manifest_scenario(manifest: Mapping[str, Any], where: Path) -> Scenario:
    if not manifest.get("scenario"):
        raise ValueError(f"{where}: the manifest holds no resolved scenario")
    return load_scenario_data(manifest["scenario"], source=f"{where}/manifest.json")


# ---------------------------------------------------------------------------- the model


class InlineExecutor(Executor):
    """An executor that runs each task at once in the caller (small runs: no pool)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


def make_executor(workers: int | None = None) -> Executor:
    """``workers`` ≤ 1: an :class:`InlineExecutor`; else a process pool (None: all CPUs).
    Use it as a context manager so that the pool is shut down."""
    if workers is None:
        workers = os.cpu_count() or 1
    return InlineExecutor() if workers <= 1 else ProcessPoolExecutor(max_workers=workers)


@dataclass(frozen=True)
class Sizes:
    """How big the model runs of a notebook are."""

    replications: int
    duration_s: float
    warmup_s: float
    rel_tol: float
    workers: int
    load_fractions: tuple[float, ...]


QUICK = Sizes(2, 1.0, 0.25, 0.1, 1, (0.5, 0.9, 1.1))
"""Seconds per notebook: for tests and a first look."""
FULL = Sizes(3, 6.0, 1.0, 0.03, os.cpu_count() or 1, (0.25, 0.5, 0.75, 0.9, 1.0, 1.1))
"""Minutes per notebook: for answers."""


def sizes(quick: bool, **overrides: Any) -> Sizes:
    """:data:`QUICK` or :data:`FULL` with the given fields replaced (None = keep)."""
    return replace(
        QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None}
    )


def workload_overrides(
    scenario: Scenario,
    users: int,
    *,
    send_rate_per_user_per_s: float | None = None,
    room_size: int | None = None,
    codec: str | None = None,
) -> dict[str, Any]:
    """Scenario overrides for ``users`` users, rooms filled as the load generator fills
    them (fixed size: ``ceil(users / size)`` rooms; otherwise the scenario's rooms per
    user), a room never larger than the users; ``codec`` gives every user that codec
    (``mix``: the scenario's mix)."""
    if users < 1:
        raise ValueError(f"users = {users}: must be ≥ 1")
    w = scenario.workload
    rs = w.room_size
    out: dict[str, Any] = {"workload.users": int(users)}
    if room_size is not None or rs.distribution == "fixed":
        size = min(room_size or rs.size, users)
        out["workload.room_size.distribution"] = "fixed"
        out["workload.room_size.size"] = size
        out["workload.rooms"] = math.ceil(users / size)
    else:
        out["workload.room_size.max"] = min(rs.max, users)
        out["workload.room_size.min"] = min(rs.min, users)
        out["workload.rooms"] = max(1, round(users * w.rooms / w.users))
    if send_rate_per_user_per_s is not None:
        out["workload.send_rate_per_user_per_s"] = float(send_rate_per_user_per_s)
    if codec is not None and codec != "mix":
        out["workload.codec_mix"] = {codec: 1.0}
    return out


Point = tuple[Mapping[str, Any], Mapping[str, Any]]
"""One model point: (scenario overrides, labels copied onto its rows)."""


def run_points(
    scenario: Scenario,
    points: Sequence[Point],
    replications: int,
    *,
    executor: Executor | None = None,
    seed: int | None = None,
    keep_frames: bool = False,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Every point × ``replications`` on ``executor`` (default inline), all submitted at
    once. Replication ``r`` uses ``sim.replication_seed(seed, r)`` at every point (common
    random numbers, as ``sim.sweep``). Returns the summary rows (labels first, plus
    ``point``: the index) and, with ``keep_frames``, one dict per task with ``point``,
    ``replication``, ``requests`` and ``timeseries``."""
    if replications < 1:
        raise ValueError(f"replications = {replications}: must be ≥ 1")
    root = scenario.seed if seed is None else seed
    data = [scenario.with_overrides(dict(overrides)).to_dict() for overrides, _ in points]
    pool = executor or InlineExecutor()
    tasks = [(i, r) for i in range(len(points)) for r in range(replications)]
    futures = [
        pool.submit(run_task, data[i], replication_seed(root, r), r, keep_frames) for i, r in tasks
    ]
    records: list[dict[str, Any]] = []
    frames: list[dict[str, Any]] = []
    for (i, r), future in zip(tasks, futures, strict=True):
        out = future.result()
        labels = dict(points[i][1])
        for row in out["rows"]:
            records.append({**row, **labels, "point": i})
        if keep_frames:
            frames.append({"point": i, "replication": r, **labels, **out, "rows": None})
    return pd.DataFrame.from_records(records), frames


def overall_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (point, replication): the ``mix`` row of a codec mix, else the only one."""
    counts = rows.groupby(["point", "replication"])["codec"].transform("size")
    return rows[(counts == 1) | (rows["codec"] == "mix")].reset_index(drop=True)


def predict_measured(
    run_dir: str | Path,
    *,
    calibration: str | Path | None,
    replications: int,
    executor: Executor | None = None,
    duration_s: float | None = None,
    warmup_s: float | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """The model at each (codec, offered load) of a measured run: the run's resolved
    scenario, the same users and per-user rate, every user on that codec, the same
    duration and warm-up (unless given), costs from ``calibration`` (None: the model's
    built-in defaults) — its store commit figures too (``sim.store_service_ms`` and
    ``sim.store_per_msg_ms``: the batch-of-one mean and the per-message slope). Rows
    carry the measured ``offered_per_s`` exactly (for :func:`join`) and ``source =
    "sim"``."""
    path = resolve(run_dir)
    manifest = read_manifest(path)
    scenario = _manifest_scenario(manifest, path)
    duration = duration_s or manifest.get("duration_s") or scenario.workload.duration_s
    warmup = warmup_s if warmup_s is not None else manifest.get("warmup_s")
    if warmup is None:
        warmup = scenario.workload.warmup_s * duration / scenario.workload.duration_s
    overrides: dict[str, Any] = {
        "workload.duration_s": float(duration),
        "workload.warmup_s": float(warmup),
        "sim.calibration": str(resolve(calibration)) if calibration else "",
    }
    if calibration:  # the store's mean as measured too, not the scenario's planning figure
        costs = load_costs(resolve(calibration))
        overrides["sim.store_service_ms"] = costs.store_commit_fixed_ms
        overrides["sim.store_per_msg_ms"] = costs.store_commit_per_msg_ms
    base = scenario.with_overrides(overrides)
    points: list[Point] = []
    for p in measured_points(path).itertuples(index=False):
        overrides = workload_overrides(
            base, int(p.users), send_rate_per_user_per_s=float(p.send_rate_per_user_per_s),
            codec=str(p.codec),
        )  # fmt: skip
        points.append((overrides, {"offered_per_s": float(p.offered_per_s)}))
    rows, _ = run_points(base, points, replications, executor=executor, seed=seed)
    return rows


def sweep_users(
    scenario: Scenario,
    users: Sequence[int],
    replications: int,
    *,
    executor: Executor | None = None,
    seed: int | None = None,
    labels: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The model at each user count (the scenario's rate and room shape), aggregated:
    one row per count with ``users``, ``users_per_core``, ``offered_per_core_per_s`` and
    the ``_mean`` / ``_ci95`` columns of the overall row (``mix`` for a codec mix)."""
    points: list[Point] = [
        (workload_overrides(scenario, int(n)), {"users": int(n), **(labels or {})}) for n in users
    ]
    rows, _ = run_points(scenario, points, replications, executor=executor, seed=seed)
    agg = aggregate(overall_rows(rows), ["users", *(labels or {})])
    processes = scenario.server.processes
    agg["users_per_core"] = agg["users"] / processes
    agg["offered_per_core_per_s"] = agg["offered_per_s_mean"] / processes
    return agg


# ---------------------------------------------------------------------------- comparison


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
"""(measured column, predicted column): the model has no server/client split, so its
ack latency is compared with both the server's own and the generator's."""


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
    """The accuracy targets, item by item: ack p50 and p99 within 20 % at every load up
    to 80 % of the measured saturation throughput, and the saturation throughput within
    10 %. ``latency_basis`` says which measured ack latency the items use."""

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


LATENCY_TOLERANCE = 0.20
SATURATION_TOLERANCE = 0.10
LOAD_SHARE = 0.80


def accuracy(
    joined: pd.DataFrame,
    *,
    latency_basis: str = "auto",
    latency_tolerance: float = LATENCY_TOLERANCE,
    saturation_tolerance: float = SATURATION_TOLERANCE,
    load_share: float = LOAD_SHARE,
) -> AccuracyReport:
    """Check the targets on a :func:`join` of aggregated measured and predicted frames.

    ``latency_basis``: ``server`` compares the model's ack latency with the server's own
    (``server_ack_*``), ``client`` with the generator's, ``auto`` = server when measured.
    Loads over ``load_share`` × the measured saturation throughput are left out of the
    latency checks (all loads when saturation was not reached); generator-bound points are
    ``n/a``. The saturation item is ``n/a`` when the measured run did not saturate.
    """
    if latency_basis == "auto":
        latency_basis = "server" if has_measured(joined, "server_ack_p50_ms") else "client"
    if latency_basis not in ("server", "client"):
        raise ValueError(f"latency_basis = {latency_basis!r}: use auto, server or client")
    prefix = "server_" if latency_basis == "server" else ""
    sat_m = saturation_throughput(_side(joined, "measured"))
    sat_p = saturation_throughput(_side(joined, "predicted"))
    items: list[AccuracyItem] = []
    for _, r in joined.iterrows():
        codec, load = str(r["codec"]), float(r["offered_per_s"])
        cap = sat_m.set_index("codec").loc[codec] if codec in set(sat_m["codec"]) else None
        limit = load_share * cap["saturation_per_s"] if cap is not None else math.inf
        too_high = cap is not None and bool(cap["reached"]) and load > limit
        for q in ("p50", "p99"):
            m_col, p_col = f"{prefix}ack_{q}_ms", f"ack_{q}_ms"
            m = float(r.get(f"{m_col}_mean_measured", math.nan))
            p = float(r[f"{p_col}_mean_predicted"])
            rel = (p - m) / m if m and math.isfinite(m) else math.nan
            status, note = _status(rel, latency_tolerance)
            if bool(r.get("generator_bound_measured", False)):
                status, note = "n/a", "generator-bound point"
            elif too_high:
                status, note = "n/a", f"above {load_share:.0%} of measured capacity"
            items.append(
                AccuracyItem(
                    f"ack {q} within {latency_tolerance:.0%}", codec, load, m_col, m, p, rel,
                    latency_tolerance, status, note,
                )
            )  # fmt: skip
    for _, m_row in sat_m.iterrows():
        codec = str(m_row["codec"])
        p_row = sat_p.set_index("codec").loc[codec]
        m, p = float(m_row["saturation_per_s"]), float(p_row["saturation_per_s"])
        rel = (p - m) / m if m and math.isfinite(m) else math.nan
        status, note = _status(rel, saturation_tolerance)
        if not bool(m_row["reached"]):
            status = "n/a"
            note = f"the measured run did not saturate (≥ {m:,.0f}/s sustained at every load)"
        elif not bool(p_row["reached"]):
            note = "the model sustained every load: its saturation lies above the loads run"
        items.append(
            AccuracyItem(
                f"saturation throughput within {saturation_tolerance:.0%}", codec,
                float(m_row["at_offered_per_s"]), "acked_per_s", m, p, rel,
                saturation_tolerance, status, note,
            )
        )  # fmt: skip
    return AccuracyReport(tuple(items), latency_basis, sat_m)


def _status(rel: float, tolerance: float) -> tuple[str, str]:
    if not math.isfinite(rel):
        return "n/a", "no measured value"
    return ("pass", "") if abs(rel) <= tolerance else ("miss", "")


def _side(joined: pd.DataFrame, side: str) -> pd.DataFrame:
    """The measured or predicted half of a joined frame, suffix removed."""
    suffix = f"_{side}"
    cols = {c: c[: -len(suffix)] for c in joined.columns if c.endswith(suffix)}
    out = joined[["codec", "offered_per_s", *cols]].rename(columns=cols)
    flags = out.get("generator_bound", pd.Series(False, index=out.index))
    return out.assign(generator_bound=flags.eq(True))


def explain(report: AccuracyReport, errors: pd.DataFrame, joined: pd.DataFrame) -> str:
    """Markdown: how many checks pass, each miss with its numbers, and the likely cause of
    each pattern of misses — all computed from ``report``, :func:`relative_error`'s
    table and the joined frame."""
    c = report.counts
    lines = [
        f"**{c['pass']} of {c['pass'] + c['miss']} accuracy checks pass** "
        f"({c['n/a']} not applicable); ack latency compared with the "
        f"{'server' if report.latency_basis == 'server' else 'load generator'}'s own figures."
    ]
    groups: dict[tuple[str, str], list[AccuracyItem]] = {}
    for item in report.misses():
        groups.setdefault((item.codec, item.metric), []).append(item)
    for (codec, metric), items in groups.items():
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


def _causes(report: AccuracyReport, errors: pd.DataFrame, joined: pd.DataFrame) -> list[str]:
    out: list[str] = []
    missed = {(i.metric, i.codec) for i in report.misses() if i.metric != "acked_per_s"}
    for metric, codec in sorted(missed):
        judged = {
            i.offered_per_s
            for i in report.items
            if (i.metric, i.codec) == (metric, codec) and i.status != "n/a"
        }
        e = errors[
            (errors["metric"] == metric)
            & (errors["codec"] == codec)
            & errors["offered_per_s"].isin(judged)
        ].dropna(subset=["rel_error"])
        rel = e.sort_values("offered_per_s")["rel_error"].to_numpy()
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
        out.append(
            "Server-side quantiles are read from the server's histogram (ten buckets per "
            "decade, interpolated inside one): each is within about ±13 % of the true value, "
            "which eats into the ±20 % target."
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


# ---------------------------------------------------------------------------- capacity


@dataclass(frozen=True)
class SLO:
    """A service level: every metric's p99 ≤ ``p99_ms`` and error rate ≤ ``error_rate``."""

    p99_ms: float
    error_rate: float = ERROR_MAX
    metrics: tuple[str, ...] = ("ack_p99_ms", "deliver_p99_ms")

    def misses(self, row: Mapping[str, Any]) -> list[str]:
        """What ``row`` (summary or aggregated) breaks; empty when it meets the SLO."""
        out = []
        for metric in self.metrics:
            value = float(row.get(f"{metric}_mean", row.get(metric, math.nan)))
            if not value <= self.p99_ms:
                out.append(f"{metric} {value:.3g} > {self.p99_ms:g} ms")
        err = float(row.get("error_rate_mean", row.get("error_rate", math.nan)))
        if not err <= self.error_rate:
            out.append(f"error rate {err:.2%} > {self.error_rate:.2%}")
        return out

    def describe(self) -> str:
        names = " and ".join(m.removesuffix("_p99_ms") for m in self.metrics)
        return f"p99 of {names} ≤ {self.p99_ms:g} ms, error rate ≤ {self.error_rate:.2%}"


def bisect_max(
    passes: Callable[[int], bool],
    *,
    start: int,
    step: int = 1,
    rel_tol: float = 0.05,
    cap: int = 10_000_000,
    grow: float = 2.0,
) -> tuple[int, list[tuple[int, bool]]]:
    """The largest multiple of ``step`` (≤ ``cap``) for which ``passes`` holds, assuming
    it holds below some point and fails above. From ``start`` it multiplies by ``grow``
    while passing (divides while failing) to bracket the answer, then bisects until the
    bracket is within ``max(step, rel_tol × lower end)``. Returns the passing lower end
    (0 when even ``step`` fails) and every ``(n, passed)`` asked, in order; each ``n`` is
    asked once."""
    if step < 1 or start < 1 or grow <= 1:
        raise ValueError(f"start = {start}, step = {step}, grow = {grow}: need ≥ 1, ≥ 1, > 1")
    asked: dict[int, bool] = {}

    def ask(n: int) -> bool:
        if n not in asked:
            asked[n] = passes(n)
        return asked[n]

    def snap(n: float) -> int:
        return max(step, min(cap // step * step, int(n // step) * step))

    n = snap(start)
    if ask(n):
        lo, hi = n, None
        while hi is None and lo < snap(cap):
            nxt = max(snap(lo * grow), min(lo + step, snap(cap)))
            if ask(nxt):
                lo = nxt
            else:
                hi = nxt
        if hi is None:
            return lo, list(asked.items())
    else:
        hi, lo = n, 0
        while lo == 0 and hi > step:
            nxt = min(snap(hi / grow), max(hi - step, step))
            if ask(nxt):
                lo = nxt
            else:
                hi = nxt
        if lo == 0:
            return 0, list(asked.items())
    while hi - lo > max(step, rel_tol * lo):
        mid = snap((lo + hi) / 2)
        if mid in (lo, hi):
            break
        if ask(mid):
            lo = mid
        else:
            hi = mid
    return lo, list(asked.items())


@dataclass(frozen=True)
class Capacity:
    """The model's answer: the most users that meet the SLO, per core and in all."""

    users: int
    processes: int
    users_per_core: float
    offered_per_s: float
    slo: SLO
    trials: pd.DataFrame = field(repr=False)

    def describe(self) -> str:
        return (
            f"{self.users_per_core:,.0f} users per core ({self.users:,} users on "
            f"{self.processes} server process(es), {self.offered_per_s:,.0f} sends/s) "
            f"keep {self.slo.describe()}"
        )


def capacity_users_per_core(
    scenario: Scenario,
    slo: SLO,
    *,
    replications: int = 3,
    duration_s: float | None = None,
    warmup_s: float | None = None,
    executor: Executor | None = None,
    rel_tol: float = 0.05,
    max_users: int = 2_000_000,
    seed: int | None = None,
) -> Capacity:
    """Search the model for the most users meeting ``slo`` (see the module docstring).

    Users come in whole rooms (a multiple of the fixed room size) at the scenario's
    per-user rate. The first trial is the scenario's own user count; when it passes, the
    search starts at 80 % of the CPU-bound estimate ``processes × 10⁶ ÷ (CPU µs per
    message × rate)`` read from that trial and brackets in steps of 25 % (else from the
    first trial in steps of 2×), then bisects (:func:`bisect_max`).
    """
    run_scn = _timed(scenario, duration_s, warmup_s)
    rs = scenario.workload.room_size
    step = rs.size if rs.distribution == "fixed" else 1
    rate = scenario.workload.send_rate_per_user_per_s
    processes = scenario.server.processes
    trials: dict[int, dict[str, Any]] = {}

    def trial(n: int) -> dict[str, Any]:
        if n not in trials:
            agg = sweep_users(run_scn, [n], replications, executor=executor, seed=seed)
            row = agg.iloc[0].to_dict()
            why = slo.misses(row)
            trials[n] = {**row, "passed": not why, "why": "; ".join(why)}
        return trials[n]

    first = trial(max(step, scenario.workload.users // step * step))
    start, grow = int(first["users"]), 2.0
    cpu_us = float(first.get("server_cpu_us_per_msg_mean", math.nan))
    estimate = processes * 1e6 / (cpu_us * rate) if cpu_us > 0 else 0.0
    if first["passed"] and 0.8 * estimate > start:
        start, grow = int(0.8 * estimate), 1.25  # close to the answer: small steps
    best, _ = bisect_max(
        lambda n: bool(trial(n)["passed"]),
        start=start, step=step, rel_tol=rel_tol, cap=max_users, grow=grow,
    )  # fmt: skip
    table = pd.DataFrame(trials.values()).sort_values("users").reset_index(drop=True)
    offered = best * rate
    return Capacity(best, processes, best / processes, offered, slo, table)


def _timed(scenario: Scenario, duration_s: float | None, warmup_s: float | None) -> Scenario:
    overrides: dict[str, Any] = {}
    if duration_s is not None:
        overrides["workload.duration_s"] = float(duration_s)
    if warmup_s is not None:
        overrides["workload.warmup_s"] = float(warmup_s)
    return scenario.with_overrides(overrides) if overrides else scenario


GRID_CODEC = "codec"
"""A grid key that is not a scenario key: every user on that codec (``mix``: the mix)."""


def grid_combos(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``grid`` as dicts, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def combo_scenario(scenario: Scenario, combo: Mapping[str, Any]) -> Scenario:
    """``scenario`` with one grid combination applied (``codec`` handled)."""
    overrides = {k: v for k, v in combo.items() if k != GRID_CODEC}
    codec = combo.get(GRID_CODEC)
    if codec is not None and codec != "mix":
        overrides["workload.codec_mix"] = {codec: 1.0}
    return scenario.with_overrides(overrides)


def combo_label(combo: Mapping[str, Any]) -> str:
    """``pool.size=4 processes=1 codec=json``: the keys' last two parts at most."""
    parts = []
    for key, value in combo.items():
        short = ".".join(key.split(".")[-2:]) if key.startswith("server.") else key
        short = short.removeprefix("server.")
        parts.append(f"{short}={value:g}" if isinstance(value, float) else f"{short}={value}")
    return " ".join(parts) or "as configured"


def capacity_table(
    scenario: Scenario,
    grid: Mapping[str, Sequence[Any]],
    slo: SLO,
    **kwargs: Any,
) -> tuple[pd.DataFrame, dict[str, Capacity]]:
    """:func:`capacity_users_per_core` for every grid combination: a table (best first)
    and the results by label. ``kwargs`` go to the search."""
    results: dict[str, Capacity] = {}
    records = []
    for combo in grid_combos(grid):
        label = combo_label(combo)
        cap = capacity_users_per_core(combo_scenario(scenario, combo), slo, **kwargs)
        results[label] = cap
        records.append(
            {"config": label, **combo, "users_per_core": cap.users_per_core, "users": cap.users,
             "processes": cap.processes, "offered_per_s": cap.offered_per_s,
             "trials": len(cap.trials)}
        )  # fmt: skip
    table = pd.DataFrame.from_records(records)
    table = table.sort_values("users_per_core", ascending=False, kind="stable")
    return table.reset_index(drop=True), results


def knee_sweep(
    scenario: Scenario,
    grid: Mapping[str, Sequence[Any]],
    capacities: Mapping[str, Capacity],
    fractions: Sequence[float],
    replications: int,
    *,
    executor: Executor | None = None,
    seed: int | None = None,
    duration_s: float | None = None,
    warmup_s: float | None = None,
) -> pd.DataFrame:
    """For each grid combination: the model at ``fractions`` of its capacity (in users),
    aggregated, with a ``config`` column — the data of :func:`plot_knee`."""
    frames = []
    for combo in grid_combos(grid):
        label = combo_label(combo)
        scn = _timed(combo_scenario(scenario, combo), duration_s, warmup_s)
        rs = scn.workload.room_size
        step = rs.size if rs.distribution == "fixed" else 1
        cap_users = max(capacities[label].users, step)
        users = sorted({max(step, round(f * cap_users / step) * step) for f in fractions})
        frames.append(
            sweep_users(
                scn, users, replications, executor=executor, seed=seed, labels={"config": label}
            )
        )
    return pd.concat(frames, ignore_index=True)


def cores_needed(target_users: int, capacity: Capacity) -> int:
    """Server processes (cores) the target needs at the capacity's users per core."""
    if capacity.users_per_core <= 0:
        raise ValueError("no user count met the SLO: no number of cores will do")
    return max(1, math.ceil(target_users / capacity.users_per_core))


# ---------------------------------------------------------------------------- resilience


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


# ---------------------------------------------------------------------------- codecs


def envelope_sizes() -> pd.DataFrame:
    """Encoded bytes of the codec benchmark's envelopes (``bench.micro.codec_bench``), per codec."""
    from bench.micro.codec_bench import sample_envelopes
    from chatcap.protocol import CODECS as WIRE

    records = [
        {"envelope": name, "codec": codec, "bytes": len(WIRE[codec].encode(msg))}
        for name, msg in sample_envelopes().items()
        for codec in CODECS
    ]
    return pd.DataFrame.from_records(records)


def deliver_sizes(body_bytes: Iterable[int]) -> pd.DataFrame:
    """Encoded bytes of a chat ``Deliver`` per body size and codec (the model's figure)."""
    from sim.stats import deliver_bytes

    records = [
        {"body_bytes": int(b), "codec": codec, "bytes": size}
        for b in body_bytes
        for codec, size in deliver_bytes(int(b)).items()
    ]
    return pd.DataFrame.from_records(records)


def codec_costs(codecs_csv: str | Path | None, *, repeat: int = 3) -> tuple[pd.DataFrame, str]:
    """Our codecs' ns per encode and decode per envelope: from a ``codecs.csv`` of
    ``python -m bench codecs`` when given, else timed here (``repeat`` short repeats).
    Returns the rows (``envelope``, ``format``, ``bytes``, ``encode_ns``, ``decode_ns``)
    and where they come from."""
    cols = ["envelope", "format", "bytes", "encode_ns", "decode_ns"]
    if codecs_csv is not None:
        path = resolve(codecs_csv)
        frame = pd.read_csv(path)
        ours = frame[frame["is_ours"].astype(str).str.lower() == "true"]
        return ours[cols].reset_index(drop=True), _shown(path)
    from bench.micro.codec_bench import measure_codecs

    rows = [r for r in measure_codecs("notebook", repeat, 0.002) if r["is_ours"]]
    return pd.DataFrame(rows)[cols], f"timed now ({repeat} repeats of ~2 ms each)"


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (for text in notebooks)."""
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def latency_histograms(run_dir: str | Path, name: str = "ack") -> pd.DataFrame:
    """The ``name`` HdrHistograms (``ack``, ``deliver``, …) of a measured run's points
    (``points/*/chat.json``), merged over replications per (codec, offered load): one row
    per non-empty bucket, ``value_ms`` and ``count``. Empty when there are none."""
    from bench._support.histo import LatencyHistogram

    path = resolve(run_dir)
    names = {p["point"]: p for p in read_manifest(path).get("points", [])}
    merged: dict[tuple[str, float], LatencyHistogram] = {}
    for doc_path in sorted(path.glob("points/*/chat.json")):
        point = names.get(doc_path.parent.name)
        if point is None:
            continue
        doc = json.loads(doc_path.read_text())
        for codec, text in doc.get("histograms", {}).get(name, {}).items():
            key = (codec, float(point["offered_per_s"]))
            merged.setdefault(key, LatencyHistogram()).merge(LatencyHistogram.decode(text))
    records = [
        {"codec": codec, "offered_per_s": load, "value_ms": us / 1000.0, "count": count}
        for (codec, load), hist in sorted(merged.items())
        for us, count in hist.buckets()
    ]
    return pd.DataFrame.from_records(
        records, columns=["codec", "offered_per_s", "value_ms", "count"]
    )


# ---------------------------------------------------------------------------- words
# The sentences the notebooks print: computed from the numbers, so that a test sees them.


def trim_grid(grid: Mapping[str, Sequence[Any]], quick: bool) -> dict[str, list[Any]]:
    """The grid as lists; with ``quick`` only the first value of each axis."""
    return {k: list(v)[:1] if quick else list(v) for k, v in grid.items()}


def knee_table(knees: pd.DataFrame, slo: SLO) -> pd.DataFrame:
    """The knee sweep as a table: per config and user count, offered load per core, the
    SLO metrics' p99 (mean and 95 % CI) and error rate, and whether the SLO holds."""
    cols = ["config", "users", "users_per_core", "offered_per_core_per_s"]
    for metric in (*slo.metrics, "error_rate"):
        cols += [f"{metric}_mean", f"{metric}_ci95"]
    out = knees[cols].copy()
    out["meets_slo"] = [not slo.misses(r) for r in knees.to_dict("records")]
    return out


def capacity_answer(
    table: pd.DataFrame, caps: Mapping[str, Capacity], target_users: int, sizes: Sizes
) -> str:
    """Markdown: the capacity as one number (the best config of the grid), what the
    target needs, and how the number was found."""
    best = caps[str(table.loc[0, "config"])]
    if best.users == 0:
        return (
            f"**No configuration meets the SLO** ({best.slo.describe()}) even with one room "
            "of users: relax the SLO or change the server."
        )
    cores = cores_needed(target_users, best)
    others = "; ".join(
        f"{r.config}: {r.users_per_core:,.0f}" for r in table.iloc[1:].itertuples(index=False)
    )
    lines = [
        f"**Capacity: {best.users_per_core:,.0f} users per core** with "
        f"`{table.loc[0, 'config']}` — the most users for which the model keeps "
        f"{best.slo.describe()}.",
        f"- The target of {target_users:,} users needs **{cores} core(s)** at that figure.",
        "- *Per core* means per server process: the model runs one event loop per process, "
        "and a loop uses one core.",
        f"- Found by bisection over users ({len(best.trials)} model points, "
        f"{sizes.replications} replications of {sizes.duration_s:g} s each, judged on the "
        f"mean over replications; resolution {sizes.rel_tol:.0%}).",
    ]
    if others:
        lines.append(f"- Other configurations (users per core): {others}.")
    return "\n".join(lines)


def calibration_text(path: str | Path | None) -> str:
    """Which per-operation costs the model uses, in one line."""
    if not path:
        return (
            "The model uses its **built-in costs** (no calibration file): run "
            "`python -m bench calibrate` on this machine for figures that match it."
        )
    costs = load_costs(resolve(path))
    when = f", measured {costs.created_utc}" if costs.created_utc else ""
    return f"The model uses the calibration `{_shown(resolve(path))}` (host {costs.host}{when})."


def _breaker_story(ts: pd.DataFrame) -> str:
    first = ts[ts["replication"] == ts["replication"].min()].sort_values("t_s")
    opened = first[first["breaker_state"] >= 2]
    if opened.empty:
        return "The breaker never opened."
    t_open = float(opened["t_s"].iloc[0])
    closed = first[(first["t_s"] > float(opened["t_s"].iloc[-1])) & (first["breaker_state"] == 0)]
    shut = (
        f"closed again by t = {float(closed['t_s'].iloc[0]):g} s"
        if len(closed)
        else ("was still not closed at the end")
    )
    return f"The breaker opened by t = {t_open:g} s and {shut} (replication 0)."


def outage_text(
    ts: pd.DataFrame,
    windows: Sequence[tuple[float, float]],
    measured_dir: str | Path | None,
    measured: pd.DataFrame | None,
) -> str:
    """Markdown about the outage run: the breaker's course, the errors, the recovery,
    and plainly whether the measured overlay was run."""
    lines = [f"- {_breaker_story(ts)}"]
    if windows:
        start, end = windows[0]
        during = ts[(ts["t_s"] > start) & (ts["t_s"] <= end)]
        lines.append(
            f"- During the fault ({start:g}–{end:g} s) the model answers "
            f"{during['errors_per_s'].mean():,.0f} errors/s and acks "
            f"{during['acked_per_s'].mean():,.0f}/s (mean over replications)."
        )
        rec = [recovery_s(g, end) for _, g in ts.groupby("replication")]
        mean_rec = float(np.nanmean(rec)) if not all(math.isnan(r) for r in rec) else math.nan
        lines.append(
            f"- Goodput is back to 90 % of the offered load {mean_rec:.1f} s after the fault ends."
            if math.isfinite(mean_rec)
            else "- Goodput does not get back to 90 % of the offered load within the run."
        )
    if measured_dir is None:
        lines.append(
            "- **The measured overlay was not run**: `measured_outage_dir` is None. Measure "
            "the server with the fault injected (`python -m bench run --scenario "
            "scenarios/store-outage.toml …`) and pass that run folder to overlay it."
        )
    elif measured is None or measured.empty:
        lines.append(
            f"- **The measured overlay is empty**: `{measured_dir}` has no `points/*/samples.csv`."
        )
    else:
        lines.append(
            f"- Measured overlay: {measured['point'].nunique()} point(s) from `{measured_dir}` — "
            "the server's goodput from its `/metrics` scrapes, time counted from the first "
            "in-run scrape (the server's fault clock starts a little earlier, at its start)."
        )
    return "\n".join(lines)


def storm_text(summary: pd.DataFrame) -> str:
    """Markdown comparing the retry-storm variants (:func:`retry_summary`)."""
    by = summary.set_index("variant")
    base = by["goodput_per_s"].get("as configured")
    lines = []
    for name, r in by.iterrows():
        rec = (
            f"recovers {r['recovery_s']:.1f} s after the spike"
            if math.isfinite(r["recovery_s"])
            else "does not recover within the run"
        )
        same = name != "as configured" and base and abs(r["goodput_per_s"] / base - 1) < 0.05
        lines.append(
            f"- **{name}**: goodput {r['goodput_per_s']:,.0f}/s, {r['attempts_per_msg']:.2f} "
            f"attempts per message, error rate {r['error_rate']:.1%}; {rec}"
            + (" — no better than as configured: alone, this fix does not break the storm."
               if same else ".")
        )  # fmt: skip
    fixes = by.drop(index=["as configured", "all fixes"], errors="ignore")
    if len(fixes):
        best = str(fixes["goodput_per_s"].idxmax())
        lines.append(f"- The single fix that keeps the most goodput: **{best}**.")
    return "\n".join(lines)


def measured_text(run_dir: str | Path, measured: pd.DataFrame) -> str:
    """One paragraph on a measured run: codecs, loads, replications, generator-bound."""
    loads = sorted(set(measured["offered_per_s"].astype(float)))
    codecs = ", ".join(sorted(set(measured["codec"].astype(str))))
    reps = int(measured["n"].max()) if len(measured) else 0
    text = (
        f"Measured run `{_shown(resolve(run_dir))}`: {codecs} at {len(loads)} offered load(s) "
        f"({', '.join(f'{x:g}' for x in loads)} sends/s), up to {reps} replication(s) each."
    )
    bound = int(measured["generator_bound"].eq(True).sum())
    if bound:
        text += f" {bound} point(s) are generator-bound: shown with ×, not judged."
    if len(loads) < 4:
        text += f" **Only {len(loads)} load(s)**: at least 4 are needed to see the curve bend."
    return text


def overlay_plan(joined: pd.DataFrame) -> list[tuple[str, str, str, bool]]:
    """The overlay plots to draw, in order: (measured column, model column, title, log y)
    — the server's own ack latency first when measured, then the generator's, then
    goodput against offered load."""
    plan = []
    for side, prefix in (("server side", "server_"), ("client side", "")):
        for q in ("p50", "p99"):
            if has_measured(joined, f"{prefix}ack_{q}_ms"):
                plan.append((f"{prefix}ack_{q}_ms", f"ack_{q}_ms", f"ack {q} ({side})", True))
    plan.append(("acked_per_s", "acked_per_s", "acked/s against offered/s", False))
    return plan


def codec_capacity_text(table: pd.DataFrame, slo: SLO) -> str:
    """Markdown: users per core per codec at the SLO, and the ratio between them."""
    by = table.set_index("config")["users_per_core"]
    parts = [
        f"{config.removeprefix('codec=')}: **{users:,.0f}** users per core"
        for config, users in by.items()
    ]
    text = f"At {slo.describe()}: " + "; ".join(parts) + "."
    json_users, pb_users = by.get("codec=json"), by.get("codec=protobuf")
    if json_users and pb_users:
        text += (
            f" Protobuf carries {pb_users / json_users - 1:+.0%} users per core relative to JSON."
        )
    return text


# ---------------------------------------------------------------------------- plots

COLORS = {"json": "tab:blue", "protobuf": "tab:orange", "mix": "tab:green"}


def _figure(rows: int = 1, cols: int = 1, **kw: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=kw.pop("figsize", (8, 4.5)), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def _color(name: str, i: int) -> str:
    return COLORS.get(name, f"C{i % 10}")


def plot_knee(
    agg: pd.DataFrame,
    slo: SLO,
    *,
    x: str = "offered_per_core_per_s",
    by: str = "config",
    target: float | None = None,
) -> Figure:
    """p99 of each SLO metric against offered load (mean ± 95 % CI), one line per
    ``by`` group, the SLO as a line and ``target`` (same unit as ``x``) as a mark."""
    fig, axes = _figure(1, len(slo.metrics), figsize=(5 * len(slo.metrics), 4.2), sharey=True)
    for ax, metric in zip(axes[0], slo.metrics, strict=True):
        for i, (name, g) in enumerate(agg.groupby(by, sort=False)):
            g = g.sort_values(x)
            ax.errorbar(
                g[x], g[f"{metric}_mean"], yerr=g[f"{metric}_ci95"].fillna(0.0),
                marker="o", capsize=3, color=f"C{i}", label=str(name),
            )  # fmt: skip
        ax.axhline(slo.p99_ms, color="crimson", ls="--", lw=1, label=f"SLO {slo.p99_ms:g} ms")
        if target is not None:
            ax.axvline(target, color="grey", ls=":", lw=1, label="target load")
        ax.set_yscale("log")
        ax.set_xlabel(x.replace("_per_s", " (/s)").replace("_", " "))
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ms (log)")
    axes[0][-1].legend(fontsize=8)
    return fig


UNITS = (
    ("_us_per_msg", "µs per message"),
    ("_per_s", "per second"),
    ("_ms", "ms"),
    ("_rate", "share"),
)


def axis_label(column: str) -> str:
    """``server_ack_p99_ms`` → ``server ack p99 (ms)``: words and the unit in brackets."""
    for suffix, unit in UNITS:
        if column.endswith(suffix):
            return f"{column.removesuffix(suffix).replace('_', ' ')} ({unit})"
    return column.replace("_", " ")


def plot_overlay(
    joined: pd.DataFrame,
    measured: str,
    predicted: str | None = None,
    *,
    title: str | None = None,
    logy: bool = False,
    diagonal: bool = False,
) -> Figure:
    """Measured (markers, 95 % CI bars) and predicted (line, 95 % CI band) ``measured``
    against offered load, per codec; ``diagonal`` draws y = offered (throughput)."""
    predicted = predicted or measured
    fig, axes = _figure(figsize=(7, 4.2))
    ax: Axes = axes[0][0]
    bound_labelled = False
    for i, (codec, g) in enumerate(joined.groupby("codec", sort=True)):
        c = _color(str(codec), i)
        x = g["offered_per_s"]
        ym, yp = g[f"{measured}_mean_measured"], g[f"{predicted}_mean_predicted"]
        em = g.get(f"{measured}_ci95_measured", pd.Series(0.0, index=g.index)).fillna(0.0)
        ep = g.get(f"{predicted}_ci95_predicted", pd.Series(0.0, index=g.index)).fillna(0.0)
        ax.errorbar(x, ym, yerr=em, fmt="o", color=c, capsize=3, label=f"{codec} measured")
        ax.plot(x, yp, "-", color=c, label=f"{codec} model")
        low = (yp - ep).clip(lower=yp * 0.05) if logy else yp - ep  # a log axis has no 0
        ax.fill_between(x, low, yp + ep, color=c, alpha=0.2, lw=0)
        bound = g.get("generator_bound_measured", pd.Series(False, index=g.index)).eq(True)
        if bool(bound.any()):
            label = None if bound_labelled else "generator-bound"
            ax.plot(x[bound], ym[bound], "x", color="k", ms=9, label=label)
            bound_labelled = True
    if diagonal:
        lim = float(joined["offered_per_s"].max())
        ax.plot([0, lim], [0, lim], ":", color="grey", lw=1, label="= offered")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("offered load (sends/s)")
    ax.set_ylabel(axis_label(measured))
    ax.set_title(title or f"{measured}: measured vs model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_generator_gap(joined: pd.DataFrame) -> Figure:
    """Client-side minus server-side ack latency (p50 and p99) per codec and load: what
    the load generator and the network add on top of the server."""
    fig, axes = _figure(figsize=(7, 4))
    ax: Axes = axes[0][0]
    for i, (codec, g) in enumerate(joined.groupby("codec", sort=True)):
        c = _color(str(codec), i)
        for q, style in (("p50", "o-"), ("p99", "s--")):
            gap = g[f"ack_{q}_ms_mean_measured"] - g[f"server_ack_{q}_ms_mean_measured"]
            ax.plot(g["offered_per_s"], gap, style, color=c, label=f"{codec} {q}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("offered load (sends/s)")
    ax.set_ylabel("client − server ack latency (ms)")
    ax.set_title("What the load generator adds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _shade(ax: Axes, windows: Sequence[tuple[float, float]]) -> None:
    for i, (a, b) in enumerate(windows):
        ax.axvspan(a, b, color="crimson", alpha=0.08, label="fault episode" if i == 0 else None)


def plot_outage(
    bands: pd.DataFrame,
    windows: Sequence[tuple[float, float]],
    measured: pd.DataFrame | None = None,
) -> Figure:
    """Store outage in the model: breaker state (worst over processes; mean over
    replications), errors/s and goodput/s (mean ± 95 % CI) over time, the fault shaded;
    ``measured`` (:func:`measured_timeseries`) adds the server's goodput."""
    fig, axes = _figure(3, 1, figsize=(8, 7), sharex=True)
    state, errors, good = axes[0][0], axes[1][0], axes[2][0]
    t = bands["t_s"]
    state.step(t, bands["breaker_state_mean"], where="post", color="k")
    state.set_yticks([0, 1, 2], ["closed", "half-open", "open"])
    state.set_title("breaker state (model)")
    for ax, col, color in ((errors, "errors_per_s", "crimson"), (good, "acked_per_s", "tab:green")):
        m, e = bands[f"{col}_mean"], bands[f"{col}_ci95"]
        ax.plot(t, m, color=color, label=f"model {col.replace('_per_s', '')}/s")
        ax.fill_between(t, m - e, m + e, color=color, alpha=0.2, lw=0)
    good.plot(t, bands["offered_per_s_mean"], ":", color="grey", label="offered/s")
    if measured is not None and not measured.empty:
        many = measured["point"].nunique() > 4  # one legend entry, not one per point
        for i, (name, g) in enumerate(measured.groupby("point", sort=True)):
            label = ("measured (each point)" if i == 0 else None) if many else f"measured {name}"
            color = "k" if many else f"C{i}"
            good.plot(g["t_s"], g["acked_per_s"], "--", color=color, lw=0.8, label=label)
    for ax in (state, errors, good):
        _shade(ax, windows)
        ax.grid(alpha=0.3)
    errors.set_ylabel("errors/s")
    good.set_ylabel("acked/s")
    good.set_xlabel("time since run start (s)")
    errors.legend(fontsize=8)
    good.legend(fontsize=8)
    return fig


def plot_retry_storm(bands: pd.DataFrame, windows: Sequence[tuple[float, float]]) -> Figure:
    """Goodput and send attempts per second over time for each variant (model, mean over
    replications), the fault episode shaded: the storm is attempts far above goodput."""
    fig, axes = _figure(2, 1, figsize=(8, 6.5), sharex=True)
    good, sent = axes[0][0], axes[1][0]
    for i, (name, g) in enumerate(bands.groupby("variant", sort=False)):
        good.plot(g["t_s"], g["acked_per_s_mean"], color=f"C{i}", label=str(name))
        sent.plot(g["t_s"], g["sent_per_s_mean"], color=f"C{i}", label=str(name))
    good.set_ylabel("acked/s (goodput)")
    sent.set_ylabel("send attempts/s")
    sent.set_xlabel("time since run start (s)")
    for ax in (good, sent):
        _shade(ax, windows)
        ax.grid(alpha=0.3)
    good.legend(fontsize=8)
    return fig


def _bars(ax: Axes, frame: pd.DataFrame, group: str, value: str, by: str = "codec") -> None:
    groups = list(dict.fromkeys(frame[group]))
    series = list(dict.fromkeys(frame[by]))
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        sub = frame[frame[by] == name].set_index(group).reindex(groups)
        xs = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        bars = ax.bar(xs, sub[value], width, color=_color(str(name), i), label=str(name))
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(np.arange(len(groups)), [str(g) for g in groups])
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_sizes(sizes: pd.DataFrame, deliver: pd.DataFrame) -> Figure:
    """Bytes per envelope per codec, and a Deliver's bytes against its body size."""
    fig, axes = _figure(1, 2, figsize=(10, 4))
    _bars(axes[0][0], sizes, "envelope", "bytes")
    axes[0][0].set_yscale("log")
    axes[0][0].set_ylabel("bytes (log)")
    axes[0][0].set_title("encoded envelope size")
    ax = axes[0][1]
    for i, (codec, g) in enumerate(deliver.groupby("codec", sort=True)):
        ax.plot(g["body_bytes"], g["bytes"] - g["body_bytes"], "o-", color=_color(str(codec), i),
                label=str(codec))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("body bytes (log)")
    ax.set_ylabel("frame bytes − body bytes")
    ax.set_title("Deliver overhead per message")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_codec_cpu(costs: pd.DataFrame) -> Figure:
    """ns per encode and per decode, per envelope and codec (log scale)."""
    frame = costs.rename(columns={"format": "codec"})
    fig, axes = _figure(1, 2, figsize=(10, 4), sharey=True)
    for ax, col in zip(axes[0], ("encode_ns", "decode_ns"), strict=True):
        _bars(ax, frame, "envelope", col)
        ax.set_yscale("log")
        ax.set_title(col.replace("_ns", " (ns per op)"))
    axes[0][0].set_ylabel("ns (log)")
    return fig


def plot_latency_ccdf(hist: pd.DataFrame, title: str) -> Figure:
    """1 − CDF of latency per codec and offered load (log–log: the tail is visible)."""
    fig, axes = _figure(figsize=(7, 4.2))
    ax: Axes = axes[0][0]
    for i, ((codec, load), g) in enumerate(hist.groupby(["codec", "offered_per_s"], sort=True)):
        g = g.sort_values("value_ms")
        tail = 1.0 - g["count"].cumsum() / g["count"].sum()
        keep = tail > 0
        ax.plot(g["value_ms"][keep], tail[keep], color=_color(str(codec), 0),
                alpha=0.4 + 0.6 * (i % 4) / 3, label=f"{codec} @ {load:g}/s")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency (ms, log)")
    ax.set_ylabel("share slower (log)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def plot_by_codec(agg: pd.DataFrame, metrics: Sequence[str], ylabel: str, title: str) -> Figure:
    """Each metric's mean (± 95 % CI) against offered load, one line per codec."""
    fig, axes = _figure(figsize=(7, 4.2))
    ax: Axes = axes[0][0]
    styles = ["o-", "s--", "^:", "d-."]
    for i, (codec, g) in enumerate(agg.groupby("codec", sort=True)):
        for j, metric in enumerate(metrics):
            if f"{metric}_mean" not in g or not g[f"{metric}_mean"].notna().any():
                continue
            ax.errorbar(
                g["offered_per_s"], g[f"{metric}_mean"], yerr=g[f"{metric}_ci95"].fillna(0.0),
                fmt=styles[j % 4], color=_color(str(codec), i), capsize=3,
                label=f"{codec} {metric}",
            )  # fmt: skip
    ax.set_xlabel("offered load (sends/s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def latency_figures(run_dir: str | Path, measured: pd.DataFrame) -> tuple[str, list[Figure]]:
    """The latency distributions of a measured run per codec: 1 − CDF plots of ack and
    delivery latency from the points' histograms when there are any, else the summary's
    p50 and p99 against load; with a sentence that says which."""
    figs = []
    for name in ("ack", "deliver"):
        hist = latency_histograms(run_dir, name)
        if len(hist):
            figs.append(plot_latency_ccdf(hist, f"{name} latency (client side, every point)"))
    if figs:
        return "Latency distributions from the points' HdrHistograms (`chat.json`).", figs
    figs = [
        plot_by_codec(measured, ["ack_p50_ms", "ack_p99_ms"], "ms", "Ack latency"),
        plot_by_codec(measured, ["deliver_p50_ms", "deliver_p99_ms"], "ms", "Delivery latency"),
    ]
    return "No histograms in `points/*/chat.json`: the summary's percentiles instead.", figs


def with_calibration(scenario: Scenario, calibration: str | Path | None) -> Scenario:
    """``scenario`` costed by ``calibration``: None keeps what the scenario names, ``""``
    the model's built-in costs, a path that file (relative to the repository root)."""
    if calibration is None:
        return scenario
    value = str(resolve(calibration)) if str(calibration) else ""
    return scenario.with_overrides({"sim.calibration": value})


def load_scenario_file(path: str | Path) -> Scenario:
    """``chatcap.scenario.load_scenario`` with the path taken from the repository root."""
    return load_scenario(resolve(path))
