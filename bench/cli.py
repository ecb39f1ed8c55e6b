"""The ``python -m bench`` command line: one sub-command per job.

Sub-commands:

* ``check-scenario FILE [--set KEY=VALUE …] [--json]`` — validate a scenario and print it
  fully resolved (every default filled in, each key commented);
* ``scenario-reference`` — the Markdown table of every key (for scenarios/README.md);
* ``codecs [--quick] [--out DIR]`` — the codec micro-benchmark (:mod:`bench.micro.codec_bench`);
* ``server-overhead [--quick] …`` — the server against a bare ``websockets`` server
  (:mod:`bench.micro.server_overhead`; ``--help`` there);
* ``run …`` — measured runs of the server under Locust (:mod:`bench.run`);
* ``generator …`` — the load generator's own capacity (:mod:`bench.micro.genbench`);
* ``demo …`` — what ``make demo`` runs: calibrate, measure, predict, notebooks, summary
  (:mod:`bench.jobs.demo`);

Errors in input (a bad scenario, a bad override) print one line and exit with status 2;
no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bench._support.args import load_with_overrides
from chatcap.scenario import Scenario, ScenarioError, to_toml


def describe(s: Scenario) -> str:
    """A few derived figures a planner wants next to the file."""
    w = s.workload
    rs = w.room_size
    mean_size = rs.size if rs.distribution == "fixed" else (rs.min + rs.max) / 2
    memberships = w.rooms * mean_size / w.users
    fanout = s.offered_per_s * mean_size / max(memberships, 1.0)
    return "\n".join(
        [
            f"# scenario {s.name!r}: {s.description}",
            f"# offered sends      {s.offered_per_s:,.1f} /s "
            f"({w.users} users × {w.send_rate_per_user_per_s:g}/s, {w.arrival})",
            f"# rooms              {w.rooms} × ~{mean_size:g} members ({rs.distribution})",
            f"# deliveries (est.)  {fanout:,.0f} /s",
            f"# measured interval  {w.duration_s - w.warmup_s:g} s after {w.warmup_s:g} s warm-up",
        ]
    )


def cmd_check_scenario(args: argparse.Namespace) -> int:
    scenario = load_with_overrides(args.file, args.set)
    if args.json:
        print(json.dumps(scenario.to_dict(), indent=2, sort_keys=True))
    else:
        print(describe(scenario))
        print()
        print(to_toml(scenario), end="")
    return 0


def cmd_codecs(args: argparse.Namespace) -> int:
    from bench.micro import codec_bench

    argv = ["--out", args.out] + (["--quick"] if args.quick else [])
    return codec_bench.main(argv)


def cmd_scenario_reference(args: argparse.Namespace) -> int:
    from chatcap.scenario import reference_markdown

    print(reference_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-scenario", help="validate a scenario and print it resolved")
    p.add_argument("file", help="scenario TOML file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key, e.g. --set server.pool.size=8 (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    p.set_defaults(func=cmd_check_scenario)

    p = sub.add_parser("scenario-reference", help="print the key reference table (Markdown)")
    p.set_defaults(func=cmd_scenario_reference)

    p = sub.add_parser("codecs", help="codec micro-benchmark (bytes, ns per op)")
    p.add_argument("--out", default="results/codecs", help="parent folder of the run folder")
    p.add_argument("--quick", action="store_true", help="short run (for tests)")
    p.set_defaults(func=cmd_codecs)

    # sub-commands with their own parsers: listed here, their options passed through
    for name, help_text in PASS_THROUGH_HELP.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


PASS_THROUGH = {
    "server-overhead": "bench.micro.server_overhead",
    "run": "bench.run.cli",
    "generator": "bench.micro.genbench",
    "sim-speed": "bench.micro.sim_speed",
    "notebooks": "bench.jobs.notebooks",
    "calibrate": "bench.jobs.calibrate",
    "regress": "bench.gate.cli",
    "reliability": "bench.jobs.reliability",
    "demo": "bench.jobs.demo",
}
PASS_THROUGH_HELP = {
    "server-overhead": "server CPU per message vs a bare websockets server (echo, fan-out, RSS)",
    "run": "measured runs: server + Locust per (codec, load, repeat) → results/<run-id>/",
    "generator": "load generator capacity: one Locust process vs a bare sync echo loop",
    "sim-speed": "simulated sends per second vs a bare SimPy M/M/c; sweep timing",
    "notebooks": "run the notebooks headless → results/notebooks/<id>/; --check: no outputs",
    "calibrate": "measure per-operation costs for the model → results/calibration/<host>.json",
    "regress": "statistical regression gate (Mann-Whitney + 10 %% floor); --run, --quality",
    "reliability": "the reliability suite at full size → results/reliability/<run-id>.md",
    "demo": "what `make demo` runs: calibrate, measure, predict, notebooks, summary",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASS_THROUGH:
        import importlib

        module = importlib.import_module(PASS_THROUGH[argv[0]])
        return int(module.main(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
