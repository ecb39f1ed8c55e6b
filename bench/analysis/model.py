"""Asking the model: run sizes, executors, scenario overrides, replications.

:func:`sizes` (:data:`QUICK` or :data:`FULL` run sizes), :func:`make_executor`,
:func:`workload_overrides` (a load → users, rooms, codec), :func:`run_points` (any list of
scenario overrides × replications on an executor), :func:`predict_measured` (the model at
a measured run's loads), :func:`sweep_users`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pandas as pd

from bench.analysis.loading import _manifest_scenario, aggregate, measured_points
from bench.analysis.paths import resolve
from chatcap.results import read_manifest
from chatcap.scenario import CODEC_MIX, Scenario
from sim.api import replication_seed, run_task
from sim.calibration import Costs, load_costs

P = ParamSpec("P")
T = TypeVar("T")


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
    if codec is not None and codec != CODEC_MIX:
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
    return rows[(counts == 1) | (rows["codec"] == CODEC_MIX)].reset_index(drop=True)


def _cpu_ids(text: Any) -> set[int]:
    """``"0"``, ``"0-3"``, ``"1,3,5-7"`` → CPU ids (empty for anything else)."""
    out: set[int] = set()
    for item in str(text or "").split(","):
        low, dash, high = item.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            return set()
        out.update(range(first, last + 1))
    return out


def competing_share(
    generator_cores: float, overlap: float, server_cores: int, processes: int
) -> float:
    """The share of each server process's CPU that a co-located generator takes
    (``[sim] competing_cpu_share``): the generator's CPU (in cores) times the part of its
    CPUs the server's set holds (``overlap``, 0 … 1) lands on the server's
    ``server_cores``; each of the ``processes`` gets at most one core of what is left.
    0 when what is left holds a core per process. Pure."""
    if server_cores < 1 or processes < 1:
        raise ValueError(f"server_cores {server_cores}, processes {processes}: must be ≥ 1")
    left = server_cores - max(0.0, generator_cores) * min(max(overlap, 0.0), 1.0)
    speed = min(1.0, max(left, 0.0) / processes)
    return min(0.95, 1.0 - speed)


def point_competing_share(point: Mapping[str, Any], processes: int) -> float:
    """:func:`competing_share` of one measured point (its ``point.json``): 0 when the
    server and the generator ran on CPU sets apart; else from the generator processes'
    CPU in the window and the CPU sets each was allowed."""
    cpus = point.get("cpus") or {}
    if cpus.get("isolated", True):
        return 0.0
    server = _cpu_ids(cpus.get("server_cpus_allowed") or cpus.get("server_cpus"))
    window = point.get("window") or {}
    per_pid = window.get("generator_cpu_pct") or {}
    allowed = cpus.get("generator_cpus_allowed") or {}
    if not server or not per_pid:
        return 0.0
    on_server = 0.0  # cores' worth of generator CPU on the server's set
    for pid, pct in per_pid.items():
        gen = _cpu_ids(allowed.get(str(pid)) if isinstance(allowed, dict) else allowed)
        gen = gen or _cpu_ids(cpus.get("generator_cpus"))
        if gen and pct == pct:  # not NaN
            on_server += float(pct) / 100.0 * len(gen & server) / len(gen)
    return competing_share(on_server, 1.0, len(server), processes)


def competing_shares(run_dir: str | Path) -> dict[tuple[str, float], float]:
    """Per (codec, offered load) of a measured run, the median
    :func:`point_competing_share` over its repeats (none when no ``point.json``)."""
    path = resolve(run_dir)
    manifest = read_manifest(path)
    processes = _manifest_scenario(manifest, path).server.processes
    found: dict[tuple[str, float], list[float]] = {}
    for file in sorted((path / "points").glob("*/point.json")):
        try:
            point = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        key = (str(point.get("codec")), float(point.get("offered_per_s", math.nan)))
        found.setdefault(key, []).append(point_competing_share(point, processes))
    return {k: statistics.median(v) for k, v in found.items()}


def store_overrides(costs: Costs) -> dict[str, float]:
    """The model's store mean as a calibration measured it: ``sim.store_service_ms`` from
    the server's own commit of one row where the file has it, else the isolated one (an
    older file); ``sim.store_per_msg_ms`` the isolated per-row slope."""
    if costs.store_commit_in_server_fixed_ms > 0:
        return {
            "sim.store_service_ms": costs.store_commit_in_server_fixed_ms,
            "sim.store_per_msg_ms": costs.store_commit_per_msg_ms,
        }
    return {
        "sim.store_service_ms": costs.store_commit_fixed_ms,
        "sim.store_per_msg_ms": costs.store_commit_per_msg_ms,
    }


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
    duration and warm-up (unless given), its ``/metrics`` scrape interval
    (``sim.scrape_interval_s`` from the manifest's ``sample_s``), costs from
    ``calibration`` (None: the model's built-in defaults) — its store commit figures
    too (``sim.store_service_ms`` and ``sim.store_per_msg_ms``: the batch-of-one mean and
    the per-message slope of the server's own commits where the file has them, else of
    the isolated ones). Where the server and the generator shared CPUs (the run's
    ``isolated`` false) the generator's CPU on the server's cores, measured per point, is
    a competing load (``sim.competing_cpu_share``, :func:`competing_shares`); apart,
    none. Rows carry the measured ``offered_per_s`` exactly (for :func:`join`) and
    ``source = "sim"``."""
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
    if manifest.get("sample_s"):  # the run scraped /metrics this often: the model too
        overrides["sim.scrape_interval_s"] = float(manifest["sample_s"])
    if calibration:  # the store's mean as measured too, not the scenario's planning figure
        costs = load_costs(resolve(calibration))
        overrides.update(store_overrides(costs))
    base = scenario.with_overrides(overrides)
    shares = competing_shares(path)  # a generator on the server's cores: its CPU competes
    points: list[Point] = []
    for p in measured_points(path).itertuples(index=False):
        overrides = workload_overrides(
            base, int(p.users), send_rate_per_user_per_s=float(p.send_rate_per_user_per_s),
            codec=str(p.codec),
        )  # fmt: skip
        share = shares.get((str(p.codec), float(p.offered_per_s)), 0.0)
        if share > 0:
            overrides = {**overrides, "sim.competing_cpu_share": round(share, 4)}
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
