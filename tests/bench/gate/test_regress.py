"""The regression gate on synthetic samples and synthetic run folders — no servers.

The rule under test: a metric regresses when the candidate is worse by a Mann-Whitney
test (p < alpha) AND its median by more than the threshold; bytes need no test. One
benchmark at the end measures the gate's quality on the real server; it runs only when
asked for (``pytest -m benchmark``).
"""

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.gate import cli, quality
from bench.gate.metrics import BY_NAME, METRICS, TRIAL_COLUMNS, TRIALS_FILE
from bench.gate.probe import REFERENCE_CPU_S, probe
from bench.gate.verdict import (
    compare_metric,
    compare_runs,
    format_markdown,
    metric_samples,
    smallest_p_value,
)
from chatcap.results import new_manifest, read_table, write_manifest, write_table

ECHO = BY_NAME["echo_json_cpu_us_per_msg"]
BYTES = BY_NAME["deliver_json_bytes"]
RATIO = BY_NAME["json_encode_ratio"]


def lognormal(seed: int, n: int = 10, median: float = 80.0, sigma: float = 0.03) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(median * np.exp(rng.normal(0.0, sigma, n)))


# ---------------------------------------------------------------------------- one metric


def test_a_15_percent_shift_is_flagged_as_a_regression() -> None:
    result = compare_metric(ECHO, lognormal(1), [v * 1.15 for v in lognormal(2)])
    assert result.verdict == "REGRESSION"
    assert result.p_value is not None and result.p_value < 0.05
    assert result.ratio == pytest.approx(1.15, abs=0.03)
    assert result.ci_low <= result.ratio <= result.ci_high


@pytest.mark.parametrize("seed", range(10))
def test_identical_distributions_pass(seed: int) -> None:
    result = compare_metric(ECHO, lognormal(100 + seed), lognormal(200 + seed))
    assert result.verdict == "ok"


def test_a_5_percent_shift_is_below_the_floor_even_when_significant() -> None:
    result = compare_metric(
        ECHO, lognormal(1, sigma=0.01), [v * 1.05 for v in lognormal(2, sigma=0.01)]
    )
    assert result.p_value is not None and result.p_value < 0.001  # the test alone would flag
    assert result.verdict == "ok"


def test_a_big_shift_in_noise_that_the_test_cannot_confirm_passes() -> None:
    base, cand = [50.0, 150.0, 60.0, 140.0], [170.0, 55.0, 160.0, 65.0]
    result = compare_metric(ECHO, base, cand)
    assert result.ratio > 1.1 and result.p_value is not None and result.p_value > 0.05
    assert result.verdict == "ok"


def test_a_bytes_increase_beyond_the_floor_is_a_regression_without_a_test() -> None:
    result = compare_metric(BYTES, [341.0] * 7, [380.0] * 7)
    assert (result.verdict, result.p_value) == ("REGRESSION", None)
    assert compare_metric(BYTES, [341.0] * 7, [350.0] * 7).verdict == "ok"  # +2.6 %
    assert compare_metric(BYTES, [341.0] * 3, [341.0] * 3).verdict == "ok"


def test_a_clear_improvement_is_reported_and_never_fails() -> None:
    result = compare_metric(RATIO, lognormal(1, median=1.0), lognormal(2, median=0.8))
    assert result.verdict == "improved" and not result.regressed


def test_two_sided_test_also_flags_a_big_slowdown() -> None:
    result = compare_metric(
        ECHO, lognormal(1), [v * 1.3 for v in lognormal(2)], alternative="two-sided"
    )
    assert result.verdict == "REGRESSION"


def test_all_equal_samples_give_p_1_and_no_warning() -> None:
    result = compare_metric(RATIO, [1.0] * 5, [1.0] * 5)
    assert (result.p_value, result.verdict, result.ratio) == (1.0, "ok", 1.0)


def test_the_smallest_p_value_depends_on_the_trial_counts() -> None:
    assert smallest_p_value(3, 3, "worse") == pytest.approx(1 / 20)
    assert smallest_p_value(7, 7, "worse") == pytest.approx(1 / 3432)
    assert smallest_p_value(7, 7, "two-sided") == pytest.approx(2 / 3432)


# ---------------------------------------------------------------------------- normalisation


def trial_row(i: int, scale: float = 1.0, speed: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """A synthetic trials.csv row: CPU figures ``× scale × speed``, others fixed-ish."""
    rng = np.random.default_rng(seed * 1000 + i)
    noise = float(np.exp(rng.normal(0.0, 0.02)))
    row: dict[str, Any] = {
        "run_id": f"synthetic-{seed}",
        "trial": i,
        "started_utc": "2026-01-01T00:00:00+00:00",
        "probe_cpu_ms": REFERENCE_CPU_S * 1e3 * speed,
        "speed_factor": speed,
    }
    for m in METRICS:
        if m.kind == "cpu":
            row[m.name] = 80.0 * scale * speed * noise
        elif m.kind == "bytes":
            row[m.name] = 341 if "json" in m.name else 237
        else:
            row[m.name] = 0.8 * noise
    return row


def test_cpu_metrics_are_divided_by_their_trials_speed_factor() -> None:
    rows = [trial_row(0, speed=1.0), trial_row(1, speed=2.0)]
    per_trial = metric_samples(rows, ECHO, "trial")
    assert per_trial[1] / per_trial[0] == pytest.approx(rows[1][ECHO.name] / rows[0][ECHO.name] / 2)
    assert metric_samples(rows, ECHO, "none") == [r[ECHO.name] for r in rows]
    run = metric_samples(rows, ECHO, "run")
    assert run == pytest.approx([r[ECHO.name] / 1.5 for r in rows])
    assert metric_samples(rows, BYTES, "trial") == [341.0, 341.0]


def test_a_slower_machine_is_not_a_regression_once_normalised() -> None:
    base = [trial_row(i, seed=1) for i in range(7)]
    slow_machine = [trial_row(i, speed=1.3, seed=2) for i in range(7)]
    assert not any(r.regressed for r in compare_runs(base, slow_machine))
    raw = compare_runs(base, slow_machine, normalise="none")
    assert {r.metric for r in raw if r.regressed} == {m.name for m in METRICS if m.kind == "cpu"}


# ---------------------------------------------------------------------------- the table


def test_the_markdown_table_has_one_row_per_metric_and_a_verdict_line() -> None:
    base = [trial_row(i, seed=1) for i in range(7)]
    cand = [trial_row(i, scale=1.2, seed=2) for i in range(7)]
    results = compare_runs(base, cand)
    text = format_markdown(results, threshold=0.10, alpha=0.05)
    lines = text.splitlines()
    assert lines[0] == (
        "| metric | unit | baseline median | candidate median | ratio | 95% CI | p-value "
        "| verdict |"
    )
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == [m.name for m in METRICS]
    echo = next(row for row in rows if row.startswith("| echo_json_cpu_us_per_msg |"))
    assert "µs/msg (norm.)" in echo and "**REGRESSION**" in echo and "| 1.2" in echo
    bytes_row = next(row for row in rows if row.startswith("| deliver_json_bytes |"))
    assert bytes_row.endswith("| 1.000 | — | — | ok |")
    assert lines[-1].startswith("**FAIL**: 4 regression(s): echo_json_cpu_us_per_msg")


# ---------------------------------------------------------------------------- main()


def write_folder(path: Path, rows: list[dict[str, Any]]) -> Path:
    write_manifest(path, new_manifest("synthetic", ["test"], "2026-01-01T00:00:00+00:00"))
    write_table(path / TRIALS_FILE, rows, TRIAL_COLUMNS)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {
        "base": write_folder(tmp_path / "base", [trial_row(i, seed=1) for i in range(7)]),
        "same": write_folder(tmp_path / "same", [trial_row(i, seed=2) for i in range(7)]),
        "slow": write_folder(tmp_path / "slow", [trial_row(i, 1.2, seed=3) for i in range(7)]),
    }


def gate_args(base: Path, cand: Path) -> list[str]:
    return ["--baseline", str(base), "--candidate", str(cand)]


def test_main_exits_0_without_and_1_with_a_regression(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(gate_args(folders["base"], folders["same"])) == 0
    assert "**PASS**: no regression." in capsys.readouterr().out
    assert cli.main(gate_args(folders["base"], folders["slow"])) == 1
    assert "**REGRESSION**" in capsys.readouterr().out


def test_main_exits_2_with_one_line_for_a_missing_folder(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(gate_args(tmp_path / "nowhere", folders["same"])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere: not a run folder" in err


def test_main_exits_2_naming_a_missing_column(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = folders["same"] / TRIALS_FILE
    with path.open(newline="") as fh:
        table = list(csv.reader(fh))
    drop = table[0].index("echo_json_cpu_us_per_msg")
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([r[:drop] + r[drop + 1 :] for r in table])
    assert cli.main(gate_args(folders["base"], folders["same"])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing column(s) echo_json_cpu_us_per_msg" in err


def test_main_exits_2_when_the_trials_cannot_reach_significance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_folder(tmp_path / "b", [trial_row(i, seed=1) for i in range(3)])
    cand = write_folder(tmp_path / "c", [trial_row(i, seed=2) for i in range(3)])
    assert cli.main(gate_args(base, cand)) == 2
    assert "smallest p-value is 0.05" in capsys.readouterr().err


def test_main_exits_2_without_a_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "--candidate" in capsys.readouterr().err


def test_update_baseline_copies_the_candidates_files(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "baseline"
    argv = ["--candidate", str(folders["slow"]), "--update-baseline", "--baseline", str(target)]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", TRIALS_FILE]
    assert (target / TRIALS_FILE).read_text() == (folders["slow"] / TRIALS_FILE).read_text()


def test_the_committed_baseline_is_a_valid_run_folder() -> None:
    baseline = Path(__file__).parents[3] / "results" / "baseline"
    rows = read_table(baseline / TRIALS_FILE, TRIAL_COLUMNS)
    assert len(rows) >= 5
    assert all(r["speed_factor"] > 0 and r["echo_json_cpu_us_per_msg"] > 0 for r in rows)


def test_the_probe_gives_a_positive_speed_factor() -> None:
    result = probe(repeat=2)
    assert len(result.samples_s) == 2 and result.cpu_s > 0
    assert result.speed_factor == pytest.approx(result.cpu_s / REFERENCE_CPU_S)


# ---------------------------------------------------------------------------- quality


@pytest.mark.benchmark
def test_gate_quality_flags_faulted_pairs_and_not_unchanged_ones(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``pytest -m benchmark -k gate_quality`` (CHATCAP_QUALITY_PAIRS, default 10): the
    real server, pairs of 7 trials a side — about 2.5 minutes per pair on 2 cores."""
    marks = request.config.option.markexpr
    if "benchmark" not in marks or "not benchmark" in marks:
        pytest.skip("benchmark: run with -m benchmark")
    pairs = int(os.environ.get("CHATCAP_QUALITY_PAIRS", "10"))
    out = tmp_path / "quality"
    assert cli.main(["--quality", "--pairs", str(pairs), "--out", str(out)]) == 0
    rows = read_table(out / "quality.csv", quality.QUALITY_COLUMNS)
    gate_rows = [r for r in rows if r["normalise"] == "trial"]
    fault = sum(r["flagged"] for r in gate_rows if r["kind"] == "fault")
    unchanged = sum(r["flagged"] for r in gate_rows if r["kind"] == "unchanged")
    assert fault >= math.ceil(0.9 * pairs) and unchanged <= math.floor(0.1 * pairs)


def test_results_readme_documents_the_trial_columns() -> None:
    from pathlib import Path

    from bench.gate.metrics import TRIAL_COLUMNS
    from chatcap.results import schema_markdown

    readme = Path(__file__).resolve().parents[3] / "results" / "README.md"
    assert schema_markdown(TRIAL_COLUMNS) in readme.read_text()
