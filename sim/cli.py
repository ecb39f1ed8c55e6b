"""Command line of the SimPy model.

The foundation milestone validates the scenario; the model itself is issue #4.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from chatcap.scenario import ScenarioError, load_scenario


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim", description="chatcap SimPy model")
    p.add_argument("--scenario", required=True, help="scenario TOML file")
    p.add_argument("--out", default=None, help="run folder to write")
    args = p.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"scenario {scenario.name!r} is valid ({scenario.offered_per_s:g} sends/s offered)")
    print("the model is not built yet (issue #4); nothing was simulated", file=sys.stderr)
    return 3
