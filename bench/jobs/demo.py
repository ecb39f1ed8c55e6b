"""``make demo``: calibrate, measure, predict, compare — one run folder, one summary.

``python -m bench demo [--quick] [--scenario FILE] [--loads L1,L2,…] [--duration-s S]
[--gate-trials N] [--no-gate] [--out DIR]``

Every step is its own command (shown as it starts, so any of them can be re-run alone)
writing under one run folder ``results/<run-id>-demo/`` (``--out`` to choose):

1. every shipped scenario is loaded and checked;
2. ``codecs/`` — the codec benchmark at its quick size (JSON vs Protobuf beside the bare
   library paths);
3. ``theory-mmc/`` — the model on a classic M/M/c queue, held against Erlang C;
4. ``calibration/<host>.json`` — ``bench calibrate``: this machine's per-operation costs;
5. ``measured/`` — ``bench run``: the real server under Locust, both codecs, at each load;
6. ``model/`` — the model at the same points, costed by step 4 (never fitted to step 5):
   ``predicted.csv`` (its summary rows), ``accuracy.csv`` (every accuracy item);
7. ``gate/`` — ``bench regress --run`` against the committed ``results/baseline``:
   ``trials.csv``, ``verdict.md``;
8. ``notebooks/`` — the four notebooks executed with this run's files: ``.ipynb``,
   ``.html`` and ``<name>/fig-NN.png``;

then ``summary.md``: ten lines — capacity per core per codec (measured and modelled),
the model's error at each load, the saturation check, the gate's verdict — also printed.

``--quick`` shrinks every step (it is what the test suite runs on ``scenarios/smoke.toml``
with short loads); the default sizes fit in ten minutes on the 2-core machine.
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
from typing import Any

import pandas as pd

from bench._support.paths import REPO_ROOT
from chatcap.results import new_run_id
from chatcap.scenario import CODEC_NAMES, ScenarioError, load_scenario

ROOT = REPO_ROOT
SCENARIOS = ROOT / "scenarios"
SLO_P99_MS = 50.0  # the demo's service level: p99 ack and delivery latency …
SLO_ERROR_RATE = 0.001  # … and errors (the capacity-planning notebook's defaults)
SUSTAINED = 0.9  # acked ÷ offered that counts as keeping up (Poisson noise on short runs)


@dataclass(frozen=True)
class DemoSize:
    """How big each step is."""

    loads: tuple[float, ...]
    duration_s: float
    calibrate_args: tuple[str, ...]
    gate_trials: int
    replications: int
    notebook_params: tuple[str, ...]  # bench notebooks -p …


FULL = DemoSize(
    (100.0, 200.0, 400.0, 800.0),
    12.0,
    (),  # the default: three repeats, medians
    5,
    3,
    # 2 replications each, 4 where the CIs are drawn against the measurement
    ("replications=2", "model-vs-measured:replications=4", "capacity-planning:duration_s=3.0"),
)
QUICK = DemoSize((10.0, 20.0, 40.0, 80.0), 4.0, ("--quick",), 3, 2, ("quick=True",))


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


def capacity_per_core(
    measured: pd.DataFrame, rate_per_user: float, slo_p99_ms: float, error_rate: float
) -> pd.DataFrame:
    """Per codec, from aggregated measured rows (:func:`bench.analysis.aggregate`): the
    highest offered load whose server-side p99 ack latency and error rate meet the SLO
    and that the server sustained (acked ≥ :data:`SUSTAINED` of offered), per server
    core (one process = one core), in sends/s and in users at ``rate_per_user``.
    ``bounded`` is True when the SLO held at every load run — the capacity is then at
    least that figure."""
    rows = []
    for codec, frame in measured.groupby("codec"):
        frame = frame.sort_values("offered_per_s")
        p99 = _col(frame, "server_ack_p99_ms_mean", "ack_p99_ms_mean")
        ok = (
            (p99 <= slo_p99_ms)
            & (frame["error_rate_mean"].fillna(0.0) <= error_rate)
            & (frame["acked_per_s_mean"] >= SUSTAINED * frame["offered_per_s"])
        )
        good = frame[ok.to_numpy()]
        best = float(good["offered_per_s"].max()) if len(good) else 0.0
        rows.append(
            {
                "codec": codec,
                "sends_per_s_per_core": best,
                "users_per_core": best / rate_per_user if rate_per_user > 0 else math.nan,
                "bounded": bool(len(good)) and bool(ok.all()),
                "cpu_us_per_msg": float(
                    good["server_cpu_us_per_msg_mean"].iloc[-1]
                    if len(good)
                    else frame["server_cpu_us_per_msg_mean"].iloc[0]
                ),
            }
        )
    return pd.DataFrame(rows)


def _col(frame: pd.DataFrame, first: str, fallback: str) -> pd.Series:
    if first in frame and frame[first].notna().any():
        return frame[first].fillna(frame[fallback])
    return frame[fallback]


def _pct(value: float) -> str:
    return f"{value:+.0%}" if math.isfinite(value) else "n/a"


def error_lines(acc: pd.DataFrame) -> list[str]:
    """One line per load: the model's relative error on ack p50 and p99, per codec."""
    lines = []
    lat = acc[acc["target"].str.startswith("ack")]
    for load, frame in lat.groupby("offered_per_s"):
        parts = []
        for codec, rows in frame.groupby("codec"):
            by = {str(r["metric"]).split("ack_")[1].split("_")[0]: r for _, r in rows.iterrows()}
            p50, p99 = by.get("p50"), by.get("p99")
            flag = "" if all(r is None or r["status"] != "miss" for r in (p50, p99)) else " MISS"
            parts.append(
                f"{codec} p50 {_pct(float(p50['rel_error']) if p50 is not None else math.nan)}"
                f" p99 {_pct(float(p99['rel_error']) if p99 is not None else math.nan)}{flag}"
            )
        lines.append(f"model error at {load:>7,.0f} sends/s: " + "; ".join(parts))
    return lines


def summary_lines(
    *,
    run_dir: Path,
    capacity: pd.DataFrame,
    model_capacity: Mapping[str, float],
    accuracy: pd.DataFrame,
    latency_basis: str,
    gate: str,
    slo_p99_ms: float,
) -> list[str]:
    """The ten-line summary (fewer when there are fewer loads)."""
    lines = [f"run folder {run_dir} — notebooks as HTML under notebooks/, figures beside"]
    for _, r in capacity.iterrows():
        at_least = "≥ " if r["bounded"] else ""
        model = model_capacity.get(str(r["codec"]), math.nan)
        model_text = f"{model:,.0f}" if math.isfinite(model) else "n/a"
        lines.append(
            f"capacity per core, {r['codec']:8}: measured {at_least}{r['users_per_core']:,.0f} "
            f"users ({at_least}{r['sends_per_s_per_core']:,.0f} sends/s, "
            f"{r['cpu_us_per_msg']:,.0f} µs CPU/msg) at p99 ≤ {slo_p99_ms:g} ms; "
            f"model {model_text} users"
        )
    lines += error_lines(accuracy)
    sat = accuracy[accuracy["target"].str.startswith("saturation")]
    parts = []
    for _, r in sat.iterrows():
        if r["status"] == "n/a":
            parts.append(f"{r['codec']} n/a (not saturated at {r['measured']:,.0f}/s)")
        else:
            parts.append(
                f"{r['codec']} measured {r['measured']:,.0f}/s, model {r['predicted']:,.0f}/s "
                f"({_pct(float(r['rel_error']))}{' MISS' if r['status'] == 'miss' else ''})"
            )
    lines.append("saturation throughput: " + ("; ".join(parts) or "n/a"))
    counts = accuracy["status"].value_counts()
    lines.append(
        f"accuracy targets ({latency_basis}-side latency): {counts.get('pass', 0)} pass, "
        f"{counts.get('miss', 0)} miss, {counts.get('n/a', 0)} n/a — see "
        "notebooks/model-vs-measured.html"
    )
    lines.append(f"regression gate vs results/baseline: {gate}")
    return lines


# ---------------------------------------------------------------------------- the steps


def predict_and_check(
    measured_dir: Path, calibration: Path, out: Path, replications: int
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The model at the measured points; writes ``predicted.csv`` and ``accuracy.csv``.
    Returns (aggregated measured rows, accuracy items, latency basis)."""
    from bench import analysis as an

    predicted = an.predict_measured(
        measured_dir, calibration=calibration, replications=replications, seed=1
    )
    out.mkdir(parents=True, exist_ok=True)
    predicted.to_csv(out / "predicted.csv", index=False)
    measured = an.aggregate(an.load_summary(measured_dir))
    joined = an.join(measured, an.aggregate(predicted))
    report = an.accuracy(joined)
    acc = report.frame()
    acc.to_csv(out / "accuracy.csv", index=False)
    return measured, acc, report.latency_basis


def model_capacity(scenario_file: Path, calibration: Path, quick: bool) -> dict[str, float]:
    """Users per core per codec from the model (the capacity-planning search)."""
    from bench import analysis as an

    size = an.sizes(quick, replications=2, duration_s=None if quick else 3.0)
    base = an.with_calibration(an.load_scenario_file(scenario_file), calibration)
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
    p.add_argument("--loads", help="offered sends/s, e.g. 100,200,400,800 (≥ 4)")
    p.add_argument("--duration-s", type=float, help="length of each measured point")
    p.add_argument("--gate-trials", type=int, help="regression-gate trials")
    p.add_argument("--no-gate", action="store_true", help="skip the regression gate")
    p.add_argument("--out", type=Path, help="run folder (default results/<run-id>-demo)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    size = QUICK if args.quick else FULL
    try:
        loads = tuple(float(x) for x in args.loads.split(",")) if args.loads else size.loads
    except ValueError:
        print(f"error: --loads {args.loads!r}: expected numbers, e.g. 100,200,400,800",
              file=sys.stderr)  # fmt: skip
        return 2
    if len(loads) < 4 or any(x <= 0 for x in loads):
        print(f"error: --loads {args.loads!r}: give at least 4 positive loads", file=sys.stderr)
        return 2
    scenario_file = Path(args.scenario)
    try:
        scenario = load_scenario(scenario_file)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    duration = args.duration_s or size.duration_s
    trials = args.gate_trials or size.gate_trials
    started = time.monotonic()
    run_dir = (args.out or ROOT / "results" / new_run_id(datetime.now(UTC), "demo")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    total = 9
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
    if _run([*cal, *size.calibrate_args]):
        print("demo: calibration failed; nothing to hold the model to", file=sys.stderr)
        return 1
    calibration = _newest("*.json", cal_dir)
    assert calibration is not None

    _step(5, total, f"measured sweep: both codecs at {', '.join(f'{x:g}' for x in loads)} sends/s")
    measured_dir = run_dir / "measured"
    run = ["-m", "bench", "run", "--scenario", str(scenario_file), "--codec", "json,protobuf"]
    run += ["--loads", ",".join(f"{x:g}" for x in loads), "--duration-s", f"{duration:g}"]
    run += ["--warmup-s", f"{min(2.0, duration / 4):g}", "--out", str(measured_dir)]
    if _run(run) or not (measured_dir / "summary.csv").exists():
        print("demo: the measured sweep failed", file=sys.stderr)
        return 1

    _step(6, total, "the model at the same points (costed by step 4), and its accuracy")
    measured, acc, basis = predict_and_check(
        measured_dir, calibration, run_dir / "model", size.replications
    )
    print(f"  wrote {run_dir / 'model' / 'predicted.csv'} and accuracy.csv", flush=True)
    print("  capacity per core in the model (the capacity-planning search) …", flush=True)
    modelled = model_capacity(scenario_file, calibration, args.quick)

    _step(7, total, "regression gate against the committed baseline")
    if args.no_gate:
        gate = "skipped (--no-gate)"
    else:
        gate_dir = run_dir / "gate"
        reg = ["-m", "bench", "regress", "--run", "--trials", str(trials), "--out", str(gate_dir)]
        reg += ["--baseline", "results/baseline", *quick_flag]
        rc = _run(reg)
        gate = gate_verdict(rc)
        if args.quick and rc in (0, 1):
            gate += " — quick trials: a smoke run, not a verdict"

    _step(8, total, "the notebooks, executed with this run's files → HTML and PNG")
    nb = ["-m", "bench", "notebooks", "--measured", str(measured_dir)]
    nb += ["--calibration", str(calibration), "--out", str(run_dir / "notebooks")]
    for param in size.notebook_params:
        nb += ["-p", param]
    if codecs_csv is not None:
        nb += ["--codecs-csv", str(codecs_csv)]
    if _run(nb):
        failures.append("notebooks")

    _step(9, total, "summary")
    rate = scenario.workload.send_rate_per_user_per_s
    cap = capacity_per_core(measured, rate, SLO_P99_MS, SLO_ERROR_RATE)
    lines = summary_lines(
        run_dir=run_dir,
        capacity=cap,
        model_capacity=modelled,
        accuracy=acc,
        latency_basis=basis,
        gate=gate,
        slo_p99_ms=SLO_P99_MS,
    )
    text = "\n".join(lines)
    (run_dir / "summary.md").write_text(
        f"# Demo summary\n\n```\n{text}\n```\n\nscenario `{scenario_file}`, "
        f"{len(loads)} loads × 2 codecs × {duration:g} s; {time.monotonic() - started:.0f} s "
        "in all.\n"
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
    }
