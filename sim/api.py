"""The model's Python API: one run, and sweeps with replications.

* :func:`run` — one replication of a scenario → :class:`SimResult` (pandas frames and
  results-schema summary rows);
* :func:`sweep_runs` — a cartesian grid over dotted scenario keys × replications, run
  on an executor → one summary row per (point, codec, replication);
* :func:`summarize_runs` — those rows → per point and codec the mean and 95 %
  confidence half-width (Student t) of every numeric column;
* :func:`sweep` — both at once (what most callers want).

Seeds: a run is reproducible from its scenario and seed. Replication ``r`` of a sweep
uses :func:`replication_seed` ``(root, r)``, the same at every point of the grid
(common random numbers: two points differ by their settings, not by their luck), and
its summary rows carry that seed, so ``run(point_scenario, seed=row["seed"])``
reproduces a row.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats  # type: ignore[import-untyped]

from chatcap.scenario import Scenario, load_scenario_data
from sim import stats
from sim.calibration import DEFAULT_COSTS, Costs, load_costs
from sim.model import STAGES, RawRun, simulate
from sim.parts import TraceEntry
from sim.workload import Layout, load_replay

__all__ = [
    "SimResult",
    "replication_seed",
    "run",
    "summarize_runs",
    "sweep",
    "sweep_runs",
]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SimResult:
    """One simulated replication.

    Attributes:
        scenario: the scenario as run (``duration_s`` override applied).
        seed: the seed it ran with.
        requests: one row per send attempt (``chatcap.results.REQUEST_COLUMNS``).
        deliveries: one row per (message, process, receiving codec); see ``sim.stats``.
        timeseries: one row per ``sim.timeseries_interval_s`` (warm-up included).
        events: SimPy events the run processed (a measure of the model's own cost).
        layout: each user's codec and rooms, each room's members.
        trace: the policy calls, when ``run(..., trace=[])`` asked for them.
    """

    scenario: Scenario
    seed: int
    requests: pd.DataFrame
    deliveries: pd.DataFrame
    timeseries: pd.DataFrame
    events: int
    cpu_window_s: float
    cpu_by_codec_s: tuple[float, ...]
    users_by_codec: tuple[int, ...]
    open_loop: bool
    layout: Layout
    trace: list[TraceEntry] | None = None
    stage_s: tuple[float, ...] = ()
    stage_n: tuple[int, ...] = ()

    def stage_means_ms(self) -> dict[str, float]:
        """The mean time of each server stage of a Send (``sim.model.STAGES``) over the
        messages committed in the measured window, ms (NaN where none was)."""
        return {
            name: (self.stage_s[i] / self.stage_n[i] * 1000.0 if self.stage_n[i] else math.nan)
            for i, name in enumerate(STAGES)
            if i < len(self.stage_n)
        }

    def summary(self, run_id: str = "", replication: int = 0) -> list[dict[str, Any]]:
        """Rows for ``summary.csv`` (``source = "sim"``), warm-up cut: ``mix`` and one
        per codec when users have both codecs, else one row."""
        return stats.summary_rows(
            self.scenario,
            self.seed,
            self.requests,
            self.deliveries,
            self.cpu_window_s,
            list(self.cpu_by_codec_s),
            list(self.users_by_codec),
            run_id=run_id,
            replication=replication,
            open_loop=self.open_loop,
            stage_means_ms=self.stage_means_ms() if self.stage_n else None,
        )

    def delivery_quantiles(self, qs: Sequence[float], codec: str | None = None) -> list[float]:
        """Quantiles (in [0, 1]) of delivery latency in ms over the measured window,
        for every recipient (or those using ``codec``)."""
        d = self.deliveries
        w = self.scenario.workload
        keep = (d["t_first_s"] >= w.warmup_s) & (d["t_first_s"] < w.duration_s)
        if codec is not None:
            keep &= d["codec"] == codec
        step_ms = float(d["step_ms"].iloc[0]) if len(d) else 0.0
        return stats.delivery_quantiles(
            d["first_ms"].to_numpy()[keep], d["count"].to_numpy()[keep], step_ms, list(qs)
        )


def replication_seed(root: int, replication: int) -> int:
    """The seed of replication ``replication`` under root seed ``root`` (63 bits)."""
    state = np.random.SeedSequence(root, spawn_key=(replication,)).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def run(
    scenario: Scenario,
    seed: int | None = None,
    *,
    replay: str | Path | pd.DataFrame | None = None,
    duration_s: float | None = None,
    replication: int = 0,
    costs: Costs | None = None,
    trace: list[TraceEntry] | None = None,
) -> SimResult:
    """Simulate one replication of ``scenario``.

    ``seed`` None uses ``scenario.seed``. ``replay``: a ``requests.csv`` (or DataFrame)
    whose first attempts replace the scenario's arrivals. ``duration_s`` overrides
    ``workload.duration_s``. ``costs`` overrides the calibration named by
    ``sim.calibration``. ``trace``: a list that receives every limiter and breaker call
    (for tests). Raises ``ScenarioError``, ``CalibrationError``, ``ReplayError`` or
    ``ModelError`` (all ``ValueError``) for bad input.
    """
    if duration_s is not None:
        scenario = scenario.with_overrides({"workload.duration_s": duration_s})
    seed = scenario.seed if seed is None else seed
    if costs is None:
        path = scenario.sim.calibration
        costs = load_costs(path) if path else DEFAULT_COSTS
    log = load_replay(replay, scenario.workload) if replay is not None else None
    with _no_cyclic_gc():
        raw = simulate(scenario, seed, costs, replay=log, trace=trace)
        return _result(raw, replication, open_loop=log is None and _open_loop(scenario))


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector for the run. The model allocates
    millions of small objects that live until the end; the collector would rescan
    them again and again (about 40 % of the run time) and find nothing to free."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _open_loop(scenario: Scenario) -> bool:
    return scenario.workload.arrival in ("poisson", "constant")


def _result(raw: RawRun, replication: int, open_loop: bool) -> SimResult:
    offered = raw.offered_per_s
    requests = stats.requests_frame(raw.attempts, offered, replication)
    if not open_loop:  # the offered load is what the users actually sent
        w = raw.scenario.workload
        sent = requests["sent_s"]
        first = (requests["attempt"] == 1) & (sent >= w.warmup_s) & (sent < w.duration_s)
        requests["offered_per_s"] = float(first.sum()) / (w.duration_s - w.warmup_s)
    deliveries = stats.deliveries_frame(raw.deliveries, raw.step_s)
    timeseries = stats.timeseries_frame(
        raw.samples, requests, deliveries, raw.scenario.sim.timeseries_interval_s
    )
    return SimResult(
        scenario=raw.scenario,
        seed=raw.seed,
        requests=requests,
        deliveries=deliveries,
        timeseries=timeseries,
        events=raw.events,
        cpu_window_s=raw.cpu_window_s,
        cpu_by_codec_s=tuple(raw.cpu_by_codec_s),
        users_by_codec=tuple(raw.users_by_codec),
        open_loop=open_loop,
        layout=raw.layout,
        trace=raw.trace,
        stage_s=tuple(raw.stage_s),
        stage_n=tuple(raw.stage_n),
    )


# ---------------------------------------------------------------------------- sweeps


def run_task(
    scenario_data: dict[str, Any], seed: int, replication: int, keep_frames: bool = False
) -> dict[str, Any]:
    """One (point, replication) of a sweep, from plain data to plain data.

    A top-level function of picklable arguments, so any ``concurrent.futures``
    executor can run it in another process or on another machine. Returns the summary
    rows, and the requests and time series frames when ``keep_frames``.
    """
    scenario = load_scenario_data(scenario_data, source="<sweep point>")
    result = run(scenario, seed, replication=replication)
    out: dict[str, Any] = {"rows": result.summary(replication=replication)}
    if keep_frames:
        out["requests"] = result.requests
        out["timeseries"] = result.timeseries
    return out


def grid_points(scenario: Scenario, grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``grid`` as override dicts (each validated), in order:
    the last key varies fastest. An empty grid is the one point ``{}``."""
    keys = list(grid)
    points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    for point in points:
        scenario.with_overrides(point)  # fail early, before anything runs
    return points


def sweep_runs(
    scenario: Scenario,
    grid: Mapping[str, Sequence[Any]],
    replications: int | None = None,
    executor: Executor | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Run every point of ``grid`` (dotted scenario keys → values) × replications.

    Returns one row per (point, codec, replication): the summary columns plus one
    column per grid key. ``replications`` None = ``scenario.sim.replications``.
    ``executor``: any ``concurrent.futures.Executor`` — e.g. dask.distributed's
    ``Client.get_executor()`` works unchanged, since every task is the top-level
    :func:`run_task` on plain data (scenario dict, seed); None = a local
    ``ProcessPoolExecutor(max_workers=os.cpu_count())`` (a single task runs inline).
    ``progress(done, total)`` is called as tasks finish.
    """
    outputs = run_grid(scenario, grid, replications, executor, seed, progress)
    return _rows_frame([(point, out) for point, _, out in outputs], list(grid))


def run_grid(
    scenario: Scenario,
    grid: Mapping[str, Sequence[Any]],
    replications: int | None = None,
    executor: Executor | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    keep_frames: Callable[[int, int], bool] | None = None,
) -> list[tuple[dict[str, Any], int, dict[str, Any]]]:
    """The engine of :func:`sweep_runs`: ``(point, replication, task output)`` in grid
    order; ``keep_frames(point_index, replication)`` says which tasks return frames."""
    reps = scenario.sim.replications if replications is None else replications
    if reps < 1:
        raise ValueError(f"replications must be ≥ 1, got {reps}")
    root = scenario.seed if seed is None else seed
    points = grid_points(scenario, grid)
    tasks = [
        (
            scenario.with_overrides(point).to_dict(),
            replication_seed(root, r),
            r,
            bool(keep_frames and keep_frames(i, r)),
        )
        for i, point in enumerate(points)
        for r in range(reps)
    ]
    outputs = _execute(tasks, executor, progress)
    return [(points[k // reps], k % reps, out) for k, out in enumerate(outputs)]


def _execute(
    tasks: list[tuple[Any, ...]], executor: Executor | None, progress: Progress | None
) -> list[dict[str, Any]]:
    total = len(tasks)
    if executor is None and total == 1:
        out = run_task(*tasks[0])
        if progress is not None:
            progress(1, 1)
        return [out]
    own = executor is None
    pool = ProcessPoolExecutor(max_workers=os.cpu_count()) if own else executor
    assert pool is not None
    try:
        futures: list[Future[dict[str, Any]]] = [pool.submit(run_task, *t) for t in tasks]
        if progress is not None:
            for done, _ in enumerate(as_completed(futures), start=1):
                progress(done, total)
        return [f.result() for f in futures]
    finally:
        if own:
            pool.shutdown(cancel_futures=True)


def _rows_frame(
    outputs: list[tuple[dict[str, Any], dict[str, Any]]], keys: list[str]
) -> pd.DataFrame:
    records = []
    for point, out in outputs:
        for row in out["rows"]:
            records.append({**{k: point[k] for k in keys}, **row})
    return pd.DataFrame.from_records(records)


def summarize_runs(runs: pd.DataFrame, keys: Sequence[str] = ()) -> pd.DataFrame:
    """Per (grid point, codec): ``n`` replications and, for every numeric summary
    column ``c``, ``c_mean`` and ``c_ci95`` (half-width of the 95 % confidence interval
    of the mean, Student t with n − 1 degrees of freedom; NaN for one replication)."""
    by = [*keys, "codec"]
    skip = {"replication", "seed", *keys}
    numeric = [
        c
        for c in runs.columns
        if c not in skip and pd.api.types.is_numeric_dtype(runs[c]) and runs[c].dtype != bool
    ]
    grouped = runs.groupby(by, sort=False, dropna=False)[numeric]
    mean = grouped.mean()
    n = grouped.count()
    sem = grouped.std(ddof=1) / np.sqrt(n)
    t = scipy_stats.t.ppf(0.975, np.maximum(n - 1, 1))
    half = pd.DataFrame(np.where(n > 1, sem * t, np.nan), index=sem.index, columns=numeric)
    out = pd.concat([mean.add_suffix("_mean"), half.add_suffix("_ci95")], axis=1)
    ordered = [f"{c}{s}" for c in numeric for s in ("_mean", "_ci95")]
    out = out[ordered]
    out.insert(0, "n", grouped.size())
    return out.reset_index()


def sweep(
    scenario: Scenario,
    grid: Mapping[str, Sequence[Any]],
    replications: int | None = None,
    executor: Executor | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """:func:`sweep_runs` summarised by :func:`summarize_runs`: one row per (point,
    codec) with ``<col>_mean`` and ``<col>_ci95``. For the replication rows
    themselves, call :func:`sweep_runs` and pass its frame to :func:`summarize_runs`."""
    runs = sweep_runs(scenario, grid, replications, executor, seed, progress)
    return summarize_runs(runs, list(grid))
