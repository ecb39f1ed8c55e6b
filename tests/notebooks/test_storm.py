"""The retry storm measured (bench.analysis.resilience): the clients' per-second goodput
read from a run folder, on the server's clock, and checked against the model over the
recovery window — on synthetic run folders and frames; and the notebook's section 3.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
import support_nbcase

from bench.analysis.resilience import (
    measured_goodput,
    recovery_window,
    server_started_unix_s,
    storm_check,
)
from bench.jobs import notebooks
from bench.load.report import ProcessStats, merge_parts
from chatcap.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
STARTED = 1_800_000_000.25  # the Locust run's start (Unix s)
SERVER_LEAD_S = 0.75  # the server started this long before it
SPIKE = (10.0, 13.0)  # the scenario's episode, on the server's clock


def log_line(unix_s: float) -> str:
    """The server's ``server.started`` log line at ``unix_s`` (its local-time format)."""
    stamp = datetime.fromtimestamp(unix_s)
    return (
        f"ts={stamp:%Y-%m-%d %H:%M:%S},{stamp.microsecond // 1000:03d} level=INFO "
        "logger=chatcap.server "
        "event=server.started url=ws://127.0.0.1:1/api/v1/ws scenario=retry-storm\n"
    )


def storm_document(recovers: bool, seconds: int = 42) -> dict[str, Any]:
    """A chat.json whose clients sent 300/s and were answered in time except during the
    spike (server clock) — and, unless ``recovers``, ever after, retrying 8×."""
    stats = ProcessStats(STARTED, 0.0, started_ns=0)
    for i in range(seconds):
        at_ns = i * NS + NS // 2  # mid-second of the run's clock
        server_t = i + 0.5 + SERVER_LEAD_S
        down = server_t >= SPIKE[0] and (not recovers or server_t < SPIKE[1])
        stats.series.add("sent", at_ns, 300)
        stats.series.add("attempts", at_ns, 2400 if down else 300)
        stats.series.add("goodput", at_ns, 3 if down else 300)
        stats.series.add("timeouts", at_ns, 2397 if down else 0)
        if down:
            stats.series.add_error("overloaded", at_ns, 4)
    part = stats.part(0, STARTED + seconds - 0.1, 0.0)
    return merge_parts([part], {"codec": "json"}, "local")


def storm_run(tmp_path: Path, name: str, recovers: bool, server_log: bool = True) -> Path:
    run_dir = support_nbcase.measured_run(
        tmp_path / name,
        loads=(300.0,),
        codecs=("json",),
        replications=1,
        scenario_file="scenarios/retry-storm.toml",
        histograms=False,
    )
    pdir = run_dir / "points" / "json-300-r0"
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "chat.json").write_text(json.dumps(storm_document(recovers)))
    if server_log:
        (pdir / "server.stderr").write_text(log_line(STARTED - SERVER_LEAD_S))
    return run_dir


def model_frame(recovers: bool, replications: int = 2) -> pd.DataFrame:
    """The model's time series shape: rows t_s = 1 … 40 per replication."""
    rows = []
    for r in range(replications):
        for t in range(1, 41):
            down = t > SPIKE[0] and (not recovers or t <= SPIKE[1])
            acked = 0.0 if down else 300.0 - r  # replications differ a little
            sent = 2400.0 if down else 300.0
            rows.append({"replication": r, "t_s": float(t), "offered_per_s": 300.0,
                         "acked_per_s": acked, "sent_per_s": sent})  # fmt: skip
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- the window


def test_the_recovery_window_is_the_storm_tests_well_after() -> None:
    storm = load_scenario(ROOT / "scenarios" / "retry-storm.toml")
    assert recovery_window(storm) == (25.0, 40.0)
    assert recovery_window(storm, after_s=2.0) == (15.0, 40.0)
    with pytest.raises(ValueError, match=r"workload.duration_s = 40 ends before the recovery"):
        recovery_window(storm, after_s=30.0)
    calm = load_scenario(ROOT / "scenarios" / "baseline.toml")
    with pytest.raises(ValueError, match=r"no server.faults.episodes, so no recovery window"):
        recovery_window(calm)


# ---------------------------------------------------------------------------- measured_goodput


def test_measured_goodput_is_per_second_on_the_servers_clock(tmp_path: Path) -> None:
    run_dir = storm_run(tmp_path, "storm", recovers=False)
    pdir = run_dir / "points" / "json-300-r0"
    assert server_started_unix_s(pdir) == pytest.approx(STARTED - SERVER_LEAD_S, abs=1e-3)
    m = measured_goodput(run_dir)
    assert set(m["point"]) == {"json-300-r0"} and set(m["clock"]) == {"server"}
    assert (m["codec"] == "json").all() and (m["load_per_s"] == 300.0).all()
    assert m["server_offset_s"].iloc[0] == pytest.approx(SERVER_LEAD_S, abs=1e-3)
    # whole seconds inside the run only: the origin's second began 0.25 s before the
    # start (left out), the last one (the 42nd) ends at STARTED + 41.75, before the stop
    assert m["t_run_s"].min() == pytest.approx(0.75 + 1)
    assert m["t_run_s"].max() == pytest.approx(0.75 + 41)
    assert (m["t_s"] - m["t_run_s"]).to_list() == pytest.approx([SERVER_LEAD_S] * 41, abs=1e-3)
    assert (m["offered_per_s"] == 300.0).all()
    down = m[m["t_s"] > SPIKE[0] + 1]
    up = m[m["t_s"] <= SPIKE[0]]
    assert (down["goodput_per_s"] == 3.0).all() and (down["attempts_per_s"] == 2400.0).all()
    assert (down["errors_per_s"] == 4.0).all() and (down["timeouts_per_s"] == 2397.0).all()
    assert (up["goodput_per_s"] == 300.0).all() and (up["errors_per_s"] == 0.0).all()


def test_the_seconds_after_the_users_began_to_stop_are_left_out(tmp_path: Path) -> None:
    run_dir = storm_run(tmp_path, "stopping", recovers=True)
    chat = run_dir / "points" / "json-300-r0" / "chat.json"
    doc = json.loads(chat.read_text())
    doc["series"]["stopping_unix_s"] = STARTED + 30.5  # Locust began to stop the users
    chat.write_text(json.dumps(doc))
    m = measured_goodput(run_dir)
    assert m["t_run_s"].max() == pytest.approx(0.75 + 29)  # the last second ending before


def test_without_the_servers_log_line_time_is_the_locust_runs(tmp_path: Path) -> None:
    m = measured_goodput(storm_run(tmp_path, "nolog", recovers=True, server_log=False))
    assert set(m["clock"]) == {"locust"} and m["server_offset_s"].isna().all()
    assert (m["t_s"] == m["t_run_s"]).all()


def test_points_without_a_series_are_left_out(tmp_path: Path) -> None:
    run_dir = storm_run(tmp_path, "old", recovers=True)
    chat = run_dir / "points" / "json-300-r0" / "chat.json"
    chat.write_text(json.dumps({**json.loads(chat.read_text()), "series": None}))
    m = measured_goodput(run_dir)
    assert m.empty and "goodput_per_s" in m.columns


# ---------------------------------------------------------------------------- storm_check


def test_a_measured_storm_that_stays_down_shares_the_models_fate(tmp_path: Path) -> None:
    measured = measured_goodput(storm_run(tmp_path, "storm", recovers=False))
    check = storm_check(measured, model_frame(recovers=False), (25.0, 40.0))
    row = check.iloc[0]
    assert row["window"] == "(25, 40]"
    assert row["measured_goodput_per_s"] == pytest.approx(3.0)
    assert row["modelled_goodput_per_s"] == 0.0
    assert math.isinf(row["rel_error"]) and not row["within"]  # no relative error to 0
    assert row["measured_share"] == pytest.approx(0.01) and row["modelled_share"] == 0.0
    assert row["measured_stays_down"] and row["modelled_stays_down"] and row["same_fate"]
    assert row["measured_seconds"] == 15 and row["modelled_seconds"] == 30  # 2 replications


def test_a_recovery_within_15_percent_passes_and_one_outside_does_not(tmp_path: Path) -> None:
    measured = measured_goodput(storm_run(tmp_path, "fixed", recovers=True))
    model = model_frame(recovers=True)  # 300 and 299 acks/s: a mean of 299.5
    row = storm_check(measured, model, (25.0, 40.0)).iloc[0]
    assert row["rel_error"] == pytest.approx(300.0 / 299.5 - 1.0) and row["within"]
    assert not row["measured_stays_down"] and not row["modelled_stays_down"]
    assert row["same_fate"]
    # the same measurement against a model that says more: 20 % short, outside 15 %
    richer = model.assign(acked_per_s=model["acked_per_s"] * 1.25)
    row = storm_check(measured, richer, (25.0, 40.0)).iloc[0]
    assert row["rel_error"] == pytest.approx(300.0 / (1.25 * 299.5) - 1.0)
    assert not row["within"]
    assert storm_check(measured, richer, (25.0, 40.0), tolerance=0.25).iloc[0]["within"]
    # and a model that stays down where the measurement recovers: another fate
    row = storm_check(measured, model_frame(recovers=False), (25.0, 40.0)).iloc[0]
    assert not row["same_fate"] and row["modelled_stays_down"]


def test_the_window_is_open_at_its_start_and_closed_at_its_end() -> None:
    model = model_frame(recovers=True, replications=1)
    one = pd.DataFrame({"t_s": [25.0, 25.5, 40.0, 40.5], "offered_per_s": 300.0,
                        "goodput_per_s": [0.0, 100.0, 200.0, 0.0]})  # fmt: skip
    row = storm_check(one, model, (25.0, 40.0)).iloc[0]
    assert row["measured_seconds"] == 2 and row["measured_goodput_per_s"] == 150.0
    assert row["modelled_seconds"] == 15  # t_s 26 … 40
    empty = storm_check(one.iloc[:0], model, (25.0, 40.0)).iloc[0]
    assert math.isnan(empty["measured_goodput_per_s"]) and not empty["within"]
    assert not empty["same_fate"]


def test_bad_arguments_are_one_clear_error() -> None:
    model = model_frame(recovers=True, replications=1)
    measured = model.rename(columns={"acked_per_s": "goodput_per_s"})
    with pytest.raises(ValueError, match=r"window = \(40.0, 25.0\): expected \(start, end\)"):
        storm_check(measured, model, (40.0, 25.0))
    with pytest.raises(ValueError, match=r"tolerance = 0.0: must be > 0"):
        storm_check(measured, model, (25.0, 40.0), tolerance=0.0)
    with pytest.raises(ValueError, match=r"down_share = 1.5: expected 0 < share ≤ 1"):
        storm_check(measured, model, (25.0, 40.0), down_share=1.5)
    with pytest.raises(ValueError, match=r"measured frame: no column goodput_per_s"):
        storm_check(model, model, (25.0, 40.0))
    with pytest.raises(ValueError, match=r"modelled frame: no column acked_per_s"):
        storm_check(measured, measured, (25.0, 40.0))


# ---------------------------------------------------------------------------- the notebook


def run_notebook(tmp_path: Path, **params: Any) -> tuple[str, int]:
    """breakers-and-retries, quick, with ``params``: its text outputs and figure count."""
    path = notebooks.NOTEBOOK_DIR / "breakers-and-retries.ipynb"
    result = notebooks.execute_notebook(path, tmp_path / "out", {"quick": True, **params})
    assert result.ok, result.error
    assert result.executed is not None
    texts = []
    for cell in nbformat.read(result.executed, as_version=4).cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            texts += [
                data.get("text/markdown", ""),
                data.get("text/plain", ""),
                out.get("text", ""),
            ]
    return "\n".join(texts), len(result.figures)


def test_the_notebook_overlays_both_measured_storms_and_checks_them(tmp_path: Path) -> None:
    storm = storm_run(tmp_path, "storm", recovers=False)
    fixed = storm_run(tmp_path, "fixed", recovers=True)
    text, figures = run_notebook(
        tmp_path, measured_storm_dir=str(storm), measured_fixed_dir=str(fixed)
    )
    assert "**The measured storm was not run**" not in text
    assert "- **as configured**: over t ∈ (25, 40] s the clients got 3.0 acks/s in time" in text
    assert "- **all fixes**: over t ∈ (25, 40] s the clients got 300.0 acks/s in time" in text
    assert "measured 1% of the offered load (stays down)" in text
    assert "measured 100% of the offered load (recovers)" in text
    assert figures == 3  # the outage, the model's storm, the overlay


def test_without_measured_folders_the_notebook_says_how_to_make_them(tmp_path: Path) -> None:
    text, figures = run_notebook(tmp_path)
    assert "**The measured storm was not run**" in text
    assert "python -m bench run --scenario scenarios/retry-storm.toml --codec json" in text
    assert "--scenario scenarios/retry-storm-fixed.toml" in text
    assert figures == 2
