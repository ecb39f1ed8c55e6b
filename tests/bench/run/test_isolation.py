"""The run's CPU isolation: a real point with two Locust processes, the server pinned to
one CPU set and Locust (master and the workers it forks) to the other, read back from
``/proc``; ``point.json`` records the plan, what each process had, and each side's CPU
in the window; a plan that cannot isolate says so. No assertion is about speed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench._support.args import load_with_overrides
from bench._support.cpus import available_cpus, format_cpus, plan_cpus
from bench._support.metrics_scrape import Scrape
from bench.run.measure import run_point
from bench.run.points import Point, deliver_bytes, load_shape
from bench.run.processes import Settings, isolation_note
from bench.run.window import Sample, Window
from chatcap.scenario import to_toml

ROOT = Path(__file__).resolve().parents[3]
SMOKE = ROOT / "scenarios" / "smoke.toml"


def settings_for(tmp_path: Path, processes: int, server: str | None = None) -> Settings:
    scenario = load_with_overrides(str(SMOKE), ["workload.send_rate_per_user_per_s=10"])
    path = tmp_path / "scenario.toml"
    path.write_text(to_toml(scenario, comments=False))
    cpus = plan_cpus(server=server)
    return Settings(scenario, path, tmp_path, processes, 3.0, 0.5, 0.25, False, cpus)


@pytest.mark.skipif(len(available_cpus()) < 2, reason="isolation needs two CPUs")
def test_a_point_pins_the_server_and_every_locust_process_to_their_own_cpus(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, processes=2)
    assert settings.cpus.isolated and isolation_note(settings) == ""
    scenario = settings.scenario
    point = Point(1, 1, "json", load_shape(40, scenario, 1000), 0, scenario.seed)
    bpm = deliver_bytes("json", scenario.workload.body_bytes, {})
    before = available_cpus()

    row, info = run_point(point, settings, "iso", bpm)

    assert available_cpus() == before  # the orchestrator got its own set back
    assert not str(row["note"]).startswith("failed"), row
    cpus = info["cpus"]
    server_set, generator_set = (
        format_cpus(settings.cpus.server),
        format_cpus(settings.cpus.generator),
    )
    assert (cpus["server_cpus"], cpus["generator_cpus"]) == (server_set, generator_set)
    assert cpus["isolated"] is True and cpus["note"] == "" and cpus["server_cores"] == 1
    assert cpus["server_cpus_allowed"] == server_set  # read from /proc while it ran
    seen = cpus["generator_cpus_allowed"]
    assert len(seen) == 3, seen  # the master and the two workers it forked
    assert set(seen.values()) == {generator_set}, seen
    window = info["window"]
    assert window["server_cpu_pct"] > 0
    assert len(window["generator_cpu_pct"]) >= 1
    saved = json.loads((tmp_path / "points" / point.name / "point.json").read_text())
    assert saved["cpus"] == cpus


def test_a_plan_on_one_cpu_is_recorded_as_not_isolated_with_the_reason(tmp_path: Path) -> None:
    one = plan_cpus(available=available_cpus()[:1])
    settings = replace(settings_for(tmp_path, processes=1), cpus=one)
    assert not settings.cpus.isolated
    assert isolation_note(settings).startswith("not isolated: only CPU")
    assert settings.cpus.describe()["isolated"] is False


def test_settings_without_a_plan_get_the_default_split() -> None:
    scenario = load_with_overrides(str(SMOKE), [])
    settings = Settings(scenario, SMOKE, Path("."), 1, 1.0, 0.0, 1.0, False)
    assert settings.cpus == plan_cpus()


def cpu_scrape(acks: float, cpu_s: float) -> Scrape:
    return Scrape(
        {
            ("chatcap_ack_latency_seconds_count", ()): acks,
            ("chatcap_process_cpu_seconds_total", ()): cpu_s,
        },
        frozenset(),
    )


def test_the_window_reports_the_servers_cpu_as_a_share_of_one_core() -> None:
    start = Sample(0.0, cpu_scrape(0, 1.0))
    end = Sample(4.0, cpu_scrape(400, 3.0))  # 2 CPU-seconds in 4 s
    assert Window(start, end).server_cpu_pct() == pytest.approx(50.0)
