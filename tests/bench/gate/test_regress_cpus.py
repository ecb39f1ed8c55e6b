"""The gate's CPU sets: a real quick trial runs the server on the server's CPUs and the
load clients on the generator's (read back from ``/proc`` and this process's affinity),
its run folder's manifest records both sets and each side's CPU use, a bad
``--server-cpus`` is one line with exit status 2, and the verdict cautions when two runs'
sets differ. Nothing here is about speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench._support.cpus import available_cpus, format_cpus, plan_cpus
from bench._support.procstat import cpus_allowed_list
from bench._support.servers import ServerProc
from bench.gate import trials
from bench.gate.verdict import cpu_sets_caution

ROOT = Path(__file__).resolve().parents[3]
BASELINE = ROOT / "scenarios" / "baseline.toml"


def test_a_bad_server_cpu_list_is_one_line_and_exit_2_before_anything_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "regress", "--run", "--quick", "--server-cpus", "99"],
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
    assert "[regress]" not in done.stdout


@pytest.mark.skipif(len(available_cpus()) < 2, reason="isolation needs two CPUs")
def test_a_trial_runs_the_server_and_the_clients_on_their_own_cpus_and_records_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpus = plan_cpus()
    seen: list[tuple[str, tuple[int, ...]]] = []
    run_case = trials.run_case  # type: ignore[attr-defined]

    def spying(server: ServerProc, *args: Any) -> dict[str, Any]:
        # the load client is started from this process, so it inherits this affinity
        seen.append((cpus_allowed_list(server.pid), tuple(sorted(os.sched_getaffinity(0)))))
        return run_case(server, *args)

    monkeypatch.setattr(trials, "run_case", spying)
    config = trials.prepare_config("run", "iso", str(BASELINE), [], tmp_path, cpus)
    before = available_cpus()
    trials.run_interleaved([config], 1, trials.QUICK_SIZES, tmp_path)

    assert available_cpus() == before
    assert len(seen) == len(trials.SERVER_CASES)
    assert set(seen) == {(format_cpus(cpus.server), cpus.generator)}
    out = tmp_path / "folder"
    created = datetime.now(UTC)
    trials.write_run_folder(out, config, ["test"], created, trials.QUICK_SIZES)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cpus"] == cpus.describe() | {"server_cores": 1}
    (use,) = manifest["cpu_use"]
    assert use["trial"] == 0 and use["server_cpu_pct"] > 0 and use["client_cpu_pct"] > 0


def test_the_verdict_cautions_when_the_runs_cpu_sets_differ() -> None:
    pinned = {"cpus": {"server_cpus": "1", "generator_cpus": "0"}}
    assert cpu_sets_caution(pinned, pinned) == ""
    assert cpu_sets_caution({}, {}) == ""
    caution = cpu_sets_caution({}, pinned)
    assert caution == (
        "Caution: the runs' CPU sets differ (baseline: not recorded; "
        "candidate: server 1, clients 0)."
    )
