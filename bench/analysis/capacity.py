"""Capacity in the model: :class:`SLO` (defined with the measured search in
:mod:`bench.run.search`, so both judge by one rule), :func:`bisect_max`,
:func:`capacity_users_per_core`, :func:`capacity_table` (one search per grid
combination), :func:`knee_sweep`, :func:`cores_needed`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.analysis.model import sweep_users
from bench.run.search import SLO as SLO  # re-exported: an.SLO
from chatcap.scenario import CODEC_MIX, Scenario


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
    if codec is not None and codec != CODEC_MIX:
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
