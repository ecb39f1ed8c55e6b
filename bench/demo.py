"""``make demo``: the main job, end to end, with progress.

What it runs today (it grows with each milestone — calibration, measured runs, the
notebooks):

1. every shipped scenario is loaded and checked;
2. the codec benchmark (JSON vs Protobuf beside the bare library paths);
3. the model on a classic queue (M/M/c), held against Erlang C;
4. the model on the baseline scenario;
5. the server against a bare ``websockets`` server (CPU per message, RSS per connection).

Each step is its own command (shown as it starts), so a user can re-run any of them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from chatcap.scenario import ScenarioError, load_scenario

SCENARIOS = Path("scenarios")


def _step(n: int, total: int, text: str) -> None:
    print(f"\n[demo {n}/{total}] {text}", flush=True)


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
            f"  ok   {path.name:<24} {s.offered_per_s:>8,.0f} sends/s offered, "
            f"{s.workload.users} users, {s.workload.rooms} rooms"
        )
    return failed


def _run(args: list[str]) -> int:
    """Run one of our commands in its own process, showing the command line."""
    shown = " ".join(["python", *args])
    print(f"  $ {shown}", flush=True)
    return subprocess.call([sys.executable, *args])


def main(quick: bool = False) -> int:
    started = time.monotonic()
    steps: list[tuple[str, list[str]]] = [
        (
            "codec benchmark (JSON vs Protobuf; bare library paths as reference)",
            ["-m", "bench", "codecs", "--out", "results/codecs", *(["--quick"] if quick else [])],
        ),
        (
            "the model on a classic queue (M/M/c), held against Erlang C",
            [
                "-m",
                "sim",
                "--scenario",
                "scenarios/theory-mmc.toml",
                "--replications",
                "3",
                "--out",
                "results/demo-theory-mmc",
            ],
        ),
        (
            "the model on the baseline scenario (5 replications)",
            [
                "-m",
                "sim",
                "--scenario",
                "scenarios/baseline.toml",
                "--replications",
                "5",
                "--out",
                "results/demo-baseline-sim",
            ],
        ),
        (
            "the server beside a bare websockets server (CPU per message, RSS per connection)",
            ["-m", "bench", "server-overhead", "--quick", "--repeat", "1" if quick else "3"],
        ),
    ]
    total = len(steps) + 1
    _step(1, total, "checking scenarios/*.toml")
    if check_scenarios():
        print("demo: a shipped scenario does not load", file=sys.stderr)
        return 1
    failures = []
    for n, (title, args) in enumerate(steps, start=2):
        _step(n, total, title)
        if _run(args) != 0:
            failures.append(title)
    print(f"\n[demo] done in {time.monotonic() - started:.0f} s; run folders under results/")
    for title in failures:
        print(f"[demo] FAILED: {title}", file=sys.stderr)
    return 1 if failures else 0
