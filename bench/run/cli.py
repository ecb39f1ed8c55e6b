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
from bench._support.cpus import add_cpu_arguments, cpu_plan_from_args
from bench._support.host import raise_nofile_limit
from bench._support.servers import sigterm_as_exit
from bench._support.tls import client_ca_file
from bench.run.figures import (
    CPU_BOUND_PCT,
    LAG_P99_MAX_MS,
    MACHINE_BUSY_PCT,
    capacity_row,
    step_result,
)
from bench.run.measure import run_point
from bench.run.points import CODECS, NAN, Point, deliver_bytes, load_shape
from bench.run.processes import Settings, isolation_note
from bench.run.search import (
    FOLLOW_MIN,
    SLO,
    SLO_ERROR_RATE,
    SLO_P99_MS,
    SearchPlan,
    SearchResult,
    StepResult,
    find_capacity,
)
from bench.run.window import FULL_SHARE
from chatcap.results import (
    CAPACITY_COLUMNS,
    CAPACITY_FILE,
    ResultsError,
    new_manifest,
    new_run_id,
    write_run,
    write_table,
)
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
    p.add_argument(
        "--loads",
        default="",
        help="offered sends/s, e.g. 100,200,400 (with --find-capacity: the coarse ladder; "
        "default: the scenario's offered load)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="replications of every point (1); with --find-capacity: measurements of the "
        "capacity step and of the knee (3)",
    )
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
    add_cpu_arguments(p)
    s = p.add_argument_group("capacity search (bench.run.search)")
    s.add_argument(
        "--find-capacity",
        action="store_true",
        help="per codec, raise the offered load (the --loads ladder, then doubling; then "
        "bisection near the knee) until the SLO breaks or acked throughput stops following "
        "the offer; writes capacity.csv",
    )
    s.add_argument(
        "--slo-p99-ms", type=float, default=SLO_P99_MS,
        help=f"SLO: p99 of ack and of delivery latency, ms ({SLO_P99_MS:g})",
    )  # fmt: skip
    s.add_argument(
        "--slo-error-rate", type=float, default=SLO_ERROR_RATE,
        help=f"SLO: share of send attempts not acked, 0..1 ({SLO_ERROR_RATE:g})",
    )  # fmt: skip
    s.add_argument(
        "--follow-min", type=float, default=FOLLOW_MIN,
        help=f"acked ÷ offered below this: throughput stopped following ({FOLLOW_MIN:g})",
    )  # fmt: skip
    s.add_argument(
        "--resolution", type=float, default=0.1,
        help="bisect until the knee's bracket is within this share of its low end (0.1)",
    )  # fmt: skip
    s.add_argument(
        "--max-load-per-s", type=float, default=50_000.0,
        help="the highest offer the search tries, sends/s (50000)",
    )  # fmt: skip
    s.add_argument("--max-steps", type=int, default=20, help="measurements per codec, at most (20)")
    return p


@dataclass(frozen=True)
class Plan:
    settings: Settings
    points: list[Point]
    codecs: list[str]
    loads: list[float]
    repeat: int
    max_users: int = 1000
    search: SearchPlan | None = None


def plan_run(args: argparse.Namespace, run_dir: Path) -> Plan:
    """Validate the arguments into a plan; raises BadInput or ScenarioError."""
    from sim.api import replication_seed

    scenario = load_with_overrides(args.scenario, args.set)
    codecs = csv_list(args.codec, str, "codec")
    bad = [c for c in codecs if c not in CODECS]
    if bad or not codecs:
        raise BadInput(f"--codec {args.codec!r}: choose from {', '.join(CODECS)}")
    loads = csv_list(args.loads, float, "loads") if args.loads else [scenario.offered_per_s]
    repeat = args.repeat if args.repeat is not None else (3 if args.find_capacity else 1)
    if repeat < 1 or args.processes < 1 or args.sample_s <= 0 or args.max_users == 0:
        raise BadInput("--repeat, --processes, --sample-s and --max-users must be > 0")
    cpus = cpu_plan_from_args(args)
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
    search = search_plan(args, loads, repeat) if args.find_capacity else None
    total = repeat * len(loads) * len(codecs)
    points: list[Point] = []
    for rep in range(repeat if search is None else 0):  # a search plans as it goes
        seed = replication_seed(scenario.seed, rep)
        for shape in shapes:
            for codec in codecs:
                points.append(Point(len(points) + 1, total, codec, shape, rep, seed))
    settings = Settings(
        scenario, run_dir / "scenario.toml", run_dir, args.processes, duration, warmup,
        args.sample_s, args.keep_db, cpus,
    )  # fmt: skip
    client_ca_file(scenario)  # a named CA that does not load is bad input, said now
    return Plan(settings, points, codecs, loads, repeat, max_users, search)


def search_plan(args: argparse.Namespace, loads: Sequence[float], repeat: int) -> SearchPlan:
    """The capacity search's plan from the flags; bad values name their flag."""
    checks = (
        ("--slo-p99-ms", args.slo_p99_ms, args.slo_p99_ms > 0, "> 0"),
        ("--slo-error-rate", args.slo_error_rate, 0 <= args.slo_error_rate < 1, "[0, 1)"),
        ("--follow-min", args.follow_min, 0 < args.follow_min <= 1, "(0, 1]"),
        ("--resolution", args.resolution, 0 < args.resolution < 1, "(0, 1)"),
        ("--max-load-per-s", args.max_load_per_s, args.max_load_per_s >= max(loads), "≥ --loads"),
        ("--max-steps", args.max_steps, args.max_steps >= 1, "≥ 1"),
    )
    for flag, value, ok, allowed in checks:
        if not ok:
            raise BadInput(f"{flag} {value:g}: must be {allowed}")
    return SearchPlan(
        slo=SLO(args.slo_p99_ms, args.slo_error_rate),
        ladder=tuple(sorted(loads)),
        max_load_per_s=args.max_load_per_s,
        min_load_per_s=min(1.0, min(loads)),
        rel_tol=args.resolution,
        repeats=repeat,
        max_steps=args.max_steps,
        follow_min=args.follow_min,
    )


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
    return execute_search(plan, manifest) if plan.search else execute(plan, manifest)


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
        cpus=settings.cpus.describe() | {"server_cores": settings.cpus.server_cores()},
        search=search_manifest(plan.search) if plan.search else None,
        layout="points/<codec>-<load>-r<replication>/: see results/README.md",
    )


def search_manifest(search: SearchPlan) -> dict[str, Any]:
    """The search's plan as plain data (the manifest's ``search``)."""
    return {
        "slo": {"p99_ms": search.slo.p99_ms, "error_rate": search.slo.error_rate,
                "metrics": list(search.slo.metrics)},
        "ladder": list(search.ladder), "grow": search.grow,
        "max_load_per_s": search.max_load_per_s, "min_load_per_s": search.min_load_per_s,
        "resolution": search.rel_tol, "repeats": search.repeats,
        "max_steps": search.max_steps, "follow_min": search.follow_min,
        "results": {},
    }  # fmt: skip


def _header(plan: Plan, run_id: str, what: str) -> str:
    settings, cpus = plan.settings, plan.settings.cpus
    where = cpus.describe()
    apart = "apart" if cpus.isolated else "NOT apart"
    return (
        f"[run] {run_id}: {what} — codecs {','.join(plan.codecs)}, "
        f"{settings.duration_s:g} s each (warm-up {settings.warmup_s:g} s), "
        f"{settings.processes} Locust process(es); server on CPU {where['server_cpus']}, "
        f"generator on CPU {where['generator_cpus']} ({apart}; {os.cpu_count()} CPUs)"
    )


def _with_note(row: dict[str, Any], *notes: str) -> dict[str, Any]:
    parts = [n for n in (str(row.get("note") or ""), *notes) if n]
    row["note"] = "; ".join(parts)
    return row


def execute(plan: Plan, manifest: Mapping[str, Any]) -> int:
    """Run every point (progress line each), write the folder after each, print the table."""
    settings, scenario = plan.settings, plan.settings.scenario
    run_dir, run_id = settings.run_dir, str(manifest["run_id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    settings.scenario_path.write_text(to_toml(scenario, comments=False))
    raise_nofile_limit()
    loads = ",".join(f"{x:g}" for x in plan.loads)
    what = f"{len(plan.points)} point(s) at {loads}/s, {plan.repeat} rep(s)"
    print(_header(plan, run_id, what), flush=True)
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
                rows.append(_with_note(row, isolation_note(settings)))
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


class _Searcher:
    """One codec's ``measure(offered)`` for :func:`find_capacity`: a point per call (its
    replication counts the calls at that offer), the row written, progress printed."""

    def __init__(
        self, plan: Plan, manifest: dict[str, Any], codec: str, rows: list[dict[str, Any]]
    ) -> None:
        self.plan, self.manifest, self.codec, self.rows = plan, manifest, codec, rows
        self.reps: dict[float, int] = {}
        self.phase, self.step = "", 0
        self.t0 = time.monotonic()
        w = plan.settings.scenario.workload
        self.bpm = deliver_bytes(codec, w.body_bytes, w.codec_mix)

    def announce(self, step: int, phase: str, offered: float) -> None:
        self.step, self.phase = step, phase

    def seed_of(self, replication: int) -> int:
        from sim.api import replication_seed

        return int(replication_seed(self.plan.settings.scenario.seed, replication))

    def __call__(self, offered: float) -> StepResult:
        settings, cpus = self.plan.settings, self.plan.settings.cpus
        rep = self.reps.get(offered, 0)
        self.reps[offered] = rep + 1
        shape = load_shape(offered, settings.scenario, self.plan.max_users)
        point = Point(
            len(self.manifest["points"]) + 1, 0, self.codec, shape, rep, self.seed_of(rep)
        )
        started = time.monotonic()
        print(progress_search(point, self.step, self.phase), end="", flush=True)
        row, info = run_point(point, settings, str(self.manifest["run_id"]), self.bpm)
        self.rows.append(
            _with_note(row, f"search step {self.step} ({self.phase})", isolation_note(settings))
        )
        self.manifest["points"].append(point.describe())
        write_run(settings.run_dir, self.manifest, self.rows)
        doc = _chat_doc(settings.run_dir / "points" / point.name)
        gen_cores = min(settings.processes, len(cpus.generator)) or 1
        result = step_result(row, info, doc, server_cores(settings), gen_cores)
        now = time.monotonic()
        print(progress_end(row, now - started, now - self.t0), flush=True)
        return result


def server_cores(settings: Settings) -> int:
    """Cores the server could use: its CPU set, at most one per server process."""
    return max(1, min(settings.cpus.server_cores(), settings.scenario.server.processes))


def _chat_doc(pdir: Path) -> dict[str, Any] | None:
    import json

    try:
        doc: dict[str, Any] = json.loads((pdir / "chat.json").read_text())
    except (OSError, ValueError):
        return None
    return doc


def progress_search(point: Point, step: int, phase: str) -> str:
    return (
        f"[search {point.codec}] step {step} ({phase}) {point.shape.offered_per_s:>7g}/s "
        f"rep {point.replication} ({point.shape.users} users × "
        f"{point.shape.send_rate_per_user_per_s:.3g}/s) …"
    )


def execute_search(plan: Plan, manifest: dict[str, Any]) -> int:
    """The capacity search per codec (:mod:`bench.run.search`); rows and ``capacity.csv``
    rewritten after each step and each codec, then the table and the capacity lines."""
    from bench.analysis.words import capacity_line

    settings, search = plan.settings, plan.search
    assert search is not None
    run_dir, run_id = settings.run_dir, str(manifest["run_id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    settings.scenario_path.write_text(to_toml(settings.scenario, comments=False))
    raise_nofile_limit()
    manifest["points"] = []
    ladder = ",".join(f"{x:g}" for x in search.ladder)
    what = (
        f"capacity search from {ladder}/s, {search.slo.describe()}, acked ≥ "
        f"{search.follow_min:.0%} of offered, resolution {search.rel_tol:.0%}, "
        f"{search.repeats} repeats at the knee, ≤ {search.max_steps} steps per codec"
    )
    print(_header(plan, run_id, what), flush=True)
    rows: list[dict[str, Any]] = []
    caps: list[dict[str, Any]] = []
    try:
        with sigterm_as_exit():
            for codec in plan.codecs:
                measure = _Searcher(plan, manifest, codec, rows)
                found = find_capacity(measure, search, announce=measure.announce)
                caps.append(_capacity(plan, run_id, codec, found))
                manifest["search"]["results"][codec] = search_record(found)
                write_run(run_dir, manifest, rows)
                write_table(run_dir / CAPACITY_FILE, caps, CAPACITY_COLUMNS)
                print(capacity_line(caps[-1]), flush=True)
    except KeyboardInterrupt:
        print(f"\n[run] interrupted: {run_dir} holds the {len(rows)} finished step(s)")
        return 130
    print(format_table(rows))
    for cap in caps:
        print(capacity_line(cap))
    print(f"[run] wrote {run_dir}/ (manifest.json, summary.csv, capacity.csv, points/)")
    return 1 if any(c["limited_by"] in ("failed", "none") for c in caps) else 0


def _capacity(plan: Plan, run_id: str, codec: str, found: SearchResult) -> dict[str, Any]:
    settings = plan.settings
    assert plan.search is not None
    return capacity_row(
        found, plan.search, run_id=run_id, scenario=settings.scenario.name, codec=codec,
        cpus=settings.cpus.describe(), server_cores=server_cores(settings),
        duration_s=settings.duration_s, warmup_s=settings.warmup_s,
    )  # fmt: skip


def search_record(found: SearchResult) -> dict[str, Any]:
    """A codec's search as plain data: each step, and each offer's final verdict."""
    return {
        "steps": [
            {"step": s.index, "phase": s.phase, "offered_per_s": s.result.offered_per_s}
            for s in found.steps
        ],
        "verdicts": {
            f"{o:g}": {"verdict": v.kind, "why": v.why} for o, v in found.verdicts.items()
        },
        "limited_by": found.limited_by,
        "note": found.note,
    }


if __name__ == "__main__":
    sys.exit(main())
