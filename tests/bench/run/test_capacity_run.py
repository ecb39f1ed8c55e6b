"""``bench run --find-capacity``: a measured point as the search sees it, the
``capacity.csv`` row and its schema, bad search flags, and one real tiny search.

The real search starts the server and Locust as subprocesses of ``bench.run`` (as
``test_run.py`` does); its assertions are about files and verdicts, never speed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench._support.histo import HistogramSet
from bench.run import cli as run
from bench.run.figures import capacity_row, step_result
from bench.run.search import SLO, SearchPlan, StepResult, find_capacity
from chatcap.results import (
    CAPACITY_COLUMNS,
    CAPACITY_FILE,
    LIMITS,
    ResultsError,
    read_run,
    read_table,
    schema_markdown,
    write_table,
)

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "scenarios" / "smoke.toml"
CPUS = {"server_cpus": "1", "generator_cpus": "0", "isolated": True, "note": ""}


def chat_doc(cpu_pct: float = 40.0, lag_ms: float = 0.5) -> dict[str, Any]:
    hists = HistogramSet()
    for i in range(1000):
        hists.record_us("schedule_lag", "json", int(lag_ms * 1000))
        hists.record_us("ack", "json", 1000 + i)
        hists.record_us("deliver", "json", 800 + i)
    return {
        "histograms": hists.to_json(),
        "generator": {"max_cpu_pct_per_process": cpu_pct, "sends_intended": 10, "sends_sent": 10},
    }


def row(offered: float = 500.0, note: str = "") -> dict[str, Any]:
    return {
        "offered_per_s": offered, "acked_per_s": 495.0, "ack_p99_ms": 4.0,
        "deliver_p99_ms": 5.0, "error_rate": 0.0, "server_cpu_us_per_msg": 800.0, "note": note,
    }  # fmt: skip


INFO = {"window": {"seconds": 6.0, "server": {"cpu_s": 2.4}, "generator_cpu_pct": {"7": 45.0}}}


def test_a_measured_point_becomes_a_step_with_both_sides_cpu_shares() -> None:
    step = step_result(row(), INFO, chat_doc(), server_cores=1, generator_cores=1)
    assert step.generator_limits == () and not step.lag_caution and not step.failed
    assert step.acked_per_s == 495.0 and step.server_cpu_us_per_msg == 800.0
    assert step.server_cpu_pct == pytest.approx(40.0)  # 2.4 s of CPU in 6 s, one core
    assert step.generator_cpu_pct == pytest.approx(45.0)


def test_a_point_the_generator_could_not_keep_carries_its_reasons() -> None:
    busy = step_result(row(), INFO, chat_doc(cpu_pct=97.0), 1, 1)
    assert any("97% CPU" in r for r in busy.generator_limits)
    late = step_result(row(), INFO, chat_doc(lag_ms=3.0), 1, 1)
    assert late.generator_limits == () and late.lag_caution  # 3 ms of a 2 ms ack p99


def test_a_failed_point_is_a_failed_step() -> None:
    step = step_result(row(note="failed: server exited with 1"), {}, None, 1, 1)
    assert step.failed == "server exited with 1" and math.isnan(step.acked_per_s)


def searched(generator_max: float = math.inf) -> tuple[Any, SearchPlan]:
    plan = SearchPlan(slo=SLO(50.0, 0.001), ladder=(100, 200, 400, 800), repeats=2)

    def measure(offered: float) -> StepResult:
        p99 = 5.0 if offered <= 500 else 300.0
        limits = ("a Locust process used 99% of a core",) if offered > generator_max else ()
        return StepResult(
            offered, offered, p99, p99, 0.0, limits,
            server_cpu_pct=offered / 6.0, generator_cpu_pct=offered / 3.5,
            server_cpu_us_per_msg=900.0,
        )  # fmt: skip

    return find_capacity(measure, plan), plan


def cap_row(found: Any, plan: SearchPlan, cores: int = 1) -> dict[str, Any]:
    return capacity_row(
        found, plan, run_id="r", scenario="smoke", codec="json", cpus=CPUS,
        server_cores=cores, duration_s=8.0, warmup_s=2.0,
    )  # fmt: skip


def test_the_capacity_row_has_the_knee_the_interval_and_the_cpu_sets(tmp_path: Path) -> None:
    found, plan = searched()
    cap = cap_row(found, plan, cores=2)
    assert cap["limited_by"] == "slo" and cap["capacity_offered_per_s"] == 500.0
    assert cap["knee_per_s"] == 550.0 and cap["repeats"] == 2 and cap["steps"] == len(found.steps)
    assert cap["per_server_core_per_s"] == pytest.approx(250.0)  # 500 acked/s on 2 cores
    assert cap["per_core_ci_low_per_s"] == pytest.approx(found.ci_low_per_s / 2)
    assert cap["server_cpus"] == "1" and cap["generator_cpus"] == "0" and cap["isolated"]
    assert cap["limit_offered_per_s"] == 550.0 and cap["capacity_server_cpu_us_per_msg"] == 900.0
    assert cap["slo_p99_ms"] == 50.0 and cap["slo_error_rate"] == 0.001
    path = write_table(tmp_path / CAPACITY_FILE, [cap], CAPACITY_COLUMNS)
    (back,) = read_table(path, CAPACITY_COLUMNS)
    assert back["limited_by"] == "slo" and back["knee_per_s"] == 550.0
    assert [c.name for c in CAPACITY_COLUMNS if c.required] <= list(back)


def test_a_generator_bound_search_names_the_load_and_each_sides_cpu() -> None:
    found, plan = searched(generator_max=300.0)
    cap = cap_row(found, plan)
    assert cap["limited_by"] == "generator" and cap["capacity_offered_per_s"] <= 300.0
    assert cap["limit_offered_per_s"] == found.knee_per_s > 300.0
    assert cap["limit_generator_cpu_pct"] == pytest.approx(found.knee_per_s / 3.5)
    assert cap["limit_server_cpu_pct"] == pytest.approx(found.knee_per_s / 6.0)


def test_capacity_rows_with_an_unknown_limit_are_refused(tmp_path: Path) -> None:
    found, plan = searched()
    bad = cap_row(found, plan) | {"limited_by": "luck"}
    with pytest.raises(ResultsError, match="'limited_by' is 'luck'; allowed: slo"):
        write_table(tmp_path / CAPACITY_FILE, [bad], CAPACITY_COLUMNS)


def test_every_search_verdict_is_an_allowed_limit() -> None:
    from bench.run.search import verdict

    kinds = {"slo", "throughput", "failed", "generator"}
    assert kinds | {"max_load", "none"} == set(LIMITS)
    assert verdict([StepResult(1, 1, 1, 1, 0.0)], SLO(50.0), 0.9).kind == "pass"


def test_results_readme_documents_the_capacity_columns() -> None:
    text = (ROOT / "results" / "README.md").read_text()
    assert schema_markdown(CAPACITY_COLUMNS) in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--slo-p99-ms", "0"], "--slo-p99-ms 0: must be > 0"),
        (["--slo-error-rate", "1.5"], "--slo-error-rate 1.5: must be [0, 1)"),
        (["--follow-min", "0"], "--follow-min 0: must be (0, 1]"),
        (["--resolution", "1"], "--resolution 1: must be (0, 1)"),
        (["--loads", "500", "--max-load-per-s", "100"], "--max-load-per-s 100: must be ≥"),
        (["--max-steps", "0"], "--max-steps 0: must be ≥ 1"),
        (["--server-cpus", "999"], "--server-cpus '999'"),
    ],
)
def test_bad_search_flags_print_one_line_and_exit_2(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--scenario", str(SMOKE), "--find-capacity", "--out", str(tmp_path / "x"), *extra]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "x").exists()


def test_a_tiny_real_search_writes_its_steps_and_capacity_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "search"
    argv = [
        "--scenario", str(SMOKE), "--codec", "protobuf", "--find-capacity", "--loads", "40",
        "--max-load-per-s", "80", "--repeat", "1", "--duration-s", "2", "--warmup-s", "0.5",
        "--sample-s", "0.25", "--set", "workload.send_rate_per_user_per_s=10",
        "--max-steps", "2", "--out", str(out),
    ]  # fmt: skip
    rc = run.main(argv)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    result = read_run(out)
    offers = [r["offered_per_s"] for r in result.summary]
    assert offers[0] == 40 and len(offers) == 2  # the step budget, whatever the machine did
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["search"]["results"]["protobuf"]
    if record["verdicts"]["40"]["verdict"] == "pass":  # up the ladder to the highest offer
        assert offers[1] == 80
    else:  # the first rung failed on a busy machine: the search steps down
        assert offers[1] < 40
    assert all("search step" in r["note"] for r in result.summary)
    (cap,) = read_table(out / CAPACITY_FILE, CAPACITY_COLUMNS)
    assert cap["codec"] == "protobuf" and cap["steps"] == len(offers)
    assert (
        cap["limited_by"] in LIMITS and cap["server_cpus"] == result.manifest["cpus"]["server_cpus"]
    )
    assert record["steps"][0]["phase"] == "ladder"
    assert [p["offered_per_s"] for p in manifest["points"]] == offers
    assert (
        "[search protobuf] step 1 (ladder)" in printed and "capacity per core, protobuf" in printed
    )
