"""Command line of the reference server.

The foundation milestone validates the scenario and prints what the server would run
with; the server itself (routes, sessions, store) is issue #3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from chatcap.scenario import ScenarioError, load_scenario


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server", description="chatcap reference server")
    p.add_argument("--scenario", required=True, help="scenario TOML file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--db", default=None, help="store path (overrides server.store.path)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    db = args.db or scenario.server.store.path
    print(
        f"scenario {scenario.name!r} is valid; would serve ws://{args.host}:{args.port}"
        f"/api/v1/ws with store {db}"
    )
    print("the server is not built yet (issue #3); nothing was started", file=sys.stderr)
    return 3
