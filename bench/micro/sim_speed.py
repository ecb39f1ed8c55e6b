"""How fast the SimPy model is: simulated sends per second of wall time, beside a bare
SimPy model measured in the same run, and the wall time of a capacity-planning sweep.

``python -m bench sim-speed [--quick] [--out DIR] [--repeat N]``

=================  ==========================================================  ==============
case               what is timed                                               target
=================  ==========================================================  ==============
``model``          ``sim.run`` of ``scenarios/baseline.toml`` (200 users in     ≥ 50,000
                   20 rooms of 10, with limiter, breaker, batching and          sends/s
                   fan-out), run for 300 s of simulated time (30 s, the file's
                   own, with ``--quick``), in this process: one core. Sends =
                   every attempt simulated; the wall time covers building the
                   result frames too.
``bare_simpy``     :func:`bare_mmc`: the textbook SimPy M/M/c — one process     (reference)
                   per customer, a ``simpy.Resource`` of c = 8, ρ = 0.8,
                   exponential times — 200,000 customers (20,000 quick).
``model_vs_bare``  model sends/s ÷ bare customers/s, median of the repeats'     ≥ 1/3
                   ratios
``sweep``          ``sim.sweep`` of :data:`SWEEP_GRID` (40 points) × 5          < 60 s
                   replications on the default process pool (every CPU), on
                   baseline.toml with 160 rooms (fan-out stays 10 members up
                   to 1,600 users) and ``duration_s`` = 10 s (2 s warm-up):
                   200 runs, ~1.2 M sends. ``--quick`` times 8 points × 2
                   replications of 4 s instead (no verdict).
=================  ==========================================================  ==============

The model and the bare model alternate, ``--repeat`` times (5; 3 with ``--quick``), so
that drift on a shared machine hits both alike; figures are medians. The cyclic garbage
collector is paused in both (``sim.run`` pauses it itself). The bare model's mean wait
is compared with Erlang C as a check that it is the queue it claims to be.

Files, in ``DIR/<run-id>/``: ``manifest.json`` and ``speed.csv`` (:data:`SPEED_COLUMNS`).
The exit status is 0 whatever the verdicts (a benchmark reports; the regression gate
decides).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import random
import statistics
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import simpy

import sim
from chatcap.results import Column, new_manifest, new_run_id, write_manifest, write_table
from chatcap.scenario import Scenario, load_scenario
from sim.theory import mmc

BASELINE = Path(__file__).resolve().parents[2] / "scenarios" / "baseline.toml"
BASELINE_NAME = "scenarios/baseline.toml"
MODEL_DURATION_S = 300.0
BARE_CUSTOMERS = 200_000
BARE_SERVERS = 8
BARE_RHO = 0.8
SWEEP_OVERRIDES: dict[str, Any] = {
    "workload.rooms": 160,  # 1,600 memberships: rooms keep 10 members at every user count
    "workload.duration_s": 10.0,
    "workload.warmup_s": 2.0,
}
SWEEP_GRID: dict[str, list[Any]] = {
    "workload.users": [100, 200, 400, 800, 1600],
    "server.pool.size": [1, 2, 4, 8],
    "server.processes": [1, 2],
}
SWEEP_REPLICATIONS = 5
QUICK_SWEEP_OVERRIDES: dict[str, Any] = {**SWEEP_OVERRIDES, "workload.duration_s": 4.0}
QUICK_SWEEP_GRID: dict[str, list[Any]] = {
    "workload.users": [100, 200],
    "server.pool.size": [2, 4],
    "server.processes": [1, 2],
}
QUICK_SWEEP_REPLICATIONS = 2

TARGET_SENDS_PER_S = 50_000.0
TARGET_RATIO_VS_BARE = 1 / 3
TARGET_SWEEP_S = 60.0

SPEED_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier, same as the folder name."),
    Column("case", "str", "`model`, `bare_simpy`, `model_vs_bare` or `sweep`."),
    Column("metric", "str", "What `value` measures (see bench/micro/sim_speed.py)."),
    Column("value", "float", "The figure (median over repeats where repeated)."),
    Column("unit", "str", "Unit of `value`."),
    Column("target", "str", "The target, e.g. `>= 50000`; empty when there is none."),
    Column("verdict", "str", "`pass`, `fail`, or `info` (no target, or not the target's run)."),
)


# ---------------------------------------------------------------------------- the bare model


def bare_mmc(
    customers: int, servers: int = BARE_SERVERS, rho: float = BARE_RHO, seed: int = 1
) -> tuple[float, float]:
    """The textbook SimPy M/M/c (μ = 1): a process per customer and a ``Resource``.

    Returns (customers simulated per second of wall time, their mean wait)."""
    env = simpy.Environment()
    pool = simpy.Resource(env, capacity=servers)
    rng = random.Random(seed)
    arrival_rate = rho * servers
    waits: list[float] = []

    def customer() -> Generator[simpy.Event, Any, None]:
        arrived = env.now
        with pool.request() as request:
            yield request
            waits.append(env.now - arrived)
            yield env.timeout(rng.expovariate(1.0))

    def source() -> Generator[simpy.Event, Any, None]:
        for _ in range(customers):
            yield env.timeout(rng.expovariate(arrival_rate))
            env.process(customer())

    env.process(source())
    with _gc_paused():
        started = time.perf_counter()
        env.run()
        wall_s = time.perf_counter() - started
    return customers / wall_s, statistics.fmean(waits)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------------------- measurements


def model_sends_per_s(scenario: Scenario, duration_s: float) -> float:
    """One ``sim.run``: attempts simulated per second of wall time (frames included)."""
    started = time.perf_counter()
    result = sim.run(scenario, duration_s=duration_s)
    wall_s = time.perf_counter() - started
    return len(result.requests) / wall_s


def time_sweep(scenario: Scenario, grid: dict[str, list[Any]], replications: int) -> float:
    """Wall seconds of ``sim.sweep`` on the default process pool (every CPU)."""
    started = time.perf_counter()
    sim.sweep(scenario, grid, replications=replications)
    return time.perf_counter() - started


def _verdict(value: float, target: float, at_least: bool) -> str:
    ok = value >= target if at_least else value < target
    return "pass" if ok else "fail"


def measure(quick: bool, repeat: int, run_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every figure, as ``speed.csv`` rows, and the details for the manifest."""
    baseline = load_scenario(BASELINE)
    duration_s = baseline.workload.duration_s if quick else MODEL_DURATION_S
    customers = BARE_CUSTOMERS // 10 if quick else BARE_CUSTOMERS
    model_rates, bare_rates, bare_waits = [], [], []
    for i in range(repeat):
        model_rates.append(model_sends_per_s(baseline, duration_s))
        rate, wait = bare_mmc(customers, seed=i + 1)
        bare_rates.append(rate)
        bare_waits.append(wait)
        print(
            f"[sim-speed] repeat {i + 1}/{repeat}: model {model_rates[-1]:,.0f} sends/s, "
            f"bare SimPy {rate:,.0f} customers/s",
            flush=True,
        )
    model = statistics.median(model_rates)
    bare = statistics.median(bare_rates)
    theory_wait = mmc(BARE_RHO * BARE_SERVERS, 1.0, BARE_SERVERS).mean_wait_s
    wait_error = statistics.fmean(bare_waits) / theory_wait - 1.0

    grid = QUICK_SWEEP_GRID if quick else SWEEP_GRID
    reps = QUICK_SWEEP_REPLICATIONS if quick else SWEEP_REPLICATIONS
    overrides = QUICK_SWEEP_OVERRIDES if quick else SWEEP_OVERRIDES
    points = math.prod(len(values) for values in grid.values())
    print(f"[sim-speed] sweep: {points} points x {reps} replications ...", flush=True)
    sweep_s = time_sweep(baseline.with_overrides(overrides), grid, reps)

    def row(
        case: str, metric: str, value: float, unit: str, target: str, verdict: str
    ) -> dict[str, Any]:
        return dict(
            run_id=run_id, case=case, metric=metric, value=value, unit=unit,
            target=target, verdict=verdict,
        )  # fmt: skip

    ratio = statistics.median(m / b for m, b in zip(model_rates, bare_rates, strict=True))
    rows = [
        row(
            "model", "sends_per_s", model, "sends/s", f">= {TARGET_SENDS_PER_S:.0f}",
            _verdict(model, TARGET_SENDS_PER_S, at_least=True),
        ),
        row("bare_simpy", "customers_per_s", bare, "customers/s", "", "info"),
        row("bare_simpy", "mean_wait_rel_error_vs_erlang_c", wait_error, "fraction", "", "info"),
        row(
            "model_vs_bare", "ratio", ratio, "x", f">= {TARGET_RATIO_VS_BARE:.3f}",
            _verdict(ratio, TARGET_RATIO_VS_BARE, at_least=True),
        ),
        row(
            "sweep", "wall_s", sweep_s, "s", f"< {TARGET_SWEEP_S:.0f}",
            "info" if quick else _verdict(sweep_s, TARGET_SWEEP_S, at_least=False),
        ),
        row("sweep", "runs", float(points * reps), "runs", "", "info"),
    ]  # fmt: skip
    details = {
        "timing": {
            "statistic": "median",
            "repeat": repeat,
            "order": "model and bare SimPy alternate within each repeat",
            "ratio": "median of the per-repeat ratios model / bare",
            "gc": "cyclic collector paused in both",
        },
        "model": {"scenario": BASELINE_NAME, "duration_s": duration_s, "runs": model_rates},
        "bare_simpy": {
            "model": "M/M/c, process per customer + simpy.Resource, mu = 1",
            "servers": BARE_SERVERS,
            "rho": BARE_RHO,
            "customers": customers,
            "runs": bare_rates,
            "mean_wait": bare_waits,
            "erlang_c_wait": theory_wait,
        },
        "sweep": {
            "scenario": BASELINE_NAME,
            "overrides": overrides,
            "grid": grid,
            "points": points,
            "replications": reps,
            "executor": "sim.sweep default (ProcessPoolExecutor over every CPU)",
        },
    }
    return rows, details


def summarize(rows: Sequence[dict[str, Any]]) -> str:
    by = {(r["case"], r["metric"]): r for r in rows}
    model = by[("model", "sends_per_s")]
    bare = by[("bare_simpy", "customers_per_s")]
    ratio = by[("model_vs_bare", "ratio")]
    sweep = by[("sweep", "wall_s")]
    runs = by[("sweep", "runs")]
    return "\n".join(
        [
            f"model (baseline.toml)  {model['value']:>10,.0f} sends/s      "
            f"target {model['target']:<10} {model['verdict']}",
            f"bare SimPy M/M/8       {bare['value']:>10,.0f} customers/s",
            f"model / bare           {ratio['value']:>10.2f} x            "
            f"target {ratio['target']:<10} {ratio['verdict']}",
            f"sweep ({runs['value']:.0f} runs)       {sweep['value']:>10.1f} s            "
            f"target {sweep['target']:<10} {sweep['verdict']}",
        ]
    )


# ---------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench sim-speed", description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument("--out", type=Path, default=Path("results/sim-speed"), help="parent folder")
    parser.add_argument("--quick", action="store_true", help="short runs (for tests)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats (default 5, quick 3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Measure, print the summary, write the run folder; 0 whatever the verdicts."""
    args = build_parser().parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (3 if args.quick else 5)
    if repeat < 1:
        print("--repeat must be >= 1", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    run_id = new_run_id(now, "sim-speed-quick" if args.quick else "sim-speed")
    run_dir = args.out / run_id
    print(f"[sim-speed] {run_id}: median of {repeat} repeats", flush=True)
    rows, details = measure(args.quick, repeat, run_id)
    baseline = load_scenario(BASELINE)
    manifest = new_manifest(
        run_id,
        command=[
            "python",
            "-m",
            "bench",
            "sim-speed",
            *(argv if argv is not None else sys.argv[1:]),
        ],
        created_utc=now.isoformat(),
        scenario=baseline.to_dict(),
        seed=baseline.seed,
        quick=args.quick,
        **details,
    )
    write_manifest(run_dir, manifest)
    write_table(run_dir / "speed.csv", rows, SPEED_COLUMNS)
    print(summarize(rows))
    print(f"[sim-speed] wrote {run_dir}/{{manifest.json,speed.csv}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
