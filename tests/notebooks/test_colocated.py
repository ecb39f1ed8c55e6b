"""The co-located layout: a generator sharing the server's cores is a competing load in
the model (``[sim] competing_cpu_share``), from its CPU measured per point; apart, none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sim
from bench.analysis.model import (
    competing_share,
    competing_shares,
    point_competing_share,
)
from chatcap.results import write_manifest
from chatcap.scenario import load_scenario_data
from sim.calibration import Costs


def test_a_generator_on_the_servers_one_core_takes_its_share() -> None:
    assert competing_share(0.3, 1.0, server_cores=1, processes=1) == pytest.approx(0.3)
    # half of its CPUs are the server's: half its CPU lands there
    assert competing_share(0.6, 0.5, server_cores=1, processes=1) == pytest.approx(0.3)


def test_cores_left_free_hold_the_server_first() -> None:
    # two shared cores, the generator on 0.8 of them: 1.2 cores left, one process needs 1
    assert competing_share(0.8, 1.0, server_cores=2, processes=1) == 0.0
    # two processes on those 1.2 cores: 0.6 each
    assert competing_share(0.8, 1.0, server_cores=2, processes=2) == pytest.approx(0.4)
    # never past 95 %
    assert competing_share(5.0, 1.0, server_cores=1, processes=1) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="server_cores"):
        competing_share(0.1, 1.0, server_cores=0, processes=1)


def point(isolated: bool, server: str, generator: str, pct: float) -> dict[str, object]:
    return {
        "codec": "json",
        "offered_per_s": 1000.0,
        "cpus": {
            "isolated": isolated,
            "server_cpus": server,
            "generator_cpus": generator,
            "server_cpus_allowed": server,
            "generator_cpus_allowed": {"41": generator},
        },
        "window": {"generator_cpu_pct": {"41": pct}},
    }


def test_a_point_apart_has_no_competing_load() -> None:
    assert point_competing_share(point(True, "1", "0", 80.0), processes=1) == 0.0


def test_a_point_on_one_shared_core_competes_with_the_generators_cpu() -> None:
    assert point_competing_share(point(False, "0", "0", 35.0), processes=1) == pytest.approx(0.35)
    # the generator on CPUs 0-1, the server on 1: half of its 70 % lands on the server's
    assert point_competing_share(point(False, "1", "0-1", 70.0), processes=1) == pytest.approx(
        0.35
    )
    # no window figures: nothing to charge
    bare = point(False, "0", "0", 35.0)
    bare["window"] = {}
    assert point_competing_share(bare, processes=1) == 0.0


def test_a_run_folder_gives_the_median_share_per_codec_and_load(tmp_path: Path) -> None:
    scenario = load_scenario_data({"name": "t", "workload": {"users": 10}})
    write_manifest(
        tmp_path,
        {
            "schema_version": 1,
            "run_id": "t",
            "created_utc": "2026-12-04T00:00:00Z",
            "git_sha": "x",
            "command": "test",
            "scenario": scenario.to_dict(),
        },
    )
    for rep, pct in enumerate((20.0, 30.0, 60.0)):
        folder = tmp_path / "points" / f"json-1000-r{rep}"
        folder.mkdir(parents=True)
        (folder / "point.json").write_text(json.dumps(point(False, "0", "0", pct)))
    assert competing_shares(tmp_path) == {("json", 1000.0): pytest.approx(0.30)}


def test_slowed_costs_scale_every_cpu_figure_and_no_wall_time() -> None:
    c = Costs(per_batch_wait_ms=0.5, cold_penalty_us_by_gap_ms={1.0: 10.0}, gc_pause_us=(50.0,))
    slow = c.slowed(2.0)
    assert slow.per_send_fixed_us == 2 * c.per_send_fixed_us
    assert slow.decode_us == {k: 2 * v for k, v in c.decode_us.items()}
    assert slow.cold_penalty_us_by_gap_ms == {1.0: 20.0} and slow.gc_pause_us == (100.0,)
    assert slow.per_batch_wait_ms == 0.5  # the hand-off's wait is wall time
    assert slow.store_commit_fixed_ms == c.store_commit_fixed_ms  # the scenario's, scaled apart
    with pytest.raises(ValueError, match="slowed"):
        c.slowed(0.5)


def test_a_competing_load_slows_the_models_loop_by_its_share() -> None:
    """Half the core taken: the model's loop CPU per acked message doubles (its costs,
    the commit on the loop included)."""
    base = load_scenario_data(
        {
            "name": "t",
            "workload": {"users": 20, "rooms": 2, "duration_s": 4.0, "warmup_s": 1.0},
            "server": {"store": {"commit_on": "loop"}},
            "sim": {"store_service": "deterministic"},
        }
    )
    plain = sim.run(base, seed=3)
    half = sim.run(base.with_overrides({"sim.competing_cpu_share": 0.5}), seed=3)
    # the same arrivals (one seed), every CPU cost twice: twice the loop's CPU
    assert half.cpu_window_s == pytest.approx(2 * plain.cpu_window_s, rel=0.02)
    assert half.requests["done_s"].sub(half.requests["sent_s"]).mean() > (
        plain.requests["done_s"].sub(plain.requests["sent_s"]).mean()
    )
