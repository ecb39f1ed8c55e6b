"""Calibration's CPU sets: the server pinned to the server's set and the load clients to
the generator's while the server points run (read back from ``/proc`` and from this
process's own affinity), the sets and each side's CPU use in ``details``, and a bad
``--server-cpus`` as one line with exit status 2. Nothing here is about speed."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench._support.cpus import available_cpus, format_cpus, plan_cpus
from bench._support.procstat import cpus_allowed_list
from bench._support.servers import ServerProc, bench_scenario
from bench.jobs import calibrate
from bench.jobs.calibrate_fit import QUICK, Point, cpu_use

ROOT = Path(__file__).resolve().parents[3]
BASELINE = ROOT / "scenarios" / "baseline.toml"


def test_a_bad_server_cpu_list_is_one_line_naming_the_option_and_the_allowed_cpus() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "calibrate", "--server-cpus", "99"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2
    allowed = format_cpus(available_cpus())
    assert done.stderr == (
        f"error: --server-cpus '99': CPU 99 not available to this process; "
        f"allowed CPUs: {allowed}\n"
    )
    assert done.stdout == ""


@pytest.mark.skipif(len(available_cpus()) < 2, reason="isolation needs two CPUs")
def test_server_points_put_the_server_and_the_load_clients_on_their_own_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpus = plan_cpus()
    seen: list[tuple[str, tuple[int, ...]]] = []
    measure = calibrate.measure_point

    def spying(server: ServerProc, *args: Any, **kwargs: Any) -> Point:
        # the load client is started from this process, so it inherits this affinity
        seen.append((cpus_allowed_list(server.pid), tuple(sorted(os.sched_getaffinity(0)))))
        return measure(server, *args, **kwargs)

    monkeypatch.setattr(calibrate, "measure_point", spying)
    tiny = replace(QUICK, messages={1: 100, 2: 50, 21: 10}, lone_messages=20, timeout_s=30.0)
    before = available_cpus()
    points = calibrate.measure_server_points(bench_scenario(str(BASELINE)), tiny, tmp_path, cpus)

    assert available_cpus() == before
    assert seen and set(seen) == {(format_cpus(cpus.server), cpus.generator)}
    assert all(p.wall_s > 0 and p.server_cpu_s >= 0 and p.client_cpu_s > 0 for p in points)
    use = cpu_use(points)
    assert use["server_cpu_pct"] is not None and use["client_cpu_pct"] is not None
    assert use["client_cpu_pct"] > 0


def test_cpu_use_is_each_sides_cpu_over_the_timed_points_as_a_share_of_one_core() -> None:
    base = Point("json", 1, 0, 100, 0, 10.0, 1.0, 10.0)
    points = [
        replace(base, wall_s=2.0, server_cpu_s=1.0, client_cpu_s=0.5),
        replace(base, wall_s=2.0, server_cpu_s=1.0, client_cpu_s=1.5),
        base,  # not timed: left out
    ]
    assert cpu_use(points) == {"server_cpu_pct": 50.0, "client_cpu_pct": 50.0}
    assert cpu_use([base]) == {"server_cpu_pct": None, "client_cpu_pct": None}
