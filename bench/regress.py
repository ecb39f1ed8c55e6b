"""The statistical CI regression gate: did this change make the server slower or fatter?

``python -m bench regress --baseline DIR --candidate DIR [--threshold 0.10] [--alpha 0.05]
[--alternative worse|two-sided] [--update-baseline]``
    compare two run folders, print a Markdown table, exit 1 on a regression (0 otherwise,
    2 on bad input). ``--update-baseline`` then copies the candidate into ``--baseline``
    (default ``results/baseline``, committed) instead of comparing.

``python -m bench regress --run [--trials 7] [--out DIR] [--scenario FILE] [--set KEY=VALUE …]
[--quick]``
    measure a run folder (``trials.csv`` + ``manifest.json``) on this machine; with
    ``--baseline DIR`` compare it at once.

``python -m bench regress --quality [--pairs 10] [--trials 7] [--burn-us X] [--out DIR]``
    how good is the gate here? ``--pairs`` pairs with the CPU-burn fault
    (``server.faults.cpu_burn_us_per_msg = X``, by default 15 % of the echo CPU measured
    first) and as many unchanged pairs; prints how many of each the gate flags.

A **trial** (:func:`run_trial`) starts a fresh server (``python -m server``, the scenario
with :data:`bench._support.servers.SCENARIO_OVERRIDES`, then ``--set``) and measures, in
an order rotated by the trial index, with one run of the machine-speed probe
(:mod:`bench.probe`) before each server case and one after:

* ``echo_<codec>_cpu_us_per_msg`` — server CPU per message, one connection (Send → Ack);
* ``fanout_<codec>_cpu_us_per_delivery`` — server CPU per delivery, a room of
  :data:`ROOM_SIZE`;
* ``deliver_<codec>_bytes`` — our encoded chat ``Deliver`` (deterministic);
* ``<codec>_encode_ratio`` / ``<codec>_decode_ratio`` — our codec's time over the bare
  library path of the same format (:mod:`bench.micro.codec_bench`), measured side by side.

The server figures come from the machinery of ``bench server-overhead``
(:mod:`bench.micro.loadclient` reads the server's CPU from ``/proc``). A fresh server per
trial makes the trials independent, as the test assumes: one long-lived process would
carry its own memory layout and state into every trial.

The comparison, per metric (:func:`compare_metric`):

* CPU metrics are divided by their trial's ``speed_factor`` (median of the trial's
  probe runs ÷ the probe's reference), so a baseline taken on a quiet machine compares
  with a candidate taken on a busy one;
* **regression** = the candidate is worse by a significance test (Mann-Whitney U,
  ``scipy.stats.mannwhitneyu``, one-sided "greater" by default, p < ``--alpha`` ÷ the
  number of tested metrics — Bonferroni, so that eight noisy metrics do not give eight
  chances to flag an unchanged server) **and**
  by magnitude: median ratio candidate/baseline > 1 + ``--threshold`` (10 %, asv's
  factor 1.1). Significance alone flags a 1 % change on quiet data; magnitude alone
  flags noise on busy data; together they flag changes that are both real and big
  enough to matter;
* bytes are deterministic: any increase beyond the threshold is a regression, no test;
* the table also gives a bootstrap 95 % CI of the ratio of medians (:data:`N_BOOT`
  resamples of each side, percentile interval, fixed seed);
* ``improved``: better by both rules (shown, never fails the gate).
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.stats import mannwhitneyu  # type: ignore[import-untyped]

from bench._support.clients import run_case
from bench._support.host import raise_nofile_limit
from bench._support.servers import (
    SCENARIO_OVERRIDES,
    bench_scenario,
    sigterm_as_exit,
    start_our_server,
    stop_server,
)
from bench.micro import codec_bench
from bench.micro.codec_bench import sample_envelopes
from bench.probe import REFERENCE_CPU_S, probe, probe_once
from chatcap.protocol.codec import CODECS
from chatcap.protocol.messages import Envelope
from chatcap.results import (
    Column,
    ResultsError,
    new_manifest,
    new_run_id,
    read_manifest,
    read_table,
    write_manifest,
    write_table,
)
from chatcap.scenario import ScenarioError, to_toml

__all__ = [
    "METRICS",
    "TRIAL_COLUMNS",
    "MetricResult",
    "bootstrap_ratio_ci",
    "compare_metric",
    "compare_runs",
    "format_markdown",
    "main",
    "read_trials",
    "run_trial",
]

Kind = Literal["cpu", "bytes", "ratio"]
Alternative = Literal["worse", "two-sided"]
Normalise = Literal["trial", "run", "none"]
NORMALISE_MODES: tuple[Normalise, ...] = ("trial", "run", "none")
NORMALISE_DOC = {
    "trial": "÷ the speed factor of their own trial (norm.)",
    "run": "÷ the median speed factor of their run (norm.)",
    "none": "raw, not normalised",
}
TRIALS_FILE = "trials.csv"
CODEC_NAMES = ("json", "protobuf")
ROOM_SIZE = 20
N_BOOT = 2000
MIN_TRIALS = 3
PROBES_PER_GAP = 3  # probe runs before each server case and after the last one
DEFAULT_BASELINE = Path("results/baseline")


@dataclass(frozen=True)
class Metric:
    name: str  # the column in trials.csv
    kind: Kind
    unit: str
    doc: str


def _metrics() -> tuple[Metric, ...]:
    out = []
    for c in CODEC_NAMES:
        out.append(Metric(f"echo_{c}_cpu_us_per_msg", "cpu", "µs/msg", f"echo, {c}"))
    for c in CODEC_NAMES:
        doc = f"fan-out to a room of {ROOM_SIZE}, {c}"
        out.append(Metric(f"fanout_{c}_cpu_us_per_delivery", "cpu", "µs/delivery", doc))
    for c in CODEC_NAMES:
        out.append(Metric(f"deliver_{c}_bytes", "bytes", "bytes", f"encoded chat Deliver, {c}"))
    for c in CODEC_NAMES:
        for op in ("encode", "decode"):
            doc = f"our {c} {op} / the bare library's (chat Deliver)"
            out.append(Metric(f"{c}_{op}_ratio", "ratio", "×", doc))
    return tuple(out)


METRICS: tuple[Metric, ...] = _metrics()
BY_NAME = {m.name: m for m in METRICS}

TRIAL_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier."),
    Column("trial", "int", "Trial index within the run, from 0."),
    Column("started_utc", "str", "When the trial started, ISO-8601."),
    Column("probe_cpu_ms", "float", "Median CPU ms of the trial's probe runs (bench/probe.py)."),
    Column("speed_factor", "float", "probe_cpu_ms / the probe's reference: CPU metrics ÷ it."),
    *(
        Column(m.name, "int" if m.kind == "bytes" else "float", f"{m.doc}, {m.unit} (raw).")
        for m in METRICS
    ),
)


class GateError(ValueError):
    """Bad input to the gate (a folder, a column, an option); one line for the user."""


# ============================================================================ comparison


@dataclass(frozen=True)
class MetricResult:
    """One row of the gate's table."""

    metric: str
    kind: Kind
    unit: str
    baseline_median: float
    candidate_median: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float | None  # None: not tested (bytes)
    verdict: str  # "REGRESSION" | "improved" | "ok"
    n_baseline: int
    n_candidate: int

    @property
    def regressed(self) -> bool:
        return self.verdict == "REGRESSION"


def bootstrap_ratio_ci(
    baseline: Sequence[float],
    candidate: Sequence[float],
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of median(candidate) / median(baseline)."""
    base, cand = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    base_med = np.median(base[rng.integers(0, base.size, (n_boot, base.size))], axis=1)
    cand_med = np.median(cand[rng.integers(0, cand.size, (n_boot, cand.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = cand_med / base_med
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.nanpercentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def _p_value(baseline: Sequence[float], candidate: Sequence[float], alternative: str) -> float:
    """Mann-Whitney U p-value; 1.0 when every value of both sides is the same."""
    if len(set(baseline) | set(candidate)) == 1:
        return 1.0
    return float(mannwhitneyu(candidate, baseline, alternative=alternative).pvalue)


def smallest_p_value(n_baseline: int, n_candidate: int, alternative: Alternative) -> float:
    """The smallest p-value Mann-Whitney U can give for these sample sizes (no ties)."""
    one_sided = 1.0 / math.comb(n_baseline + n_candidate, n_baseline)
    return one_sided if alternative == "worse" else 2 * one_sided


def compare_metric(
    metric: Metric,
    baseline: Sequence[float],
    candidate: Sequence[float],
    threshold: float = 0.10,
    alpha: float = 0.05,
    alternative: Alternative = "worse",
    rng: np.random.Generator | None = None,
) -> MetricResult:
    """The verdict for one metric (higher is worse for every metric we keep)."""
    if len(baseline) < 1 or len(candidate) < 1:
        raise GateError(f"{metric.name}: no samples to compare")
    rng = rng if rng is not None else np.random.default_rng(0)
    base_med, cand_med = statistics.median(baseline), statistics.median(candidate)
    ratio = cand_med / base_med if base_med > 0 else math.inf
    worse_by_size, better_by_size = ratio > 1 + threshold, ratio < 1 / (1 + threshold)
    if metric.kind == "bytes":
        p_value, low, high = None, ratio, ratio
        worse, better = worse_by_size, better_by_size
    else:
        low, high = bootstrap_ratio_ci(baseline, candidate, rng)
        if alternative == "worse":
            p_value = _p_value(baseline, candidate, "greater")
            p_better = _p_value(baseline, candidate, "less")
        else:
            p_value = p_better = _p_value(baseline, candidate, "two-sided")
        worse = worse_by_size and p_value < alpha
        better = better_by_size and p_better < alpha
    verdict = "REGRESSION" if worse else "improved" if better else "ok"
    return MetricResult(
        metric.name,
        metric.kind,
        metric.unit,
        base_med,
        cand_med,
        ratio,
        low,
        high,
        p_value,
        verdict,
        len(baseline),
        len(candidate),
    )


def metric_samples(
    rows: Sequence[Mapping[str, Any]], metric: Metric, normalise: Normalise = "trial"
) -> list[float]:
    """One value per trial. CPU metrics are divided by the trial's own speed factor
    (``trial``), by the median speed factor of the run (``run``) or left raw (``none``)."""
    values = [float(r[metric.name]) for r in rows]
    if metric.kind != "cpu" or normalise == "none":
        return values
    if normalise == "run":
        factor = statistics.median(float(r["speed_factor"]) for r in rows)
        return [v / factor for v in values]
    return [v / float(r["speed_factor"]) for v, r in zip(values, rows, strict=True)]


def compare_runs(
    baseline: Sequence[Mapping[str, Any]],
    candidate: Sequence[Mapping[str, Any]],
    threshold: float = 0.10,
    alpha: float = 0.05,
    alternative: Alternative = "worse",
    normalise: Normalise = "trial",
    seed: int = 0,
    metrics: Sequence[Metric] = METRICS,
) -> list[MetricResult]:
    """Every metric of two runs' trial rows (see :func:`compare_metric`).

    ``alpha`` is for the whole family: each tested metric gets ``alpha / m`` (Bonferroni,
    ``m`` = :func:`tested_count`), so that ten noisy metrics do not give ten chances to
    flag an unchanged server.
    """
    rng = np.random.default_rng(seed)
    per_metric = alpha / max(tested_count(metrics), 1)
    return [
        compare_metric(
            m,
            metric_samples(baseline, m, normalise),
            metric_samples(candidate, m, normalise),
            threshold,
            per_metric,
            alternative,
            rng,
        )
        for m in metrics
    ]


def tested_count(metrics: Iterable[Metric] = METRICS) -> int:
    """How many metrics take the significance test (all but the deterministic bytes)."""
    return sum(1 for m in metrics if m.kind != "bytes")


def _num(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def format_markdown(
    results: Sequence[MetricResult],
    threshold: float,
    alpha: float,
    normalise: Normalise = "trial",
) -> str:
    """The gate's table (Markdown), then one line per rule and the overall verdict."""
    lines = [
        "| metric | unit | baseline median | candidate median | ratio | 95% CI | p-value "
        "| verdict |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        unit = f"{r.unit} (norm.)" if r.kind == "cpu" and normalise != "none" else r.unit
        ci = "—" if r.p_value is None else f"{r.ci_low:.3f}–{r.ci_high:.3f}"
        p = "—" if r.p_value is None else f"{r.p_value:.3g}"
        verdict = f"**{r.verdict}**" if r.regressed else r.verdict
        lines.append(
            f"| {r.metric} | {unit} | {_num(r.baseline_median)} | {_num(r.candidate_median)} "
            f"| {r.ratio:.3f} | {ci} | {p} | {verdict} |"
        )
    failed = [r.metric for r in results if r.regressed]
    tested = max(sum(1 for r in results if r.p_value is not None), 1)
    n_base = max((r.n_baseline for r in results), default=0)
    n_cand = max((r.n_candidate for r in results), default=0)
    lines += [
        "",
        f"Regression = worse by more than {threshold:.0%} (median ratio) AND Mann-Whitney "
        f"p < {alpha / tested:.3g} ({alpha:g} / {tested} tested metrics, Bonferroni); bytes: "
        f"any increase beyond {threshold:.0%}, no test. CPU metrics: "
        f"{NORMALISE_DOC[normalise]}. Trials: baseline {n_base}, candidate {n_cand}.",
        "",
        f"**FAIL**: {len(failed)} regression(s): {', '.join(failed)}"
        if failed
        else "**PASS**: no regression.",
    ]
    return "\n".join(lines)


# ============================================================================ run folders


def read_trials(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run folder's manifest and trial rows, validated; :class:`GateError` otherwise."""
    if not run_dir.is_dir():
        raise GateError(f"{run_dir}: not a run folder (no such directory)")
    try:
        manifest = read_manifest(run_dir)
        rows = read_table(run_dir / TRIALS_FILE, TRIAL_COLUMNS)
    except ResultsError as exc:
        raise GateError(str(exc)) from None
    if len(rows) < MIN_TRIALS:
        raise GateError(f"{run_dir / TRIALS_FILE}: {len(rows)} trial(s), need {MIN_TRIALS}+")
    for i, row in enumerate(rows):
        if not row["speed_factor"] > 0:
            raise GateError(f"{run_dir / TRIALS_FILE} line {i + 2}: speed_factor must be > 0")
    return manifest, rows


def gate(
    baseline_dir: Path,
    candidate_dir: Path,
    threshold: float,
    alpha: float,
    alternative: Alternative,
    normalise: Normalise = "trial",
) -> tuple[list[MetricResult], str]:
    """Read both folders, compare, and format; raises :class:`GateError` on bad input."""
    _, base_rows = read_trials(baseline_dir)
    _, cand_rows = read_trials(candidate_dir)
    smallest = smallest_p_value(len(base_rows), len(cand_rows), alternative)
    per_metric = alpha / tested_count()
    if smallest >= per_metric:
        raise GateError(
            f"{len(base_rows)} vs {len(cand_rows)} trials: the test's smallest p-value is "
            f"{smallest:.3g}, never < {per_metric:.3g} (--alpha {alpha:g} / {tested_count()} "
            "metrics); measure more trials"
        )
    results = compare_runs(base_rows, cand_rows, threshold, alpha, alternative, normalise)
    header = f"### Regression gate: `{candidate_dir}` vs baseline `{baseline_dir}`\n\n"
    return results, header + format_markdown(results, threshold, alpha, normalise)


def update_baseline(candidate_dir: Path, baseline_dir: Path) -> None:
    """Replace the baseline's files by the candidate's (validated first)."""
    read_trials(candidate_dir)
    if candidate_dir.resolve() == baseline_dir.resolve():
        raise GateError(f"{candidate_dir}: candidate and baseline are the same folder")
    baseline_dir.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", TRIALS_FILE):
        shutil.copyfile(candidate_dir / name, baseline_dir / name)


# ============================================================================ measuring


@dataclass(frozen=True)
class TrialSizes:
    echo_messages: int = 10_000
    fanout_messages: int = 2_500
    codec_repeat: int = 7
    codec_target_s: float = 0.005
    timeout_s: float = 60.0


QUICK_SIZES = TrialSizes(
    echo_messages=1_000, fanout_messages=100, codec_repeat=1, codec_target_s=0.001
)
SERVER_CASES = tuple((case, c) for case in ("echo", "fanout") for c in CODEC_NAMES)


def run_trial(
    run_id: str, index: int, scenario_path: Path, workdir: Path, sizes: TrialSizes
) -> dict[str, Any]:
    """One trial (see the module docstring): a row of ``trials.csv``."""
    row: dict[str, Any] = {"run_id": run_id, "trial": index}
    row["started_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
    probes: list[float] = []
    server = start_our_server(scenario_path, workdir, f"{run_id}-t{index}")
    try:
        shift = index % len(SERVER_CASES)
        for case, codec in SERVER_CASES[shift:] + SERVER_CASES[:shift]:
            probes += [probe_once() for _ in range(PROBES_PER_GAP)]
            room = 1 if case == "echo" else ROOM_SIZE
            count = sizes.echo_messages if case == "echo" else sizes.fanout_messages
            tag = f"t{index}-{case}-{codec}"  # a fresh server per trial: unique enough
            outcome = run_case(server, codec, room, count, sizes.timeout_s, tag)
            cpu_us = float(outcome["server_cpu_s"]) * 1e6
            if case == "echo":
                row[f"echo_{codec}_cpu_us_per_msg"] = cpu_us / int(outcome["messages"])
            else:
                row[f"fanout_{codec}_cpu_us_per_delivery"] = cpu_us / int(outcome["deliveries"])
        probes += [probe_once() for _ in range(PROBES_PER_GAP)]
    finally:
        stop_server(server)
    row.update(codec_figures(sizes))
    row["probe_cpu_ms"] = statistics.median(probes) * 1e3
    row["speed_factor"] = statistics.median(probes) / REFERENCE_CPU_S
    return row


def codec_figures(sizes: TrialSizes) -> dict[str, Any]:
    """Bytes of our chat ``Deliver`` per codec, and our encode/decode time over the bare
    library path of the same format (:data:`bench.micro.codec_bench.BARE_REFERENCE`).

    Timed in CPU seconds (``time.process_time``), ours and bare taking turns within each
    repeat; the figure is the median of the per-repeat ratios. On a shared machine wall
    clock loops vary by ±30 % when the core is taken away; CPU time by ~1 %.
    """
    msg = sample_envelopes()["deliver_chat"]
    impls = {impl.name: impl for impl in codec_bench._impls()}  # the benchmark's own rows
    out: dict[str, Any] = {}
    for fmt in CODEC_NAMES:
        out[f"deliver_{fmt}_bytes"] = len(CODECS[fmt].encode(msg))
        ours, bare = impls[f"ours {fmt}"], impls[codec_bench.BARE_REFERENCE[fmt]]
        for op in ("encode", "decode"):
            pair = [_op_timer(ours, op, msg), _op_timer(bare, op, msg)]
            loops = [codec_bench._loops_for(t, sizes.codec_target_s) for t in pair]
            ratios = []
            for _ in range(sizes.codec_repeat):
                ours_s, bare_s = (t.timeit(n) / n for t, n in zip(pair, loops, strict=True))
                ratios.append(ours_s / bare_s)
            out[f"{fmt}_{op}_ratio"] = statistics.median(ratios)
    return out


def _op_timer(impl: codec_bench.Impl, op: str, msg: Envelope) -> timeit.Timer:
    encode_input = impl.encode_input(msg)
    fn, arg = (
        (impl.encode, encode_input) if op == "encode" else (impl.decode, impl.encode(encode_input))
    )
    return timeit.Timer("fn(arg)", globals={"fn": fn, "arg": arg}, timer=time.process_time)


@dataclass
class Config:
    """One server configuration being measured: its scenario and the trial rows so far."""

    name: str
    run_id: str
    sets: list[str]
    scenario_path: Path
    scenario: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


def prepare_config(
    name: str, run_id: str, scenario_file: str, sets: Sequence[str], workdir: Path
) -> Config:
    """The scenario with the bench overrides and ``sets``, written for the server."""
    scenario = bench_scenario(scenario_file, sets)
    path = workdir / f"{run_id}.toml"
    path.write_text(to_toml(scenario, comments=False))
    return Config(name, run_id, list(sets), path, scenario.to_dict())


def run_interleaved(
    configs: Sequence[Config], trials: int, sizes: TrialSizes, workdir: Path
) -> None:
    """``trials`` trials of every config, taking turns, so drift hits them alike."""
    for index in range(trials):
        for config in configs:
            row = run_trial(config.run_id, index, config.scenario_path, workdir, sizes)
            config.rows.append(row)
            say(
                f"[regress] {config.name} trial {index + 1}/{trials}: echo "
                f"{row['echo_json_cpu_us_per_msg']:.1f}/{row['echo_protobuf_cpu_us_per_msg']:.1f}"
                f" µs/msg, fan-out {row['fanout_json_cpu_us_per_delivery']:.2f}/"
                f"{row['fanout_protobuf_cpu_us_per_delivery']:.2f} µs/delivery (json/protobuf), "
                f"speed factor {row['speed_factor']:.3f}"
            )


def write_run_folder(
    out: Path, config: Config, command: Sequence[str], created: datetime, sizes: TrialSizes
) -> None:
    """``manifest.json`` + ``trials.csv`` of one configuration."""
    manifest = new_manifest(
        config.run_id,
        list(command),
        created.isoformat(),
        scenario=config.scenario,
        seed=config.scenario.get("seed"),
        trials=len(config.rows),
        sizes=sizes.__dict__,
        room_size=ROOM_SIZE,
        scenario_overrides=SCENARIO_OVERRIDES,
        extra_overrides=config.sets,
        metrics={m.name: {"kind": m.kind, "unit": m.unit, "doc": m.doc} for m in METRICS},
        normalisation="cpu metrics ÷ speed_factor (bench/probe.py); see bench/regress.py",
        probe_reference_cpu_s=REFERENCE_CPU_S,
    )
    write_manifest(out, manifest)
    write_table(out / TRIALS_FILE, config.rows, TRIAL_COLUMNS)


def run_command(args: argparse.Namespace, argv: Sequence[str]) -> Path:
    """``--run``: measure ``--trials`` trials into ``--out``; returns the folder."""
    created = datetime.now(UTC)
    run_id = new_run_id(created, "regress")
    out = Path(args.out) if args.out else Path("results/regress") / run_id
    sizes = QUICK_SIZES if args.quick else TrialSizes()
    raise_nofile_limit()
    probe(1)  # warm the probe's code once per process
    with tempfile.TemporaryDirectory(prefix="chatcap-regress-") as tmp:
        workdir = Path(tmp)
        config = prepare_config("run", run_id, args.scenario, args.set, workdir)
        say(f"[regress] {run_id}: {args.trials} trial(s) into {out}")
        run_interleaved([config], args.trials, sizes, workdir)
    write_run_folder(out, config, ["python", "-m", "bench", "regress", *argv], created, sizes)
    say(f"[regress] wrote {out}/{{manifest.json,{TRIALS_FILE}}}")
    return out


def say(text: str) -> None:
    print(text, flush=True)


# ============================================================================ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench regress", description=(__doc__ or "").split("\n")[0]
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--run", action="store_true", help="measure a run folder")
    mode.add_argument("--quality", action="store_true", help="measure the gate's flag rates")
    p.add_argument("--baseline", help=f"baseline run folder (update target: {DEFAULT_BASELINE})")
    p.add_argument("--candidate", help="candidate run folder")
    p.add_argument("--update-baseline", action="store_true", help="copy candidate to baseline")
    p.add_argument("--threshold", type=float, default=0.10, help="magnitude floor (0.10 = 10%%)")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="significance for all metrics together (Bonferroni)",
    )
    p.add_argument("--alternative", choices=("worse", "two-sided"), default="worse")
    p.add_argument(
        "--normalise",
        choices=NORMALISE_MODES,
        default="trial",
        help="CPU metrics ÷ the trial's speed factor (trial), the run's median (run), or raw",
    )
    p.add_argument("--trials", type=int, default=7, help="trials per run (--run, --quality)")
    p.add_argument("--pairs", type=int, default=10, help="--quality: pairs of each kind")
    p.add_argument("--burn-us", type=float, help="--quality: CPU burn µs/msg (default: 15%% echo)")
    p.add_argument("--out", help="run folder to write (--run) / quality folder")
    p.add_argument("--scenario", default="scenarios/baseline.toml", help="server scenario")
    p.add_argument("--quick", action="store_true", help="tiny trials (smoke runs only)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override for our server, e.g. server.faults.cpu_burn_us_per_msg=10",
    )
    return p


def check_args(args: argparse.Namespace) -> None:
    if not 0 <= args.threshold < 10:
        raise GateError(f"--threshold {args.threshold}: must be in [0, 10)")
    if not 0 < args.alpha < 1:
        raise GateError(f"--alpha {args.alpha}: must be in (0, 1)")
    if (args.run or args.quality) and args.trials < MIN_TRIALS:
        raise GateError(f"--trials {args.trials}: need {MIN_TRIALS}+")
    if args.quality and args.pairs < 1:
        raise GateError(f"--pairs {args.pairs}: must be >= 1")
    if not (args.run or args.quality):
        if args.candidate is None:
            raise GateError("give --candidate DIR (with --baseline DIR), or --run / --quality")
        if args.baseline is None and not args.update_baseline:
            raise GateError("give --baseline DIR to compare with")


def main(argv: list[str] | None = None) -> int:
    """Exit 0: no regression; 1: regression; 2: bad input (one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        if args.quality:
            from bench import gate_quality

            with sigterm_as_exit():
                return gate_quality.quality_command(args, argv)
        candidate = Path(args.candidate) if args.candidate else None
        if args.run:
            with sigterm_as_exit():
                candidate = run_command(args, argv)
        assert candidate is not None
        if args.update_baseline:
            target = Path(args.baseline) if args.baseline else DEFAULT_BASELINE
            update_baseline(candidate, target)
            print(f"[regress] baseline updated: {candidate} → {target}")
            return 0
        if args.baseline is None:
            return 0
        results, table = gate(
            Path(args.baseline),
            candidate,
            args.threshold,
            args.alpha,
            args.alternative,
            args.normalise,
        )
    except (GateError, ScenarioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a server or a load client failed
        print(f"error: measurement failed: {exc}", file=sys.stderr)
        return 2
    print(table)
    return 1 if any(r.regressed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
