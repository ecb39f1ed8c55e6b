"""``make demo``: calibrate, measure, predict, compare — one run folder, one summary.

``python -m bench demo [--quick] [--scenario FILE] [--loads L1,L2,…] [--duration-s S]
[--gate-trials N] [--no-gate] [--server-cpus LIST] [--generator-cpus LIST] [--out DIR]``

Every step is its own command (shown as it starts, so any of them can be re-run alone)
writing under one run folder ``results/<run-id>-demo/`` (``--out`` to choose):

1. every shipped scenario is loaded and checked;
2. ``codecs/`` — the codec benchmark at its quick size (JSON vs Protobuf beside the bare
   library paths);
3. ``theory-mmc/`` — the model on a classic M/M/c queue, held against Erlang C;
4. ``calibration/<host>.json`` — ``bench calibrate``: this machine's per-operation costs;
5. ``measured/`` — ``bench run --find-capacity``: the real server under Locust, per codec
   a capacity search (a coarse ladder of offered loads, ``--loads``, then doubling; then
   bisection near the knee; the capacity step and the knee repeated) until the SLO breaks
   (p99 ack and delivery ≤ :data:`SLO_P99_MS`, errors ≤ :data:`SLO_ERROR_RATE`) or acked
   throughput stops following the offer; the server on its own CPU, the generator on the
   others (``--server-cpus`` / ``--generator-cpus``); ``capacity.csv`` per codec;
6. ``model/`` — the model at the search's points, costed by step 4 (never fitted to step 5):
   ``predicted.csv`` (its summary rows), then the model's capacity per core (the
   capacity-planning search) and ``accuracy.csv``: every accuracy item — per codec and
   load, per codec the saturation throughput, and the knee (the model's capacity per
   core against step 5's ``capacity.csv``); ``stages.csv``: each stage of a Send and the
   rest, measured beside modelled (``bench.analysis.stage_table``, within 20 %);
   ``collector.csv``: the server's garbage collections and pauses at each point beside
   the rates and pauses the calibration charges (``bench.analysis.collector_table``);
7. ``storm/<name>/`` — ``bench run`` of ``scenarios/retry-storm.toml`` and
   ``retry-storm-fixed.toml`` (a store-latency spike, clients retrying by each
   scenario's policy) on the real server; ``storm/check.csv``: the clients' goodput from
   12 s after the spike to the end, measured against the model
   (:func:`bench.analysis.resilience.storm_check`: within 15 %, and whether each side
   stays down). Skipped with ``--quick`` or ``--no-storm``;
8. ``gate/`` — ``bench regress --run`` against the committed ``results/baseline``:
   ``trials.csv``, ``verdict.md``;
9. ``notebooks/`` — the four notebooks executed with this run's files: ``.ipynb``,
   ``.html`` and ``<name>/fig-NN.png`` (breakers-and-retries with the storm runs
   overlaid on the model);

then ``summary.md``: twelve lines or so — capacity per server core per codec as measured,
with its 95 % interval (from the repeats of the capacity step), the model's capacity
beside it and the ratio measured ÷ model (or, when the generator ran out first, at what
load and each side's CPU then), the model's error per codec, the saturation check, the
stage checks, the storms, the gate's verdict — also printed.

``--quick`` shrinks every step (it is what the test suite runs on ``scenarios/smoke.toml``
with short loads); the default sizes fit in ten minutes on the 2-core machine: search
steps of :data:`FULL`'s ``duration_s`` (warm-up cut first), at most ``max_steps`` per codec.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench._support.args import BadInput
from bench._support.cpus import add_cpu_arguments, cpu_plan_from_args
from bench._support.paths import REPO_ROOT
from bench.run.search import FOLLOW_MIN, SLO_ERROR_RATE, SLO_P99_MS
from chatcap.results import CAPACITY_COLUMNS, CAPACITY_FILE, new_run_id, read_table
from chatcap.scenario import CODEC_NAMES, ScenarioError, load_scenario

if TYPE_CHECKING:
    from bench.analysis.comparison import AccuracyReport

STAGES_FILE = "stages.csv"
"""Under ``model/``: the stage table (``bench.analysis.STAGE_COLUMNS``)."""
COLLECTOR_FILE = "collector.csv"
"""Under ``model/``: the collector table (``bench.analysis.COLLECTOR_COLUMNS``)."""

ROOT = REPO_ROOT
SCENARIOS = ROOT / "scenarios"


@dataclass(frozen=True)
class DemoSize:
    """How big each step is; the search's steps are ``duration_s`` long (``warmup_s``
    cut), ``repeats`` at the capacity step and the knee, ``max_steps`` per codec."""

    loads: tuple[float, ...]  # the search's coarse ladder
    duration_s: float
    warmup_s: float
    max_load_per_s: float
    resolution: float
    repeats: int
    max_steps: int
    follow_min: float
    calibrate_args: tuple[str, ...]
    gate_trials: int
    replications: int
    notebook_params: tuple[str, ...]  # bench notebooks -p …


FULL = DemoSize(
    (250.0, 500.0, 1000.0, 2000.0),
    8.0,
    2.0,
    8000.0,
    0.15,
    3,
    10,
    FOLLOW_MIN,
    (),  # the default: three repeats, medians
    5,
    3,
    # 2 replications each, 4 where the CIs are drawn against the measurement
    ("replications=2", "model-vs-measured:replications=4", "capacity-planning:duration_s=3.0"),
)
QUICK = DemoSize(
    # a smoke run: loads high enough that a 3 s window holds a few hundred sends, and a
    # looser follow-min, since Poisson noise on so short a window is several per cent
    (40.0, 160.0),
    4.0,
    0.5,
    160.0,
    0.25,
    2,
    4,
    0.75,
    ("--quick",),
    3,
    2,
    ("quick=True",),
)


def _step(n: int, total: int, text: str) -> None:
    print(f"\n[demo {n}/{total}] {text}", flush=True)


def check_scenarios(folder: Path = SCENARIOS) -> int:
    """Load every scenario file; print one line each; return the number that failed."""
    failed = 0
    for path in sorted(folder.glob("*.toml")):
        try:
            s = load_scenario(path)
        except ScenarioError as exc:
            failed += 1
            print(f"  FAIL {exc}")
            continue
        print(
            f"  ok   {path.name:<24} {s.offered_per_s:>8,.0f} sends/s offered, "
            f"{s.workload.users} users, {s.workload.rooms} rooms"
        )
    return failed


def _run(args: Sequence[str]) -> int:
    """Run one of our commands in its own process, showing the command line."""
    shown = " ".join(["python", *args])
    print(f"  $ {shown}", flush=True)
    return subprocess.call([sys.executable, *args], cwd=ROOT)


# ---------------------------------------------------------------------------- the summary


def read_capacity(measured_dir: Path) -> list[dict[str, Any]]:
    """The search's ``capacity.csv`` rows (one per codec), validated."""
    return read_table(measured_dir / CAPACITY_FILE, CAPACITY_COLUMNS)


def failed_searches(capacity: Sequence[Mapping[str, Any]]) -> list[str]:
    """The codecs whose capacity search failed (a step could not be measured). A search
    that ran out of steps before it found a bound (``limited_by`` ``none``: on a noisy
    machine a load can break the SLO once and hold it on the confirming repeat) is an
    outcome the summary reports, not a failure of the demo."""
    return [str(row["codec"]) for row in capacity if row["limited_by"] == "failed"]


def _measured_vs_model(r: Any) -> str:
    """``json measured 6,438/s, model 11,340/s (+76% MISS)``: one accuracy row."""
    miss = " MISS" if r["status"] == "miss" else ""
    return (
        f"{r['codec']} measured {r['measured']:,.0f}/s, model {r['predicted']:,.0f}/s "
        f"({_pct(float(r['rel_error']))}{miss})"
    )


def _pct(value: float) -> str:
    return f"{value:+.0%}" if math.isfinite(value) else "n/a"


PER_LOAD_PARTS: tuple[tuple[str, str], ...] = (
    ("ack p50", "ack p50 within"),
    ("ack p99", "ack p99 within"),
    ("delivery p99", "delivery p99 within"),
    ("acked/s", "acked throughput within"),
)
"""(label in the summary, how the item's ``target`` starts) for the per-load items."""


def _per_load(acc: pd.DataFrame) -> pd.DataFrame:
    """The accuracy items checked per codec and load (not saturation, not the knee)."""
    target = acc["target"].astype(str)
    return acc[target.str.startswith(tuple(prefix for _, prefix in PER_LOAD_PARTS))]


def error_lines(acc: pd.DataFrame) -> list[str]:
    """One line per codec: the model's relative error on ack p50 and p99, delivery p99
    and acked throughput over the measured loads — median and range — and how many of
    those items missed. A metric with no item is left out; one with no error, n/a."""
    lines = []
    lat = _per_load(acc)
    for codec, frame in lat.groupby("codec"):
        parts = []
        for label, prefix in PER_LOAD_PARTS:
            rows = frame[frame["target"].astype(str).str.startswith(prefix)]
            if rows.empty:
                continue
            errs = pd.to_numeric(rows["rel_error"], errors="coerce").dropna()
            if errs.empty:
                parts.append(f"{label} n/a")
                continue
            parts.append(
                f"{label} median {_pct(float(errs.median()))} "
                f"({_pct(float(errs.min()))} … {_pct(float(errs.max()))})"
            )
        misses = int(frame["status"].eq("miss").sum())
        loads = frame["offered_per_s"].nunique()
        lines.append(
            f"model error, {codec} ({loads} loads): " + "; ".join(parts)
            + (f"; {misses} MISS" if misses else "")
        )  # fmt: skip
    return lines


def knee_line(acc: pd.DataFrame) -> str | None:
    """The knee items in one line — per codec the model's capacity per core against the
    measured, or why there is no check — or None when ``acc`` has none."""
    knee = acc[acc["target"].astype(str).str.startswith("knee within")]
    if knee.empty:
        return None
    parts = []
    for _, r in knee.iterrows():
        if r["status"] == "n/a":
            parts.append(f"{r['codec']} n/a ({r['note']})")
        else:
            parts.append(_measured_vs_model(r))
    tol = float(knee["tolerance"].iloc[0])
    return f"knee (capacity per server core, target ±{tol:.0%}): " + "; ".join(parts)


def model_per_core_per_s(
    users_per_core: Mapping[str, float], rate_per_user: float
) -> dict[str, float]:
    """The model's capacity per core per codec in sends/s: users per core × the
    scenario's per-user send rate."""
    return {codec: users * rate_per_user for codec, users in users_per_core.items()}


STORM_SCENARIOS: tuple[str, ...] = ("retry-storm", "retry-storm-fixed")
"""The retry storm and its fix (``scenarios/<name>.toml``): measured and modelled."""
STORM_FILE = "check.csv"
STORM_REPLICATIONS = 3


def storm_commands(run_dir: Path, cpu: Sequence[str]) -> dict[str, list[str]]:
    """``bench run`` of each storm scenario, one point at its own load, into
    ``storm/<name>``: the real server, the fault episode its scenario names."""
    out = {}
    for name in STORM_SCENARIOS:
        scenario = f"scenarios/{name}.toml"
        folder = str(run_dir / "storm" / name)
        out[name] = ["-m", "bench", "run", "--scenario", scenario, "--codec", "json"]
        out[name] += ["--sample-s", "1", "--out", folder, *cpu]
    return out


def storm_notebook_params(run_dir: Path) -> list[str]:
    """``bench notebooks -p`` values that give breakers-and-retries the storm runs made
    (a Python literal each: the folder as a quoted string)."""
    keys = ("measured_storm_dir", "measured_fixed_dir")
    out = []
    for name, key in zip(STORM_SCENARIOS, keys, strict=True):
        folder = run_dir / "storm" / name
        if (folder / "manifest.json").exists():
            out.append(f"breakers-and-retries:{key}={str(folder)!r}")
    return out


def storm_line(run_dir: Path) -> str:
    """Each storm run against the model (:func:`bench.analysis.resilience.storm_check`,
    ``STORM_REPLICATIONS`` model runs); writes ``storm/check.csv``; one summary line."""
    import sim
    from bench.analysis.resilience import measured_goodput, recovery_window, storm_check

    rows, parts = [], []
    for name in STORM_SCENARIOS:
        folder = run_dir / "storm" / name
        scenario = load_scenario(ROOT / "scenarios" / f"{name}.toml")
        measured = measured_goodput(folder) if folder.exists() else pd.DataFrame()
        if measured.empty:
            parts.append(f"{name} not measured")
            continue
        modelled = pd.concat(
            sim.run(scenario, seed=scenario.seed + r).timeseries.assign(replication=r)
            for r in range(STORM_REPLICATIONS)
        )
        check = storm_check(measured, modelled, recovery_window(scenario)).assign(scenario=name)
        rows.append(check)
        c = check.iloc[0]
        fate = (
            "both stay down"
            if c["measured_stays_down"] and c["modelled_stays_down"]
            else ("both recover" if c["same_fate"] else "different fates")
        )
        rel = (
            ""
            if c["measured_goodput_per_s"] == c["modelled_goodput_per_s"]
            else (f", {_pct(float(c['rel_error']))}")
        )
        parts.append(
            f"{name} {c['measured_goodput_per_s']:,.0f}/s measured vs "
            f"{c['modelled_goodput_per_s']:,.0f}/s model "
            f"({fate}{rel}{'' if c['within'] else ' MISS'})"
        )
    if rows:
        pd.concat(rows).to_csv(run_dir / "storm" / STORM_FILE, index=False)
    return "retry storms, goodput 12 s after the spike to the end (±15 %): " + "; ".join(parts)


def summary_lines(
    *,
    run_dir: Path,
    capacity: Sequence[Mapping[str, Any]],
    model_capacity: Mapping[str, float],
    rate_per_user: float,
    accuracy: pd.DataFrame,
    latency_basis: str,
    gate: str,
    stages: str | None = None,
    storm: str | None = None,
    collector: str | None = None,
) -> list[str]:
    """The summary, about twelve lines: the run folder; per codec the measured capacity
    per server core with its CI beside the model's (users per core × ``rate_per_user``)
    and the ratio, or which side ran out (:func:`bench.analysis.words.capacity_line`); the
    model's error per codec; saturation; the knee items (when ``accuracy`` has them);
    accuracy counts, every item included; ``stages`` (the stage checks in one line,
    :func:`bench.analysis.stage_summary`), ``collector`` (the collector measured against
    the calibration, :func:`bench.analysis.collector_summary`) and ``storm``
    (:func:`storm_line`) when given;
    the gate."""
    from bench.analysis.words import capacity_line

    lines = [f"run folder {run_dir} — notebooks as HTML under notebooks/, figures beside"]
    if capacity:
        slo = capacity[0]
        lines.append(
            f"SLO: p99 of ack and delivery ≤ {slo['slo_p99_ms']:g} ms, error rate ≤ "
            f"{slo['slo_error_rate']:.2%}, acked ≥ {slo['follow_min']:.0%} of offered; "
            "capacity = mean acked/s at the highest offer that met it, 95 % t interval "
            "over its repeats"
        )
    per_s = model_per_core_per_s(model_capacity, rate_per_user)
    for cap in capacity:
        lines.append(capacity_line(cap, per_s.get(str(cap["codec"]), math.nan)))
    lines += error_lines(accuracy)
    sat = accuracy[accuracy["target"].str.startswith("saturation")]
    parts = []
    for _, r in sat.iterrows():
        if r["status"] == "n/a":
            parts.append(f"{r['codec']} n/a (not saturated at {r['measured']:,.0f}/s)")
        else:
            parts.append(_measured_vs_model(r))
    lines.append("saturation throughput: " + ("; ".join(parts) or "n/a"))
    knee = knee_line(accuracy)
    if knee is not None:
        lines.append(knee)
    counts = accuracy["status"].value_counts()
    lines.append(
        f"accuracy targets ({latency_basis}-side latency): {counts.get('pass', 0)} pass, "
        f"{counts.get('miss', 0)} miss, {counts.get('n/a', 0)} n/a — see "
        "notebooks/model-vs-measured.html"
    )
    if stages is not None:
        lines.append(stages)
    if collector is not None:
        lines.append(collector)
    if storm is not None:
        lines.append(storm)
    lines.append(f"regression gate vs results/baseline: {gate}")
    return lines


# ---------------------------------------------------------------------------- the steps


def predict_and_check(
    measured_dir: Path, calibration: Path, out: Path, replications: int
) -> tuple[pd.DataFrame, AccuracyReport, pd.DataFrame]:
    """The model at the measured points; writes ``predicted.csv``. Returns (aggregated
    measured rows, the per-load and saturation accuracy items, the stage table):
    :func:`write_accuracy` adds the knee once the model's capacity is known and writes
    ``accuracy.csv``; :func:`write_stages` writes the stage table."""
    from bench import analysis as an

    predicted = an.predict_measured(
        measured_dir, calibration=calibration, replications=replications, seed=1
    )
    out.mkdir(parents=True, exist_ok=True)
    predicted.to_csv(out / "predicted.csv", index=False)
    measured = an.aggregate(an.load_summary(measured_dir))
    joined = an.join(measured, an.aggregate(predicted))
    return measured, an.accuracy(joined), an.stage_table(joined)


def write_stages(out: Path, stages: pd.DataFrame) -> str:
    """:data:`STAGES_FILE` under ``out`` (the stage table, one row per codec, load and
    stage); returns the table in one line (:func:`bench.analysis.stage_summary`)."""
    from bench.analysis.stages import stage_summary

    out.mkdir(parents=True, exist_ok=True)
    stages.to_csv(out / STAGES_FILE, index=False)
    return stage_summary(stages)


def write_collector(out: Path, measured_dir: Path, calibration: Path) -> str:
    """:data:`COLLECTOR_FILE` under ``out`` (the garbage collector at each measured point
    beside the calibration's rates and pauses); returns it in one line
    (:func:`bench.analysis.collector_summary`)."""
    from bench.analysis.collector import collector_summary, collector_table
    from chatcap.results import SUMMARY_FILE, ResultsError
    from sim.calibration import CalibrationError, load_costs

    if not (measured_dir / SUMMARY_FILE).exists():
        return f"collector: not compared ({measured_dir / SUMMARY_FILE} is missing)"
    try:
        table = collector_table(measured_dir, load_costs(calibration))
    except (CalibrationError, ResultsError) as exc:
        return f"collector: not compared ({exc})"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / COLLECTOR_FILE, index=False)
    return collector_summary(table)


def write_accuracy(
    out: Path,
    report: AccuracyReport,
    capacity: Sequence[Mapping[str, Any]],
    model_capacity: Mapping[str, float],
    rate_per_user: float,
) -> pd.DataFrame:
    """``accuracy.csv`` under ``out``: ``report``'s items, then one knee item per codec —
    the measured capacity per server core (``capacity``: the search's ``capacity.csv``
    rows) against the model's (``model_capacity``: users per core, × ``rate_per_user``
    in sends/s). Returns the items written, as a frame."""
    from bench.analysis.comparison import knee_items

    knees = knee_items(capacity, model_per_core_per_s(model_capacity, rate_per_user))
    acc = report.with_items(knees).frame()
    out.mkdir(parents=True, exist_ok=True)
    acc.to_csv(out / "accuracy.csv", index=False)
    return acc


def model_capacity(scenario_file: Path, calibration: Path, quick: bool) -> dict[str, float]:
    """Users per core per codec from the model (the capacity-planning search), costed by
    ``calibration`` — the store's mean too, as at the measured points."""
    from bench import analysis as an
    from bench.analysis.model import store_overrides
    from sim.calibration import load_costs

    size = an.sizes(quick, replications=2, duration_s=None if quick else 3.0)
    base = an.with_calibration(an.load_scenario_file(scenario_file), calibration)
    # the store's mean as calibrated, as the model at the measured points has it
    base = base.with_overrides(store_overrides(load_costs(calibration)))
    slo = an.SLO(SLO_P99_MS, SLO_ERROR_RATE)
    out: dict[str, float] = {}
    with an.make_executor(size.workers) as pool:
        _, caps = an.capacity_table(
            base, {an.GRID_CODEC: list(CODEC_NAMES)}, slo,
            replications=size.replications, duration_s=size.duration_s,
            warmup_s=size.warmup_s, executor=pool, rel_tol=size.rel_tol,
        )  # fmt: skip
    for label, cap in caps.items():
        codec = str(label).split("=")[-1]
        out[codec] = float(cap.users_per_core)
    return out


def search_command(
    scenario_file: Path,
    loads: Sequence[float],
    duration_s: float,
    warmup_s: float,
    size: DemoSize,
    out: Path,
) -> list[str]:
    """``bench run --find-capacity`` with the demo's SLO and the size's search budget."""
    return [
        "-m", "bench", "run", "--scenario", str(scenario_file), "--codec", "json,protobuf",
        "--find-capacity", "--loads", ",".join(f"{x:g}" for x in loads),
        "--duration-s", f"{duration_s:g}", "--warmup-s", f"{warmup_s:g}",
        "--slo-p99-ms", f"{SLO_P99_MS:g}", "--slo-error-rate", f"{SLO_ERROR_RATE:g}",
        "--follow-min", f"{size.follow_min:g}", "--resolution", f"{size.resolution:g}",
        "--repeat", str(size.repeats), "--max-steps", str(size.max_steps),
        "--max-load-per-s", f"{max(size.max_load_per_s, *loads):g}", "--out", str(out),
    ]  # fmt: skip


def cpu_flags(args: argparse.Namespace) -> list[str]:
    """The ``--server-cpus`` / ``--generator-cpus`` given to the demo, for its commands."""
    out = []
    for flag, value in (
        ("--server-cpus", args.server_cpus),
        ("--generator-cpus", args.generator_cpus),
    ):
        if value is not None:
            out += [flag, value]
    return out


def measured_points_of(measured: pd.DataFrame) -> pd.DataFrame:
    return measured[["codec", "offered_per_s"]].drop_duplicates()


def gate_verdict(rc: int) -> str:
    return {0: "pass (no regression)", 1: "REGRESSION (see gate/verdict.md)"}.get(
        rc, f"not run (exit status {rc})"
    )


def _newest(pattern: str, folder: Path) -> Path | None:
    found = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench demo", description=__doc__)
    p.add_argument("--quick", action="store_true", help="every step small (tests)")
    p.add_argument("--scenario", default="scenarios/baseline.toml", help="measured scenario")
    p.add_argument(
        "--loads", help="the capacity search's coarse ladder, sends/s, e.g. 250,500,1000,2000"
    )
    p.add_argument("--duration-s", type=float, help="length of each search step")
    p.add_argument("--gate-trials", type=int, help="regression-gate trials")
    p.add_argument("--no-gate", action="store_true", help="skip the regression gate")
    p.add_argument(
        "--no-storm", action="store_true", help="skip the retry storms on the real server"
    )
    p.add_argument("--out", type=Path, help="run folder (default results/<run-id>-demo)")
    add_cpu_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    size = QUICK if args.quick else FULL
    try:
        loads = tuple(float(x) for x in args.loads.split(",")) if args.loads else size.loads
    except ValueError:
        print(f"error: --loads {args.loads!r}: expected numbers, e.g. 250,500,1000,2000",
              file=sys.stderr)  # fmt: skip
        return 2
    if not loads or any(x <= 0 for x in loads):
        print(f"error: --loads {args.loads!r}: give positive loads", file=sys.stderr)
        return 2
    scenario_file = Path(args.scenario)
    try:
        scenario = load_scenario(scenario_file)
        cpus = cpu_plan_from_args(args)
    except (ScenarioError, BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    duration = args.duration_s or size.duration_s
    trials = args.gate_trials or size.gate_trials
    started = time.monotonic()
    run_dir = (args.out or ROOT / "results" / new_run_id(datetime.now(UTC), "demo")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    total = 10
    failures: list[str] = []

    _step(1, total, "checking scenarios/*.toml")
    if check_scenarios():
        print("demo: a shipped scenario does not load", file=sys.stderr)
        return 1

    _step(2, total, "codec benchmark (JSON vs Protobuf; bare library paths as reference)")
    quick_flag = ["--quick"] if args.quick else []
    # the quick sizes: the full benchmark is `make bench-codecs`, a minute on its own
    if _run(["-m", "bench", "codecs", "--out", str(run_dir / "codecs"), "--quick"]):
        failures.append("codecs")
    codecs_csv = _newest("*/codecs.csv", run_dir / "codecs")

    _step(3, total, "the model on a classic queue (M/M/c), held against Erlang C")
    theory = ["-m", "sim", "--scenario", "scenarios/theory-mmc.toml", "--replications"]
    theory += ["2" if args.quick else "3", "--out", str(run_dir / "theory-mmc")]
    if _run(theory):
        failures.append("theory-mmc")

    _step(4, total, "calibration: this machine's per-operation costs (parts, never whole runs)")
    cal_dir = run_dir / "calibration"
    cal = ["-m", "bench", "calibrate", "--scenario", str(scenario_file), "--out", str(cal_dir)]
    if _run([*cal, *size.calibrate_args, *cpu_flags(args)]):
        print("demo: calibration failed; nothing to hold the model to", file=sys.stderr)
        return 1
    calibration = _newest("*.json", cal_dir)
    assert calibration is not None

    where = cpus.describe()
    _step(
        5, total,
        f"capacity search, both codecs, from {', '.join(f'{x:g}' for x in loads)} sends/s "
        f"(server on CPU {where['server_cpus']}, generator on CPU {where['generator_cpus']})",
    )  # fmt: skip
    measured_dir = run_dir / "measured"
    warmup = min(size.warmup_s, duration / 4)
    run = search_command(scenario_file, loads, duration, warmup, size, measured_dir)
    run += cpu_flags(args)
    rc = _run(run)
    if rc not in (0, 1) or not (measured_dir / CAPACITY_FILE).exists():
        print("demo: the capacity search failed", file=sys.stderr)
        return 1
    failed = failed_searches(read_capacity(measured_dir)) if rc else []
    if failed:
        failures.append(
            f"capacity search, {', '.join(failed)} (a step failed: see measured/capacity.csv)"
        )

    _step(6, total, "the model at the same points (costed by step 4), and its accuracy")
    measured, report, stages = predict_and_check(
        measured_dir, calibration, run_dir / "model", size.replications
    )
    print(f"  wrote {run_dir / 'model' / 'predicted.csv'}", flush=True)
    stage_line = write_stages(run_dir / "model", stages)
    print(f"  wrote {run_dir / 'model' / STAGES_FILE}: {stage_line}", flush=True)
    collector_line = write_collector(run_dir / "model", measured_dir, calibration)
    print(f"  wrote {run_dir / 'model' / COLLECTOR_FILE}: {collector_line}", flush=True)
    print("  capacity per core in the model (the capacity-planning search) …", flush=True)
    modelled = model_capacity(scenario_file, calibration, args.quick)
    rate_per_user = scenario.workload.send_rate_per_user_per_s
    capacity = read_capacity(measured_dir)
    acc = write_accuracy(run_dir / "model", report, capacity, modelled, rate_per_user)
    basis = report.latency_basis
    print(f"  wrote {run_dir / 'model' / 'accuracy.csv'} (the knee included)", flush=True)

    _step(7, total, "the retry storms on the real server (scenarios/retry-storm*.toml)")
    storm: str | None
    if args.quick or args.no_storm:
        storm = None
        print("  skipped (--quick or --no-storm)", flush=True)
    else:
        for name, command in storm_commands(run_dir, cpu_flags(args)).items():
            if _run(command):
                failures.append(f"retry storm {name}")
        storm = storm_line(run_dir)
        print(f"  {storm}", flush=True)

    _step(8, total, "regression gate against the committed baseline")
    if args.no_gate:
        gate = "skipped (--no-gate)"
    else:
        gate_dir = run_dir / "gate"
        reg = ["-m", "bench", "regress", "--run", "--trials", str(trials), "--out", str(gate_dir)]
        reg += ["--baseline", "results/baseline", *quick_flag, *cpu_flags(args)]
        rc = _run(reg)
        gate = gate_verdict(rc)
        if args.quick and rc in (0, 1):
            gate += " — quick trials: a smoke run, not a verdict"

    _step(9, total, "the notebooks, executed with this run's files → HTML and PNG")
    nb = ["-m", "bench", "notebooks", "--measured", str(measured_dir)]
    nb += ["--calibration", str(calibration), "--out", str(run_dir / "notebooks")]
    for param in size.notebook_params:
        nb += ["-p", param]
    for param in storm_notebook_params(run_dir):
        nb += ["-p", param]
    if codecs_csv is not None:
        nb += ["--codecs-csv", str(codecs_csv)]
    if _run(nb):
        failures.append("notebooks")

    _step(10, total, "summary")
    steps = len(measured_points_of(measured))
    lines = summary_lines(
        run_dir=run_dir,
        capacity=capacity,
        model_capacity=modelled,
        rate_per_user=rate_per_user,
        accuracy=acc,
        latency_basis=basis,
        gate=gate,
        stages=stage_line,
        collector=collector_line,
        storm=storm,
    )
    text = "\n".join(lines)
    (run_dir / "summary.md").write_text(
        f"# Demo summary\n\n```\n{text}\n```\n\nscenario `{scenario_file}`, a capacity "
        f"search per codec ({steps} distinct (codec, load) points, steps of {duration:g} s); "
        f"{time.monotonic() - started:.0f} s in all.\n"
    )
    print(text, flush=True)
    print(f"\n[demo] done in {time.monotonic() - started:.0f} s: {run_dir}", flush=True)
    for title in failures:
        print(f"[demo] FAILED: {title}", file=sys.stderr)
    return 1 if failures else 0


def summary_from_folder(run_dir: Path) -> dict[str, Any]:
    """What a finished demo folder holds (for tests and for a later look)."""
    return {
        "summary": (run_dir / "summary.md").read_text(),
        # "n/a" is a status here, not a missing value
        "accuracy": pd.read_csv(
            run_dir / "model" / "accuracy.csv", keep_default_na=False, na_values=[""]
        ),
        "predicted": pd.read_csv(run_dir / "model" / "predicted.csv"),
        # absent in a folder from before the stage table
        "stages": (
            pd.read_csv(run_dir / "model" / STAGES_FILE, keep_default_na=False, na_values=[""])
            if (run_dir / "model" / STAGES_FILE).exists()
            else None
        ),
    }
