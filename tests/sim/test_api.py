"""The model's Python API: reproducible frames, schema rows, sweeps on any executor."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from support_simcase import scenario

import sim
from chatcap.results import REQUEST_COLUMNS, SUMMARY_COLUMNS, write_table
from sim.calibration import DEFAULT_COSTS, CalibrationError, Costs, load_costs, save_costs
from sim.stats import deliver_bytes, delivery_quantiles


class InlineExecutor(Executor):
    """Runs each task at once, in this process (a stand-in for a pool or a cluster)."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def frames(result: sim.SimResult) -> list[pd.DataFrame]:
    return [result.requests, result.deliveries, result.timeseries]


# ---------------------------------------------------------------------------- run


def test_the_same_scenario_and_seed_give_identical_frames() -> None:
    s = scenario(client__retry__max_attempts=3, sim__store_service_ms=5.0)
    for first, second in zip(frames(sim.run(s, seed=11)), frames(sim.run(s, seed=11)), strict=True):
        assert_frame_equal(first, second)


def test_another_seed_gives_other_frames() -> None:
    s = scenario()
    a, b = sim.run(s, seed=11).requests, sim.run(s, seed=12).requests
    assert len(a) != len(b) or not a["sent_s"].equals(b["sent_s"])


def test_the_scenario_seed_is_the_default() -> None:
    s = scenario()
    assert_frame_equal(sim.run(s).requests, sim.run(s, seed=s.seed).requests)


def test_requests_have_the_results_schema_columns_and_valid_rows(tmp_path: Path) -> None:
    result = sim.run(scenario(server__rate_limit__algorithm="token_bucket"))
    assert list(result.requests.columns) == [c.name for c in REQUEST_COLUMNS]
    write_table(tmp_path / "requests.csv", result.requests.to_dict("records"), REQUEST_COLUMNS)
    acked = result.requests["outcome"] == "acked"
    assert result.requests.loc[~acked, "ack_ms"].isna().all()
    assert (result.requests.loc[acked, "ack_ms"] > 0).all()


def test_summary_has_a_mix_row_and_one_per_codec(tmp_path: Path) -> None:
    rows = sim.run(scenario()).summary(run_id="r1", replication=2)
    assert [r["codec"] for r in rows] == ["mix", "json", "protobuf"]
    assert {(r["run_id"], r["source"], r["replication"]) for r in rows} == {("r1", "sim", 2)}
    write_table(tmp_path / "summary.csv", rows, SUMMARY_COLUMNS)  # validates every row
    mix, json_row, pb_row = rows
    assert mix["acked_total"] == json_row["acked_total"] + pb_row["acked_total"]
    assert mix["offered_per_s"] == json_row["offered_per_s"] + pb_row["offered_per_s"] == 100
    assert json_row["bytes_per_msg"] > mix["bytes_per_msg"] > pb_row["bytes_per_msg"]
    assert (json_row["bytes_per_msg"], pb_row["bytes_per_msg"]) == tuple(
        deliver_bytes(120).values()
    )


def test_one_codec_gives_one_row() -> None:
    rows = sim.run(scenario(workload__codec_mix={"protobuf": 1})).summary()
    assert [r["codec"] for r in rows] == ["protobuf"]


def test_the_warm_up_is_cut_from_every_statistic() -> None:
    s = scenario(workload__warmup_s=3.0)
    result = sim.run(s)
    (mix, *_) = result.summary()
    req = result.requests
    measured = req[(req["sent_s"] >= 3.0) & (req["sent_s"] < 6.0)]
    assert mix["sent_total"] == len(measured)
    assert mix["duration_s"] == 3.0
    assert mix["acked_per_s"] == pytest.approx(mix["acked_total"] / 3.0)


def test_delivery_statistics_count_every_recipient() -> None:
    result = sim.run(scenario())
    (mix, *_) = result.summary()
    # rooms of 5: every member but the sending connection
    assert mix["delivered_per_s"] == pytest.approx(4 * mix["acked_per_s"], rel=0.02)
    assert mix["deliver_p50_ms"] <= mix["deliver_p99_ms"] < mix["ack_p99_ms"] + 1


def test_delivery_quantiles_by_bisection_agree_with_expanding() -> None:
    first = pd.Series([0.0, 1.0, 5.0]).to_numpy()
    count = pd.Series([3, 1000, 2]).to_numpy()
    expanded = delivery_quantiles(first, count, 0.01, [0.5, 0.99])
    from sim import stats

    bisected = [
        stats._bisect_quantile(first, count, 0.01, q, int(count.sum())) for q in (0.5, 0.99)
    ]
    assert bisected == pytest.approx(expanded, abs=0.011)


def test_duration_can_be_overridden_per_run() -> None:
    result = sim.run(scenario(), duration_s=3.0)
    assert result.scenario.workload.duration_s == 3.0
    assert result.requests["sent_s"].max() < 3.0


def test_a_calibration_file_sets_the_costs(tmp_path: Path) -> None:
    path = save_costs(Costs(per_send_fixed_us=100.0, host="lab"), tmp_path / "cal.json")
    assert load_costs(path).per_send_fixed_us == 100.0
    slow = sim.run(scenario(sim__calibration=str(path))).summary()[0]
    fast = sim.run(scenario()).summary()[0]
    expected_gap = 100.0 - DEFAULT_COSTS.per_send_fixed_us
    gap = slow["server_cpu_us_per_msg"] - fast["server_cpu_us_per_msg"]
    assert gap == pytest.approx(expected_gap, rel=0.01)


def test_a_bad_calibration_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text('{"decode_us": {"json": -1, "protobuf": 1}}')
    with pytest.raises(CalibrationError, match=r"decode_us\.json = -1"):
        load_costs(path)
    with pytest.raises(CalibrationError, match="not found"):
        sim.run(scenario(sim__calibration=str(tmp_path / "missing.json")))


def test_empirical_service_needs_samples_and_keeps_the_scenario_mean() -> None:
    s = scenario(
        sim__store_service="empirical",
        sim__store_service_ms=2.0,
        sim__store_concurrency=0,
        sim__cpu=False,
        server__store__batch_max=1,
        server__pool__size=50,  # no waiting: the ack latency is the commit time
        server__store__max_in_flight_batches=50,
    )
    with pytest.raises(ValueError, match="commit_samples_ms"):
        sim.run(s)
    result = sim.run(s, costs=Costs(commit_samples_ms=(1.0, 1.0, 1.0, 5.0)))
    ack_ms = result.requests["ack_ms"].round(9)
    assert sorted(ack_ms.unique()) == [1.0, 5.0]  # the samples' shape, scaled to mean 2 ms
    assert ack_ms.mean() == pytest.approx(2.0, rel=0.1)


# ---------------------------------------------------------------------------- sweeps

GRID = {"workload.send_rate_per_user_per_s": [2.0, 8.0], "server.pool.size": [1, 3]}


def test_a_sweep_on_a_stand_in_executor_matches_the_process_pool() -> None:
    s = scenario(workload__duration_s=3.0)
    inline = InlineExecutor()
    here = sim.sweep(s, GRID, replications=2, executor=inline)
    pooled = sim.sweep(s, GRID, replications=2)
    assert inline.submitted == 8
    assert_frame_equal(here, pooled)


def test_a_sweep_has_a_mean_and_a_confidence_interval_per_point_and_codec() -> None:
    s = scenario(workload__duration_s=3.0)
    points = sim.sweep(s, GRID, replications=3, executor=InlineExecutor())
    assert len(points) == 4 * 3  # points × (mix, json, protobuf)
    assert list(points.columns[:4]) == [*GRID, "codec", "n"]
    assert (points["n"] == 3).all()
    assert points.loc[0, "offered_per_s_mean"] == 40.0
    assert points.loc[0, "offered_per_s_ci95"] == 0.0
    assert (points["acked_per_s_ci95"] > 0).all()
    busier = points[(points["codec"] == "mix") & (points[GRID_RATE] == 8.0)]
    assert (busier["acked_per_s_mean"] > 150).all()


GRID_RATE = "workload.send_rate_per_user_per_s"


def test_sweep_rows_reproduce_with_run_and_their_seed() -> None:
    s = scenario(workload__duration_s=3.0)
    runs = sim.sweep_runs(s, {"server.pool.size": [1]}, replications=2, executor=InlineExecutor())
    row = runs[(runs["replication"] == 1) & (runs["codec"] == "mix")].iloc[0]
    again = sim.run(s.with_overrides({"server.pool.size": 1}), seed=int(row["seed"]))
    assert again.summary()[0]["acked_total"] == row["acked_total"]
    assert row["seed"] == sim.replication_seed(s.seed, 1) != sim.replication_seed(s.seed, 0)


def test_one_replication_has_no_confidence_interval() -> None:
    points = sim.sweep(scenario(workload__duration_s=2.0), {}, replications=1)
    assert math.isnan(points.loc[0, "acked_per_s_ci95"])


def test_progress_is_reported_for_every_task() -> None:
    calls: list[tuple[int, int]] = []
    sim.sweep_runs(
        scenario(workload__duration_s=2.0),
        {"server.pool.size": [1, 2]},
        replications=2,
        executor=InlineExecutor(),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_bad_grid_key_fails_before_anything_runs() -> None:
    inline = InlineExecutor()
    with pytest.raises(ValueError, match="unknown key 'nope'"):
        sim.sweep(scenario(), {"server.pool.nope": [1]}, executor=inline)
    assert inline.submitted == 0
