"""The gate's verdict: compare two run folders of trials, metric by metric.

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
* ``improved``: better by both rules (shown, never fails the gate);
* a caution above the table when the two runs' manifests name different CPU sets for the
  server and the load clients, or one names none (:func:`cpu_sets_caution`).
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu  # type: ignore[import-untyped]

from bench.gate.metrics import (
    METRICS,
    MIN_TRIALS,
    N_BOOT,
    NORMALISE_DOC,
    TRIAL_COLUMNS,
    TRIALS_FILE,
    Alternative,
    GateError,
    Kind,
    Metric,
    Normalise,
)
from chatcap.results import (
    ResultsError,
    read_manifest,
    read_table,
)


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
    base_manifest, base_rows = read_trials(baseline_dir)
    cand_manifest, cand_rows = read_trials(candidate_dir)
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
    caution = cpu_sets_caution(base_manifest, cand_manifest)
    header += f"{caution}\n\n" if caution else ""
    return results, header + format_markdown(results, threshold, alpha, normalise)


def cpu_sets_caution(baseline: Mapping[str, Any], candidate: Mapping[str, Any]) -> str:
    """A caution when the two runs' servers and load clients ran on different CPU sets
    (or one run's manifest does not say): their CPU figures may differ for that alone."""

    def sets(manifest: Mapping[str, Any]) -> str:
        cpus = manifest.get("cpus")
        if not isinstance(cpus, Mapping):
            return "not recorded"
        return f"server {cpus.get('server_cpus')}, clients {cpus.get('generator_cpus')}"

    base, cand = sets(baseline), sets(candidate)
    if base == cand:
        return ""
    return f"Caution: the runs' CPU sets differ (baseline: {base}; candidate: {cand})."


def update_baseline(candidate_dir: Path, baseline_dir: Path) -> None:
    """Replace the baseline's files by the candidate's (validated first)."""
    read_trials(candidate_dir)
    if candidate_dir.resolve() == baseline_dir.resolve():
        raise GateError(f"{candidate_dir}: candidate and baseline are the same folder")
    baseline_dir.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", TRIALS_FILE):
        shutil.copyfile(candidate_dir / name, baseline_dir / name)
