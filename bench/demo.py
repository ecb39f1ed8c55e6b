"""``make demo``: the main job, end to end, with progress.

Today (foundation milestone) it checks every shipped scenario and runs the codec
benchmark; later milestones add calibration, measured runs, the model and notebooks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from chatcap.scenario import ScenarioError, load_scenario

SCENARIOS = Path("scenarios")


def _step(n: int, total: int, text: str) -> None:
    print(f"[demo {n}/{total}] {text}", flush=True)


def check_scenarios(folder: Path = SCENARIOS) -> int:
    """Load every scenario file; print one line each; return the number that failed."""
    failed = 0
    for path in sorted(folder.glob("*.toml")):
        try:
            s = load_scenario(path)
        except ScenarioError as exc:
            failed += 1
            print(f"  FAIL {exc}")
            continue
        print(
            f"  ok   {path.name:<20} {s.offered_per_s:>8,.0f} sends/s offered, "
            f"{s.workload.users} users, {s.workload.rooms} rooms"
        )
    return failed


def main(quick: bool = False) -> int:
    from bench import codecs

    started = time.monotonic()
    total = 2
    _step(1, total, "checking scenarios/*.toml")
    if check_scenarios():
        print("demo: a shipped scenario does not load", file=sys.stderr)
        return 1
    _step(2, total, "codec benchmark (JSON vs Protobuf; bare library paths as reference)")
    status = codecs.main(["--out", "results/codecs"] + (["--quick"] if quick else []))
    print(f"[demo] done in {time.monotonic() - started:.0f} s; results under results/codecs/")
    return status
