"""``python -m bench run``: plan the points, run them in turn, print and write the run folder.

The progress lines, the closing table, the command line and the manifest; the
method is in :mod:`bench.run`'s docstring.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._support.args import BadInput, OneLineParser, csv_list, load_with_overrides
from bench._support.host import raise_nofile_limit
from bench._support.servers import sigterm_as_exit
from bench._support.tls import client_ca_file
from bench.run.figures import CPU_BOUND_PCT, LAG_P99_MAX_MS, MACHINE_BUSY_PCT
from bench.run.measure import run_point
from bench.run.points import CODECS, NAN, Point, deliver_bytes, load_shape
from bench.run.processes import Settings
from bench.run.window import FULL_SHARE
from chatcap.results import ResultsError, new_manifest, new_run_id, write_run
from chatcap.scenario import ScenarioError, to_toml


def progress_start(point: Point) -> str:
    return (
        f"[run] point {point.index}/{point.total} {point.codec:8} "
        f"{point.shape.offered_per_s:>7g}/s rep {point.replication} "
        f"({point.shape.users} users × {point.shape.send_rate_per_user_per_s:.3g}/s) …"
    )


def progress_end(row: Mapping[str, Any], point_s: float, elapsed_s: float) -> str:
    if str(row.get("note", "")).startswith("failed"):
        return f" FAILED ({point_s:.0f} s; {elapsed_s:.0f} s elapsed): {row['note']}"
    flag = "  GENERATOR-BOUND" if row.get("generator_bound") else ""
    return (
        f" acked {row['acked_per_s']:.1f}/s, ack p99 {row['ack_p99_ms']:.1f} ms, "
        f"server {row['server_cpu_us_per_msg']:.0f} µs/msg{flag} "
        f"({point_s:.0f} s; {elapsed_s:.0f} s elapsed)"
    )


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The end-of-run summary, one line per row."""
    head = (
        f"{'codec':9}{'offered/s':>10}{'rep':>4}{'acked/s':>9}{'deliv/s':>9}"
        f"{'ack p50':>9}{'ack p99':>9}{'srv p99':>9}{'errors':>8}{'µs/msg':>8}{'bytes':>6}  gen"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['codec']:9}{r['offered_per_s']:>10g}{r['replication']:>4}"
            f"{r['acked_per_s']:>9.1f}{r['delivered_per_s']:>9.0f}"
            f"{r['ack_p50_ms']:>9.2f}{r['ack_p99_ms']:>9.2f}"
            f"{r.get('server_ack_p99_ms', NAN):>9.2f}{r['error_rate']:>8.2%}"
            f"{r['server_cpu_us_per_msg']:>8.0f}{r['bytes_per_msg']:>6.0f}  "
            f"{'BOUND' if r.get('generator_bound') else 'ok'}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench run", description=__doc__.split("\n")[0])
    p.add_argument("--scenario", required=True, help="scenario TOML file")
    p.add_argument("--codec", default="json,protobuf", help="json, protobuf and/or mix")
    p.add_argument("--loads", default="", help="offered sends/s, e.g. 100,200,400")
    p.add_argument("--repeat", type=int, default=1, help="replications of every point")
    p.add_argument("--processes", type=int, default=1, help="Locust processes (--processes)")
    p.add_argument("--duration-s", type=float, default=None, help="run length of each point")
    p.add_argument("--warmup-s", type=float, default=None, help="cut from the window's start")
    p.add_argument("--sample-s", type=float, default=1.0, help="in-run scrape interval")
    p.add_argument("--max-users", type=int, default=None, help="cap on users (see docs)")
    p.add_argument("--out", default=None, help="the run folder (default results/<run-id>)")
    p.add_argument("--keep-db", action="store_true", help="keep each point's store")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="scenario override"
    )
    return p


@dataclass(frozen=True)
class Plan:
    settings: Settings
    points: list[Point]
    codecs: list[str]
    loads: list[float]
    repeat: int


def plan_run(args: argparse.Namespace, run_dir: Path) -> Plan:
    """Validate the arguments into a plan; raises BadInput or ScenarioError."""
    from sim.api import replication_seed

    scenario = load_with_overrides(args.scenario, args.set)
    codecs = csv_list(args.codec, str, "codec")
    bad = [c for c in codecs if c not in CODECS]
    if bad or not codecs:
        raise BadInput(f"--codec {args.codec!r}: choose from {', '.join(CODECS)}")
    loads = csv_list(args.loads, float, "loads") if args.loads else [scenario.offered_per_s]
    if args.repeat < 1 or args.processes < 1 or args.sample_s <= 0 or args.max_users == 0:
        raise BadInput("--repeat, --processes, --sample-s and --max-users must be > 0")
    if scenario.server.auth != "open":
        raise BadInput(f"{args.scenario}: server.auth must be 'open' for load tests")
    duration = args.duration_s if args.duration_s is not None else scenario.workload.duration_s
    warmup = args.warmup_s
    if warmup is None:  # the scenario's share of the run
        warmup = scenario.workload.warmup_s * duration / scenario.workload.duration_s
    if duration <= 0 or not 0 <= warmup < duration:
        raise BadInput(f"--duration-s {duration:g} / --warmup-s {warmup:g}: need 0 ≤ warm-up < run")
    max_users = args.max_users or min(scenario.server.max_connections_per_ip, 1000)
    shapes = [load_shape(load, scenario, max_users) for load in loads]
    total = args.repeat * len(loads) * len(codecs)
    points: list[Point] = []
    for rep in range(args.repeat):
        seed = replication_seed(scenario.seed, rep)
        for shape in shapes:
            for codec in codecs:
                points.append(Point(len(points) + 1, total, codec, shape, rep, seed))
    settings = Settings(
        scenario, run_dir / "scenario.toml", run_dir, args.processes, duration, warmup,
        args.sample_s, args.keep_db,
    )  # fmt: skip
    client_ca_file(scenario)  # a named CA that does not load is bad input, said now
    return Plan(settings, points, codecs, loads, args.repeat)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench run …``: every point, then the table; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    created = datetime.now(UTC)
    try:
        args = build_parser().parse_args(argv)
        run_dir = Path(args.out or Path("results") / new_run_id(created, Path(args.scenario).stem))
        if (run_dir / "manifest.json").exists():
            raise BadInput(f"--out {run_dir}: already holds a run; choose another folder")
        plan = plan_run(args, run_dir)
        manifest = run_manifest(plan, argv, created)
    except (BadInput, ScenarioError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return execute(plan, manifest)


def run_manifest(plan: Plan, argv: Sequence[str], created: datetime) -> dict[str, Any]:
    """The manifest: command, resolved scenario, loads, codecs, points, thresholds."""
    settings = plan.settings
    return new_manifest(
        settings.run_dir.name,
        ["python", "-m", "bench", "run", *argv],
        created.isoformat(),
        scenario=settings.scenario.to_dict(),
        seed=settings.scenario.seed,
        codecs=plan.codecs,
        loads=plan.loads,
        repeat=plan.repeat,
        processes=settings.processes,
        duration_s=settings.duration_s,
        warmup_s=settings.warmup_s,
        sample_s=settings.sample_s,
        points=[p.describe() for p in plan.points],
        thresholds={
            "generator_cpu_pct": CPU_BOUND_PCT,
            "schedule_lag_p99_ms": LAG_P99_MAX_MS,
            "machine_busy_pct": MACHINE_BUSY_PCT,
            "users_connected_share": FULL_SHARE,
        },
        layout="points/<codec>-<load>-r<replication>/: see results/README.md",
    )


def execute(plan: Plan, manifest: Mapping[str, Any]) -> int:
    """Run every point (progress line each), write the folder after each, print the table."""
    settings, scenario = plan.settings, plan.settings.scenario
    run_dir, run_id = settings.run_dir, str(manifest["run_id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    settings.scenario_path.write_text(to_toml(scenario, comments=False))
    raise_nofile_limit()
    print(
        f"[run] {run_id}: {len(plan.points)} point(s) — codecs {','.join(plan.codecs)}, loads "
        f"{','.join(f'{x:g}' for x in plan.loads)}/s, {plan.repeat} rep(s), "
        f"{settings.duration_s:g} s each (warm-up {settings.warmup_s:g} s), "
        f"{settings.processes} Locust process(es); {os.cpu_count()} CPUs shared by server "
        "and generator",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    w = scenario.workload
    try:
        with sigterm_as_exit():
            for point in plan.points:
                started = time.monotonic()
                print(progress_start(point), end="", flush=True)
                bpm = deliver_bytes(point.codec, w.body_bytes, w.codec_mix)
                row, _ = run_point(point, settings, run_id, bpm)
                rows.append(row)
                write_run(run_dir, manifest, rows)
                now = time.monotonic()
                print(progress_end(row, now - started, now - t0), flush=True)
    except KeyboardInterrupt:  # processes were stopped in their finally blocks
        print(f"\n[run] interrupted: {run_dir} holds the {len(rows)} finished point(s)")
        return 130
    print(format_table(rows))
    print(f"[run] wrote {run_dir}/ (manifest.json, summary.csv, points/)")
    failed = [r for r in rows if str(r.get("note", "")).startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
