"""`make demo`'s first step: every shipped scenario loads; a bad one is reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.jobs.demo import capacity_per_core, check_scenarios, summary_from_folder, summary_lines
from bench.jobs.demo import main as demo_main

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


def measured_frame() -> pd.DataFrame:
    """Aggregated measured rows: json meets the SLO up to 400/s, protobuf at every load."""
    rows = []
    for codec, p99s in (("json", [5.0, 8.0, 20.0, 90.0]), ("protobuf", [4.0, 6.0, 9.0, 30.0])):
        for load, p99 in zip((100.0, 200.0, 400.0, 800.0), p99s, strict=True):
            rows.append(
                {
                    "codec": codec,
                    "offered_per_s": load,
                    "acked_per_s_mean": load * (0.99 if load < 800 or codec == "protobuf" else 0.7),
                    "server_ack_p99_ms_mean": p99,
                    "ack_p99_ms_mean": p99 * 2,
                    "error_rate_mean": 0.0,
                    "server_cpu_us_per_msg_mean": 500.0 + load / 10,
                }
            )
    return pd.DataFrame(rows)


def test_capacity_per_core_is_the_highest_load_meeting_the_slo() -> None:
    cap = capacity_per_core(measured_frame(), 2.0, 50.0, 0.001).set_index("codec")
    assert cap.loc["json", "sends_per_s_per_core"] == 400.0
    assert cap.loc["json", "users_per_core"] == 200.0
    assert not cap.loc["json", "bounded"]  # it failed at 800/s: a real capacity
    assert cap.loc["json", "cpu_us_per_msg"] == 540.0
    assert cap.loc["protobuf", "sends_per_s_per_core"] == 800.0
    assert cap.loc["protobuf", "bounded"]  # never failed: "at least"


def accuracy_frame() -> pd.DataFrame:
    items = []
    for codec, errs in (("json", (0.1, -0.3)), ("protobuf", (0.05, 0.15))):
        for q, rel in zip(("p50", "p99"), errs, strict=True):
            items.append(
                {
                    "target": f"ack {q} within 20%",
                    "codec": codec,
                    "offered_per_s": 100.0,
                    "metric": f"server_ack_{q}_ms",
                    "measured": 1.0,
                    "predicted": 1.0 + rel,
                    "rel_error": rel,
                    "status": "pass" if abs(rel) <= 0.2 else "miss",
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
                "status": "pass",
            }
        )
    return pd.DataFrame(items)


def test_the_summary_gives_capacity_error_per_load_saturation_and_the_gate() -> None:
    lines = summary_lines(
        run_dir=Path("/r"),
        capacity=capacity_per_core(measured_frame(), 2.0, 50.0, 0.001),
        model_capacity={"json": 250.0, "protobuf": 900.0},
        accuracy=accuracy_frame(),
        latency_basis="server",
        gate="pass (no regression)",
        slo_p99_ms=50.0,
    )
    assert len(lines) <= 10
    text = "\n".join(lines)
    assert "json    : measured 200 users (400 sends/s" in text and "model 250 users" in text
    assert "protobuf: measured ≥ 400 users" in text
    assert "json p50 +10% p99 -30% MISS; protobuf p50 +5% p99 +15%" in text
    assert "json measured 560/s, model 600/s (+7%)" in text
    assert "5 pass, 1 miss, 0 n/a" in text
    assert lines[-1] == "regression gate vs results/baseline: pass (no regression)"


def test_the_demo_refuses_too_few_loads(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_main(["--loads", "100,200,400"]) == 2
    assert "at least 4" in capsys.readouterr().err


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
    assert set(summary["codec"]) == {"json", "protobuf"} and summary["offered_per_s"].nunique() >= 4
    done = summary_from_folder(out)
    assert set(done["predicted"]["codec"]) == {"json", "protobuf"}
    assert {"ack p50 within 20%", "ack p99 within 20%"} <= set(done["accuracy"]["target"])
    assert "capacity per core, json" in done["summary"] and "regression gate" in done["summary"]
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
