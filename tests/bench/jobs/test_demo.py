"""`make demo`: every shipped scenario loads (a bad one is reported), the summary's lines
from the capacity search's rows, and the whole pipeline at its quick size."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench import analysis as an
from bench.jobs import demo
from bench.jobs.demo import (
    QUICK,
    check_scenarios,
    search_command,
    summary_from_folder,
    summary_lines,
    write_accuracy,
    write_stages,
)
from bench.jobs.demo import main as demo_main
from chatcap.pipeline.stages import SEND_STAGES
from chatcap.results import CAPACITY_COLUMNS, CAPACITY_FILE, write_table

ROOT = Path(__file__).resolve().parents[3]


def test_every_shipped_scenario_passes_the_demo_check() -> None:
    assert check_scenarios(ROOT / "scenarios") == 0


def test_a_bad_scenario_fails_the_demo_check_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.toml").write_text("")
    (tmp_path / "bad.toml").write_text("[workload]\nusers = 0\n")
    assert check_scenarios(tmp_path) == 1
    assert "workload.users = 0" in capsys.readouterr().out


# ---------------------------------------------------------------------------- the summary


def capacity_rows() -> list[dict[str, Any]]:
    """``capacity.csv`` rows: json found its knee (SLO), protobuf ran out of generator."""
    common = {
        "run_id": "r", "scenario": "baseline", "source": "measured", "server_cores": 1,
        "server_cpus": "1", "generator_cpus": "0", "isolated": True, "slo_p99_ms": 50.0,
        "slo_error_rate": 0.001, "follow_min": 0.9, "steps": 9, "duration_s": 8.0,
        "warmup_s": 2.0,
    }  # fmt: skip
    json_row = common | {
        "codec": "json", "capacity_per_s": 1210.0, "ci_low_per_s": 1150.0,
        "ci_high_per_s": 1270.0, "per_server_core_per_s": 1210.0,
        "per_core_ci_low_per_s": 1150.0, "per_core_ci_high_per_s": 1270.0,
        "capacity_offered_per_s": 1200.0, "knee_per_s": 1350.0, "limited_by": "slo",
        "why": "ack_p99_ms 80 > 50 ms", "repeats": 3, "limit_offered_per_s": 1350.0,
        "limit_server_cpu_pct": 99.0, "limit_generator_cpu_pct": 70.0,
    }  # fmt: skip
    pb_row = common | {
        "codec": "protobuf", "capacity_per_s": 1600.0, "ci_low_per_s": 1580.0,
        "ci_high_per_s": 1620.0, "per_server_core_per_s": 1600.0,
        "per_core_ci_low_per_s": 1580.0, "per_core_ci_high_per_s": 1620.0,
        "capacity_offered_per_s": 1600.0, "knee_per_s": 1800.0, "limited_by": "generator",
        "why": "a Locust process used 97% of a core in the window (/proc)", "repeats": 3,
        "limit_offered_per_s": 1800.0, "limit_server_cpu_pct": 60.0,
        "limit_generator_cpu_pct": 97.0,
    }  # fmt: skip
    return [json_row, pb_row]


PER_LOAD = (
    ("acked throughput", "acked_per_s", an.THROUGHPUT_TOLERANCE),
    ("ack p50", "server_ack_p50_ms", an.ACK_P50_TOLERANCE),
    ("ack p99", "server_ack_p99_ms", an.ACK_P99_TOLERANCE),
    ("delivery p99", "deliver_p99_ms", an.DELIVERY_P99_TOLERANCE),
)


def accuracy_frame() -> pd.DataFrame:
    """Accuracy rows at one load per codec (json misses ack p99 at -30 %) and saturation."""
    items = []
    errors = {"json": (0.01, 0.1, -0.3, 0.2), "protobuf": (-0.02, 0.05, 0.15, -0.1)}
    for codec, errs in errors.items():
        for (label, metric, tol), rel in zip(PER_LOAD, errs, strict=True):
            items.append(
                {
                    "target": f"{label} within {tol:.0%}",
                    "codec": codec,
                    "offered_per_s": 100.0,
                    "metric": metric,
                    "measured": 1.0,
                    "predicted": 1.0 + rel,
                    "rel_error": rel,
                    "tolerance": tol,
                    "status": "pass" if abs(rel) <= tol else "miss",
                }
            )
        items.append(
            {
                "target": "saturation throughput within 10%",
                "codec": codec,
                "offered_per_s": 800.0,
                "metric": "acked_per_s",
                "measured": 560.0,
                "predicted": 600.0,
                "rel_error": 600 / 560 - 1,
                "tolerance": 0.1,
                "status": "pass",
            }
        )
    return pd.DataFrame(items)


def demo_summary() -> list[str]:
    return summary_lines(
        run_dir=Path("/r"),
        capacity=capacity_rows(),
        model_capacity={"json": 1000.0, "protobuf": 2200.0},  # users per core, at 1/s
        rate_per_user=1.0,
        accuracy=accuracy_frame(),
        latency_basis="server",
        gate="pass (no regression)",
    )


def test_the_summary_gives_measured_capacity_with_its_ci_and_the_model_beside_it() -> None:
    lines = demo_summary()
    assert len(lines) <= 10
    (json_line,) = [x for x in lines if x.startswith("capacity per core, json")]
    assert "1,210 sends/s measured (95 % CI 1,150–1,270;" in json_line
    assert "the SLO broke at 1,350/s: ack_p99_ms 80 > 50 ms" in json_line
    assert "model 1,000 sends/s, measured/model 1.21" in json_line
    assert "server CPU 1, generator CPU 0" in json_line
    assert not [x for x in lines if x.startswith("capacity") and "≥" in x]  # never "at least"


def test_a_generator_bound_codec_says_which_side_ran_out_and_by_how_much() -> None:
    (pb_line,) = [x for x in demo_summary() if x.startswith("capacity per core, protobuf")]
    assert (
        "not reached — generator-bound at 1,800 sends/s: Locust at 97 % of its cores; " in pb_line
    )
    assert "the server used 60 % of its core" in pb_line
    assert "the highest step it kept held the SLO: 1,600 sends/s (95 % CI 1,580–1,620)" in pb_line
    assert "model 2,200 sends/s (the generator ran out at 82% of it)" in pb_line
    assert "not CPU-bound" not in pb_line
    assert "measured/model" not in pb_line  # a lower bound is no ratio


def test_the_summary_gives_the_slo_the_model_error_saturation_and_the_gate() -> None:
    lines = demo_summary()
    text = "\n".join(lines)
    assert "SLO: p99 of ack and delivery ≤ 50 ms, error rate ≤ 0.10%, acked ≥ 90%" in text
    assert (
        "model error, json (1 loads): ack p50 median +10% (+10% … +10%); ack p99 median -30% "
        "(-30% … -30%); delivery p99 median +20% (+20% … +20%); acked/s median +1% "
        "(+1% … +1%); 1 MISS" in text
    )
    (pb_line,) = [x for x in lines if x.startswith("model error, protobuf")]
    assert "acked/s median -2%" in pb_line and "MISS" not in pb_line
    assert "json measured 560/s, model 600/s (+7%)" in text
    assert "9 pass, 1 miss, 0 n/a" in text
    assert not [x for x in lines if x.startswith("knee")]  # no knee rows given
    assert lines[-1] == "regression gate vs results/baseline: pass (no regression)"


def fake_report() -> an.AccuracyReport:
    """An accuracy report with one per-load item, as :func:`predict_and_check` gives."""
    item = an.AccuracyItem(
        "ack p50 within 15%", "json", 100.0, "server_ack_p50_ms", 1.0, 1.1, 0.1, 0.15, "pass"
    )
    return an.AccuracyReport((item,), "server", pd.DataFrame())


def test_the_accuracy_file_carries_the_knee_in_sends_per_s_per_core(tmp_path: Path) -> None:
    # the model: 1,000 json users per core at 1.2 sends/s each = 1,200/s against 1,210
    acc = write_accuracy(
        tmp_path, fake_report(), capacity_rows(), {"json": 1000.0, "protobuf": 2200.0}, 1.2
    )
    written = pd.read_csv(tmp_path / "accuracy.csv", keep_default_na=False, na_values=[""])
    assert written["target"].tolist() == acc["target"].tolist() == [
        "ack p50 within 15%", "knee within 10%", "knee within 10%",
    ]  # fmt: skip
    knee = written[written["target"] == "knee within 10%"].set_index("codec")
    assert knee.loc["json", "metric"] == "capacity_per_core_per_s"
    assert (knee.loc["json", "measured"], knee.loc["json", "predicted"]) == (1210.0, 1200.0)
    assert knee.loc["json", "status"] == "pass"
    assert knee.loc["protobuf", "status"] == "n/a"  # the generator ran out first
    assert "generator-bound" in knee.loc["protobuf", "note"]
    # at 1 send/s per user the model's 1,000/s is 17 % short of the measured 1,210/s
    low = write_accuracy(tmp_path, fake_report(), capacity_rows(), {"json": 1000.0}, 1.0)
    assert (
        low.set_index("target").loc["knee within 10%"].set_index("codec").loc["json", "status"]
        == "miss"
    )


def test_the_summary_counts_the_knee_and_gives_its_line(tmp_path: Path) -> None:
    acc = write_accuracy(
        tmp_path, fake_report(), capacity_rows(), {"json": 1000.0, "protobuf": 2200.0}, 1.0
    )
    lines = summary_lines(
        run_dir=Path("/r"), capacity=capacity_rows(), model_capacity={"json": 1000.0},
        rate_per_user=1.0, accuracy=acc, latency_basis="server", gate="skipped",
    )  # fmt: skip
    assert len(lines) <= 10
    (knee,) = [x for x in lines if x.startswith("knee")]
    assert knee.startswith("knee (capacity per server core, target ±10%): json measured 1,210/s")
    assert "model 1,000/s (-17% MISS)" in knee and "protobuf n/a (generator-bound" in knee
    assert "accuracy targets (server-side latency): 1 pass, 1 miss, 1 n/a" in "\n".join(lines)


def test_the_demo_writes_the_knee_rows_once_the_model_capacity_is_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's own wiring, every step faked: the search's capacity.csv and the model's
    capacity per core reach model/accuracy.csv and the summary's counts."""

    def fake_run(args: list[str]) -> int:
        if "calibrate" in args:
            out = Path(args[args.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "host.json").write_text("{}")
        elif "--find-capacity" in args:
            out = Path(args[args.index("--out") + 1])
            write_table(out / CAPACITY_FILE, capacity_rows(), CAPACITY_COLUMNS)
        return 0

    measured = pd.DataFrame({"codec": ["json"], "offered_per_s": [100.0]})
    monkeypatch.setattr(demo, "_run", fake_run)
    monkeypatch.setattr(
        demo, "predict_and_check", lambda *a: (measured, fake_report(), stage_frame())
    )
    monkeypatch.setattr(demo, "model_capacity", lambda *a: {"json": 1000.0, "protobuf": 2200.0})
    out = tmp_path / "demo"
    argv = ["--quick", "--no-gate", "--scenario", str(ROOT / "scenarios" / "smoke.toml")]
    assert demo_main([*argv, "--out", str(out)]) == 0
    acc = pd.read_csv(out / "model" / "accuracy.csv", keep_default_na=False, na_values=[""])
    knee = acc[acc["target"] == "knee within 10%"].set_index("codec")
    assert set(knee.index) == {"json", "protobuf"}
    rate = demo.load_scenario(ROOT / "scenarios" / "smoke.toml").workload.send_rate_per_user_per_s
    assert knee.loc["json", "predicted"] == pytest.approx(1000.0 * rate)
    assert knee.loc["json", "measured"] == 1210.0
    counts = acc["status"].value_counts()
    assert (
        f"{counts.get('pass', 0)} pass, {counts.get('miss', 0)} miss, {counts.get('n/a', 0)} n/a"
        in (out / "summary.md").read_text()
    )
    assert len(acc) == 3
    stages = pd.read_csv(out / "model" / "stages.csv", keep_default_na=False, na_values=[""])
    assert len(stages) == len(an.STAGE_ROWS)
    assert stages["status"].tolist() == stage_frame()["status"].tolist()
    assert an.stage_summary(stage_frame()) in (out / "summary.md").read_text()
    # the fake search wrote no summary.csv: the collector line says so, the demo goes on
    assert "collector: not compared (" in (out / "summary.md").read_text()


def stage_frame() -> pd.DataFrame:
    """A stage table at one json load: fanout misses by +45 %, the rest by -31 %."""
    joined = pd.DataFrame({"codec": ["json"], "offered_per_s": [100.0], "n_measured": [2]})
    for side, ack, shares in (
        ("measured", 1.0, dict.fromkeys(SEND_STAGES, 1.0)),
        ("predicted", 0.9, {"ingress": 1.1, "fanout": 1.45}),
    ):
        stages = {s: 0.1 * shares.get(s, 1.0) for s in SEND_STAGES}
        for stage, ms in stages.items():
            joined[f"{an.stage_column(stage)}_mean_{side}"] = ms
        joined[f"server_ack_mean_ms_mean_{side}"] = ack
        joined[f"acked_per_s_mean_{side}"] = 100.0
        joined[f"error_rate_mean_{side}"] = 0.0
    return an.stage_table(joined)


def test_the_summary_gives_the_stage_line_before_the_gate_in_eleven_lines_at_most(
    tmp_path: Path,
) -> None:
    # every line there is: two codecs' capacity and error lines, the knee, the stages
    acc = write_accuracy(
        tmp_path, an.AccuracyReport((), "server", pd.DataFrame()), capacity_rows(),
        {"json": 1000.0, "protobuf": 2200.0}, 1.0,
    )  # fmt: skip
    acc = pd.concat([accuracy_frame(), acc], ignore_index=True)
    line = write_stages(tmp_path, stage_frame())
    assert line == an.stage_summary(stage_frame())
    assert line == "stage means within 20 %: 4 of 6; worst fanout +45 % at 100/s json"
    lines = summary_lines(
        run_dir=Path("/r"), capacity=capacity_rows(), model_capacity={"json": 1000.0},
        rate_per_user=1.0, accuracy=acc, latency_basis="server", gate="skipped", stages=line,
    )  # fmt: skip
    assert len(lines) == 11  # the limit, one more than before the stage line
    assert lines[-2] == line and lines[-1].startswith("regression gate")
    assert [x for x in lines if x.startswith("knee")]
    written = pd.read_csv(tmp_path / "stages.csv", keep_default_na=False, na_values=[""])
    assert list(written.columns) == list(an.STAGE_COLUMNS) and len(written) == 6
    assert written.set_index("stage").loc["fanout", "status"] == "miss"
    # without a stage line the summary is as before
    assert not [x for x in demo_summary() if x.startswith("stage means")]


def test_a_generator_held_up_below_its_cpu_limit_is_said_to_be_held_up() -> None:
    late = capacity_rows()[1] | {"limit_generator_cpu_pct": 22.0, "why": "sends left late"}
    lines = summary_lines(
        run_dir=Path("/r"), capacity=[late], model_capacity={}, rate_per_user=1.0,
        accuracy=accuracy_frame(), latency_basis="server", gate="skipped",
    )  # fmt: skip
    assert "Locust at 22 % of its cores (not CPU-bound itself: its sends were held up" in lines[2]


def test_without_repeats_the_line_says_there_is_no_ci() -> None:
    one = capacity_rows()[0] | {"per_core_ci_low_per_s": math.nan, "repeats": 1}
    lines = summary_lines(
        run_dir=Path("/r"), capacity=[one], model_capacity={}, rate_per_user=1.0,
        accuracy=accuracy_frame(), latency_basis="server", gate="skipped",
    )  # fmt: skip
    assert "(no CI: 1 repeat;" in lines[2] and "model" not in lines[2]


def test_the_demo_search_uses_the_demo_slo_and_its_size() -> None:
    argv = search_command(Path("s.toml"), QUICK.loads, 3.0, 0.5, QUICK, Path("/o"))
    joined = " ".join(argv)
    assert (
        "--find-capacity --loads 40,160" in joined
        and "--follow-min 0.75" in joined
        and "--slo-p99-ms 50" in joined
    )
    assert "--slo-error-rate 0.001" in joined and f"--max-steps {QUICK.max_steps}" in joined
    assert f"--repeat {QUICK.repeats}" in joined


def test_the_demo_refuses_a_bad_ladder(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_main(["--loads", "100,-200"]) == 2
    assert "give positive loads" in capsys.readouterr().err
    assert demo_main(["--server-cpus", "999"]) == 2
    assert "--server-cpus '999'" in capsys.readouterr().err


def test_the_demo_pipeline_runs_end_to_end_on_the_smoke_scenario(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = ["-m", "bench", "demo", "--quick", "--scenario", "scenarios/smoke.toml"]
    proc = subprocess.run(
        [sys.executable, *argv, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list((out / "calibration").glob("*.json"))
    summary = pd.read_csv(out / "measured" / "summary.csv")
    assert set(summary["codec"]) == {"json", "protobuf"} and summary["offered_per_s"].nunique() >= 2
    capacity = pd.read_csv(out / "measured" / "capacity.csv")
    assert set(capacity["codec"]) == {"json", "protobuf"}
    done = summary_from_folder(out)
    assert set(done["predicted"]["codec"]) == {"json", "protobuf"}
    assert {
        "acked throughput within 5%",
        "ack p50 within 15%",
        "ack p99 within 25%",
        "delivery p99 within 25%",
        "saturation throughput within 10%",
        "knee within 10%",
    } <= set(done["accuracy"]["target"])
    knee = done["accuracy"][done["accuracy"]["target"] == "knee within 10%"]
    assert set(knee["codec"]) == {"json", "protobuf"}
    assert "capacity per core, json" in done["summary"] and "regression gate" in done["summary"]
    assert done["stages"] is not None and set(done["stages"]["stage"]) == set(an.STAGE_ROWS)
    assert "stage means" in done["summary"]
    assert (out / "gate" / "trials.csv").exists()
    for name in (
        "capacity-planning",
        "breakers-and-retries",
        "json-vs-protobuf",
        "model-vs-measured",
    ):
        assert (out / "notebooks" / f"{name}.html").stat().st_size > 10_000
        assert list((out / "notebooks" / name).glob("fig-*.png")), name
    assert "capacity per core" in proc.stdout


def test_only_a_search_that_failed_a_step_fails_the_demo() -> None:
    """A search that ran out of steps without a bound (``none``) is reported in the
    summary, not counted as a failure; one whose step could not be measured is."""
    rows = [
        {"codec": "json", "limited_by": "slo"},
        {"codec": "protobuf", "limited_by": "none"},
    ]
    assert demo.failed_searches(rows) == []
    assert demo.failed_searches([*rows, {"codec": "mix", "limited_by": "failed"}]) == ["mix"]
