"""Generator capacity: how many chat messages one Locust process can drive, against a bare loop.

``python -m bench generator [--quick] [--loads 250,500,…] [--processes 1,2] [--users 100]
[--room-size 10] [--codec json] [--duration-s S] [--bare-s S] [--scenario FILE]
[--server-cpus LIST] [--generator-cpus LIST] [--out results/generator]``

A load test measures the server only while the load generator keeps up, so this
benchmark measures the generator itself. In ONE run:

* **Locust ladder** — for each ``--processes`` count and each offered load (sends/s,
  rising), a point of :mod:`bench.run` (fresh server, Locust headless in its own
  process, ``/proc`` CPU by PID, the measured window after warm-up): ``--users`` users in
  rooms of ``--room-size``, per-user rate = load / users, rate limit off, one attempt per
  message. Each send brings the generator an Ack and ``room size − 1`` Delivers to other
  members, so **messages/s** (frames sent + received by the generator) is
  ``sent/s + acked/s + delivered/s`` over the window. A load is *sustained* when at
  least 95 % of it was acked and the generator was not bound (no process ≥ 90 % of a
  core, schedule on time: :func:`bench.run.figures.generator_limits`); a load the generator
  could not keep is never a capacity. The **capacity** of a process count is the highest
  messages/s among its sustained loads. Each row also gives the generator's schedule lag
  p99 (how late its sends left against their intended times).
* **Bare loops** — one thread, one connection, ``websockets.sync.client`` sending our
  JSON Send frame to :mod:`bench.micro.bare_server` (echo) and reading it back, for ``--bare-s``
  seconds each; messages/s counts both directions. ``bare-sync`` is the plain loop (one
  frame in flight: latency-bound, it waits on the server's round trip);
  ``bare-sync-pipelined`` sends 32 before reading 32 (what the library costs when it
  never waits: the cost baseline).

**CPU sets** (:mod:`bench._support.cpus`): the Locust points run the server on
``--server-cpus`` and Locust on ``--generator-cpus`` (default: the server on the last
CPU, the generator on the others); the bare echo server runs on the server's set and the
bare loops in this process, pinned to the generator's set meanwhile. The manifest
records both sets.

Verdict (printed with PASS/MISS, :func:`judge`): at its capacity, one Locust process
drives **≥ 35,000 messages per CPU-second and ≥ 0.5× the pipelined bare loop's messages
per CPU-second** in the same run — the generator's cost per message, against what the
WebSocket library alone costs. The plain loop's figures are printed beside, for
reference (latency-bound, not a cost baseline).

On a 2-core machine the server has one core and the generator the other: a load can stop
being sustained because the *server* saturated (the row's note says ``server-bound``) or
because the generator's core is full and Locust's sends leave late; with ``--processes
2`` two Locust processes share the generator's core, so the scaling figure is a floor.

Files, in ``results/generator/<run-id>/``: ``manifest.json`` (settings, capacities,
ratios, targets), ``generator.csv`` (:data:`GEN_COLUMNS`, one row per Locust point plus
the two bare rows) and ``p<N>/points/<codec>-<load>-r0/`` (each point's files as written by
``bench run``). Exit status 1 when a point failed, 2 for bad input, else 0 (a MISS is a
finding, not a failure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._support.args import BadInput, OneLineParser, csv_list
from bench._support.cpus import CpuPlan, add_cpu_arguments, cpu_plan_from_args, pinned
from bench._support.servers import sigterm_as_exit, spawn_server, stop_server, wait_listening
from bench.load.plan import body_text
from bench.run.measure import run_point
from bench.run.points import LoadShape, Point, deliver_bytes
from bench.run.processes import Settings
from chatcap.protocol import Send, get_codec
from chatcap.results import Column, new_manifest, new_run_id, write_manifest, write_table
from chatcap.scenario import CODEC_NAMES, Scenario, ScenarioError, to_toml

__all__ = ["GEN_COLUMNS", "bare_echo_loop", "capacity", "judge", "main"]

GEN_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier, same as the folder name."),
    Column(
        "kind",
        "str",
        "`locust` (a Locust point), `bare-sync` (the bare echo loop, one frame in flight) or "
        "`bare-sync-pipelined` (the same loop, 32 frames in flight per turn).",
    ),
    Column("processes", "int", "Locust processes (`--processes`); 1 for the bare loop."),
    Column("codec", "str", "Wire codec of the users; `json` frames for the bare loop."),
    Column("offered_per_s", "float", "Offered sends/s (NaN for the bare loop)."),
    Column("users", "int", "Locust users (connections); 1 for the bare loop."),
    Column("room_size", "int", "Members per room (0 for the bare loop)."),
    Column("msgs_per_s", "float", "Frames sent + received by the generator per second."),
    Column("sent_per_s", "float", "Frames sent by the generator per second."),
    Column("received_per_s", "float", "Frames received by the generator per second."),
    Column("acked_per_s", "float", "Acks per second (echoes for the bare loop)."),
    Column("cpu_pct", "float", "Generator CPU, % of one core (all its processes)."),
    Column("max_process_cpu_pct", "float", "Busiest generator process, % of one core."),
    Column("msgs_per_cpu_s", "float", "msgs_per_s ÷ (cpu_pct / 100): messages per CPU-second."),
    Column("ack_p99_ms", "float", "99th-percentile ack (or echo round-trip) latency, ms."),
    Column(
        "schedule_lag_p99_ms",
        "float",
        "99th-percentile lateness of the generator's sends against their intended times, "
        "ms (NaN for the bare loop).",
    ),
    Column("sustained", "bool", "≥ 95 % acked and the generator not bound."),
    Column("generator_bound", "bool", "The generator may have set the pace (see bench.run)."),
    Column("note", "str", "Why a row is special.", required=False),
)

TARGET_MSGS_PER_CPU_S = 35_000.0
"""One Locust process at its capacity: messages (sent + received) per CPU-second."""
TARGET_SHARE_OF_PIPELINED = 0.5
"""… and at least this share of the pipelined bare loop's messages per CPU-second."""
SUSTAINED_ACKED_SHARE = 0.95
BARE_WINDOWS = (1, 32)
"""Frames in flight in the bare loops: 1 = ping-pong (the reference), 32 = pipelined."""
SCENARIO_OVERRIDES: dict[str, Any] = {
    "server.rate_limit.algorithm": "none",
    "server.max_connections_per_ip": 20_000,
    "server.handshake_rate_per_s": 100_000.0,
    "server.handshake_burst": 100_000,
    "server.outbound_buffer_max_bytes": 64 * 2**20,
    "server.store.write_queue_max": 100_000,
    "client.retry.max_attempts": 1,
    "client.ack_timeout_ms": 10_000.0,
}


# ----------------------------------------------------------------------------- bare loop


@dataclass(frozen=True)
class BareResult:
    round_trips: int
    wall_s: float
    cpu_s: float
    p99_ms: float
    window: int = 1

    @property
    def msgs_per_s(self) -> float:
        return 2 * self.round_trips / self.wall_s

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s


def bare_echo_loop(
    url: str, frame: str, seconds: float, window: int = 1, warmup_s: float = 0.5
) -> BareResult:
    """Send ``window`` copies of ``frame``, read their echoes, repeat — one thread, one
    connection. ``window = 1`` is the plain ping-pong loop; the p99 is of a whole turn."""
    from websockets.sync.client import connect

    turns: list[float] = []
    with connect(url, compression=None, proxy=None, open_timeout=10.0, close_timeout=1.0) as ws:
        end_warmup = time.perf_counter() + warmup_s
        while time.perf_counter() < end_warmup:
            ws.send(frame)
            ws.recv(timeout=10.0)
        cpu0, t0 = time.process_time(), time.perf_counter()
        end = t0 + seconds
        now = t0
        while now < end:
            for _ in range(window):
                ws.send(frame)
            for _ in range(window):
                ws.recv(timeout=10.0)
            after = time.perf_counter()
            turns.append(after - now)
            now = after
        wall, cpu = now - t0, time.process_time() - cpu0
    p99 = statistics.quantiles(turns, n=100)[98] * 1000.0 if len(turns) > 1 else float("nan")
    return BareResult(len(turns) * window, wall, cpu, p99, window)


def run_bare(body_bytes: int, seconds: float, workdir: Path, cpus: CpuPlan) -> list[BareResult]:
    """Start the bare echo server (own process, on the server's CPUs), run the loops
    against it from this process (pinned to the generator's CPUs), stop it by PID."""
    frame = get_codec("json").encode(
        Send(
            client_msg_id="19ac4e5f2b1.12.345",
            room="r0-1",
            body=body_text(body_bytes),
            sent_at_us=1_795_000_000_000_000,
        )
    )
    argv = [sys.executable, "-m", "bench.micro.bare_server", "--mode", "echo", "--port", "0"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    server = spawn_server("bare-echo", argv, workdir, env, cpus=cpus.server)
    try:
        wait_listening(server)
        text = frame.decode("utf-8")
        with pinned(cpus.generator):
            return [bare_echo_loop(server.url, text, seconds, w) for w in BARE_WINDOWS]
    finally:
        stop_server(server)


def bare_row(run_id: str, bare: BareResult) -> dict[str, Any]:
    per_s = bare.round_trips / bare.wall_s
    pipelined = bare.window > 1
    return {
        "run_id": run_id,
        "kind": "bare-sync-pipelined" if pipelined else "bare-sync",
        "processes": 1,
        "codec": "json",
        "offered_per_s": float("nan"),
        "users": 1,
        "room_size": 0,
        "msgs_per_s": bare.msgs_per_s,
        "sent_per_s": per_s,
        "received_per_s": per_s,
        "acked_per_s": per_s,
        "cpu_pct": bare.cpu_pct,
        "max_process_cpu_pct": bare.cpu_pct,
        "msgs_per_cpu_s": bare.msgs_per_s / (bare.cpu_pct / 100.0) if bare.cpu_s else float("nan"),
        "ack_p99_ms": bare.p99_ms,
        "schedule_lag_p99_ms": float("nan"),
        "sustained": True,
        "generator_bound": False,
        "note": (
            f"one thread, one connection, {bare.window} frames in flight per turn"
            if pipelined
            else "one thread, one connection, one frame in flight (latency-bound)"
        ),
    }


# ----------------------------------------------------------------------------- Locust ladder


def locust_row(
    run_id: str,
    processes: int,
    room_size: int,
    row: Mapping[str, Any],
    info: Mapping[str, Any],
    lag_p99_ms: float = float("nan"),
) -> dict[str, Any]:
    """A generator.csv row from a ``bench run`` point's summary row and ``point.json`` data
    (``lag_p99_ms``: the schedule lag p99 of its ``chat.json``, :func:`schedule_lag_p99_ms`)."""
    nan = float("nan")
    window = info.get("window") or {}
    seconds = float(window.get("seconds") or nan)
    errors = sum((window.get("server") or {}).get("errors_by_code", {}).values())
    sent = float(row.get("sent_total") or 0) / seconds
    received = row["acked_per_s"] + row["delivered_per_s"] + errors / seconds
    cpu = dict(window.get("generator_cpu_pct") or {})
    total_cpu = sum(cpu.values()) if cpu else nan
    acked_share = row["acked_per_s"] / row["offered_per_s"]
    msgs = sent + received
    note = str(row.get("note", ""))
    if acked_share < SUSTAINED_ACKED_SHARE and not row["generator_bound"]:
        note = f"server-bound: {acked_share:.0%} of the offered sends acked; " + note
    return {
        "run_id": run_id,
        "kind": "locust",
        "processes": processes,
        "codec": row["codec"],
        "offered_per_s": row["offered_per_s"],
        "users": int(info.get("users", 0)),
        "room_size": room_size,
        "msgs_per_s": msgs,
        "sent_per_s": sent,
        "received_per_s": received,
        "acked_per_s": row["acked_per_s"],
        "cpu_pct": total_cpu,
        "max_process_cpu_pct": max(cpu.values()) if cpu else nan,
        "msgs_per_cpu_s": msgs / (total_cpu / 100.0) if total_cpu > 0 else nan,
        "ack_p99_ms": row["ack_p99_ms"],
        "schedule_lag_p99_ms": lag_p99_ms,
        "sustained": bool(acked_share >= SUSTAINED_ACKED_SHARE and not row["generator_bound"]),
        "generator_bound": bool(row["generator_bound"]),
        "note": note.rstrip("; "),
    }


def schedule_lag_p99_ms(chat_json: Path) -> float:
    """The generator's schedule lag p99 (ms, all codecs' worst) from a point's ``chat.json``;
    NaN when it is missing or has no sends."""
    try:
        summary = json.loads(chat_json.read_text()).get("summary", {})
    except (OSError, json.JSONDecodeError):
        return float("nan")
    lags = [
        float(s["p99_ms"])
        for s in (summary.get("schedule_lag") or {}).values()
        if s and s.get("p99_ms") is not None
    ]
    return max(lags, default=float("nan"))


def capacity(rows: Sequence[Mapping[str, Any]], processes: int) -> Mapping[str, Any] | None:
    """The sustained Locust row with the most messages/s for ``processes``; None if none."""
    ok = [
        r for r in rows if r["kind"] == "locust" and r["processes"] == processes and r["sustained"]
    ]
    return max(ok, key=lambda r: r["msgs_per_s"], default=None)


def ladder_points(loads: Sequence[float], users: int, codec: str, spawn: float) -> list[Any]:
    points = []
    for i, load in enumerate(loads):
        shape = LoadShape(load, users, load / users, min(float(users), spawn))
        points.append(Point(i + 1, len(loads), codec, shape, 0, 1))
    return points


def gen_scenario(base: Scenario, room_size: int) -> Scenario:
    overrides = dict(SCENARIO_OVERRIDES)
    overrides["workload.room_size.distribution"] = "fixed"
    overrides["workload.room_size.size"] = room_size
    overrides["workload.users"] = max(base.workload.users, room_size)
    return base.with_overrides(overrides)


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench generator", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="two loads, short points")
    p.add_argument("--loads", default="", help="offered sends/s, rising")
    p.add_argument("--processes", default="1,2", help="Locust process counts to try")
    p.add_argument("--users", type=int, default=100, help="Locust users (connections)")
    p.add_argument("--room-size", type=int, default=10, help="members per room")
    p.add_argument("--codec", default="json", choices=CODEC_NAMES)
    p.add_argument("--duration-s", type=float, default=None, help="length of each point")
    p.add_argument("--bare-s", type=float, default=None, help="length of the bare loop")
    p.add_argument("--scenario", default="scenarios/baseline.toml", help="base scenario")
    p.add_argument("--out", default="results/generator", help="parent of the run folder")
    add_cpu_arguments(p)
    return p


@dataclass(frozen=True)
class GenPlan:
    scenario: Scenario
    loads: list[float]
    processes: list[int]
    users: int
    room_size: int
    codec: str
    duration_s: float
    bare_s: float
    out: Path
    cpus: CpuPlan


def plan_bench(args: argparse.Namespace) -> GenPlan:
    from chatcap.scenario import load_scenario

    quick = args.quick
    default_loads = "300,1200" if quick else "250,500,1000,1500,2000,2500"
    loads = csv_list(args.loads or default_loads, float, "loads")
    processes = [int(p) for p in csv_list(args.processes, float, "processes")]
    if not loads or min(loads) <= 0 or not processes or min(processes) < 1:
        raise BadInput("--loads and --processes need positive numbers")
    if args.users < 1 or args.room_size < 1:
        raise BadInput("--users and --room-size must be >= 1")
    duration = args.duration_s or (4.0 if quick else 10.0)
    bare_s = args.bare_s or (2.0 if quick else 5.0)
    if duration <= 1.0 or bare_s <= 0:
        raise BadInput("--duration-s must be > 1 and --bare-s > 0")
    scenario = gen_scenario(load_scenario(args.scenario), args.room_size)
    cpus = cpu_plan_from_args(args)
    return GenPlan(
        scenario,
        sorted(loads),
        processes,
        args.users,
        args.room_size,
        args.codec,
        duration,
        bare_s,
        Path(args.out),
        cpus,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ladder for every process count and the bare loop; print and write results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plan = plan_bench(build_parser().parse_args(argv))
    except (BadInput, ScenarioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    created = datetime.now(UTC)
    run_id = new_run_id(created, "quick" if "--quick" in argv else "")
    run_dir = plan.out / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    scenario_path = run_dir / "scenario.toml"
    scenario_path.write_text(to_toml(plan.scenario, comments=False))
    cpus = plan.cpus.describe()
    print(
        f"[generator] {run_id}: loads {','.join(f'{x:g}' for x in plan.loads)} sends/s, "
        f"{plan.users} users in rooms of {plan.room_size} ({plan.codec}), processes "
        f"{','.join(map(str, plan.processes))}; server on CPU {cpus['server_cpus']}, "
        f"generator on CPU {cpus['generator_cpus']}"
        + (f" ({plan.cpus.note})" if plan.cpus.note else ""),
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    failures = 0
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="chatcap-gen-") as tmp:
        body_bytes = plan.scenario.workload.body_bytes
        for bare in run_bare(body_bytes, plan.bare_s, Path(tmp), plan.cpus):
            rows.append(bare_row(run_id, bare))
            print(
                f"[generator] bare websockets.sync echo loop, {bare.window} in flight: "
                f"{bare.msgs_per_s:,.0f} msgs/s at {bare.cpu_pct:.0f}% CPU",
                flush=True,
            )
        for processes in plan.processes:
            failures += run_ladder(plan, processes, run_id, run_dir, scenario_path, rows)
    verdict = summarize(rows, plan.processes)
    manifest = new_manifest(
        run_id,
        ["python", "-m", "bench", "generator", *argv],
        created.isoformat(),
        scenario=plan.scenario.to_dict(),
        seed=plan.scenario.seed,
        loads=plan.loads,
        processes=plan.processes,
        users=plan.users,
        room_size=plan.room_size,
        codec=plan.codec,
        duration_s=plan.duration_s,
        bare_s=plan.bare_s,
        scenario_overrides=SCENARIO_OVERRIDES,
        cpus=cpus,
        targets={
            "msgs_per_cpu_s": TARGET_MSGS_PER_CPU_S,
            "share_of_pipelined_per_cpu_s": TARGET_SHARE_OF_PIPELINED,
        },
        verdict=verdict,
    )
    write_manifest(run_dir, manifest)
    write_table(run_dir / "generator.csv", rows, GEN_COLUMNS)
    print(format_rows(rows))
    for line in verdict["lines"]:
        print(line)
    print(f"[generator] wrote {run_dir}/{{manifest.json,generator.csv}}")
    return 1 if failures else 0


def run_ladder(
    plan: GenPlan,
    processes: int,
    run_id: str,
    run_dir: Path,
    scenario_path: Path,
    rows: list[dict[str, Any]],
) -> int:
    """Every load for one process count (stops after the first unsustained load)."""
    settings = Settings(
        plan.scenario,
        scenario_path,
        run_dir / f"p{processes}",
        processes,
        plan.duration_s,
        min(2.0, plan.duration_s / 4),
        0.5,
        False,
        plan.cpus,
    )
    failures = 0
    bpm = deliver_bytes(plan.codec, plan.scenario.workload.body_bytes, {})
    spawn = plan.scenario.server.handshake_rate_per_s
    for point in ladder_points(plan.loads, plan.users, plan.codec, spawn):
        started = time.monotonic()
        row, info = run_point(point, settings, run_id, bpm)
        if str(row.get("note", "")).startswith("failed"):
            failures += 1
            print(f"[generator] p{processes} {point.name}: {row['note']}", flush=True)
            continue
        lag = schedule_lag_p99_ms(settings.run_dir / "points" / point.name / "chat.json")
        rows.append(locust_row(run_id, processes, plan.room_size, row, info, lag))
        r = rows[-1]
        print(
            f"[generator] p{processes} {point.shape.offered_per_s:>6g} sends/s: "
            f"{r['msgs_per_s']:>8,.0f} msgs/s, Locust {r['cpu_pct']:.0f}% CPU "
            f"(busiest {r['max_process_cpu_pct']:.0f}%), "
            f"{r['msgs_per_cpu_s']:,.0f} msgs per CPU-second, schedule lag p99 {lag:.1f} ms, "
            f"{'sustained' if r['sustained'] else 'NOT sustained'} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
        if not r["sustained"]:
            print(f"[generator] p{processes}: stopping the ladder — {r['note']}", flush=True)
            break  # higher loads only cost time: past capacity (generator's or server's)
    return failures


def judge(one: Mapping[str, Any] | None, piped: Mapping[str, Any] | None) -> dict[str, Any]:
    """The verdict: does one Locust process's capacity row ``one`` drive ≥
    :data:`TARGET_MSGS_PER_CPU_S` messages per CPU-second and ≥
    :data:`TARGET_SHARE_OF_PIPELINED` of the pipelined bare loop's (row ``piped``)?
    No capacity, or no pipelined row, is a MISS."""
    nan = float("nan")
    per_cpu = float(one["msgs_per_cpu_s"]) if one is not None else nan
    piped_per_cpu = float(piped["msgs_per_cpu_s"]) if piped is not None else nan
    share = per_cpu / piped_per_cpu if piped_per_cpu > 0 else nan
    per_cpu_ok = per_cpu >= TARGET_MSGS_PER_CPU_S
    share_ok = share >= TARGET_SHARE_OF_PIPELINED
    line = (
        f"[generator] target ≥ {TARGET_MSGS_PER_CPU_S:,.0f} msgs per CPU-second: "
        f"{per_cpu:,.0f} {'PASS' if per_cpu_ok else 'MISS'}; ≥ "
        f"{TARGET_SHARE_OF_PIPELINED:.2f}× the pipelined bare loop per CPU-second "
        f"({piped_per_cpu:,.0f}): {share:.2f} {'PASS' if share_ok else 'MISS'}"
        f" — {'PASS' if per_cpu_ok and share_ok else 'MISS'}"
    )
    return {
        "msgs_per_cpu_s": None if math.isnan(per_cpu) else per_cpu,
        "pipelined_msgs_per_cpu_s": None if math.isnan(piped_per_cpu) else piped_per_cpu,
        "share_of_pipelined_per_cpu_s": None if math.isnan(share) else share,
        "pass": bool(per_cpu_ok and share_ok),
        "line": line,
    }


def summarize(rows: Sequence[Mapping[str, Any]], processes: Sequence[int]) -> dict[str, Any]:
    """Capacities per process count, the ratios to the bare loops, the verdict."""
    bare = next((r for r in rows if r["kind"] == "bare-sync"), None)
    piped = next((r for r in rows if r["kind"] == "bare-sync-pipelined"), None)
    caps = {p: capacity(rows, p) for p in processes}
    lines = []
    out: dict[str, Any] = {"capacity": {}}
    for p, cap in caps.items():
        if cap is None:
            lines.append(f"[generator] {p} process(es): no load sustained")
            continue
        out["capacity"][p] = {
            k: cap[k] for k in ("offered_per_s", "msgs_per_s", "cpu_pct", "msgs_per_cpu_s")
        }
        lines.append(
            f"[generator] {p} process(es): capacity {cap['msgs_per_s']:,.0f} msgs/s at "
            f"{cap['offered_per_s']:g} sends/s offered (Locust {cap['cpu_pct']:.0f}% CPU, "
            f"{cap['msgs_per_cpu_s']:,.0f} msgs per CPU-second)"
        )
    one = caps.get(1)
    if piped is not None:
        out["pipelined_msgs_per_s"] = piped["msgs_per_s"]
    if bare is not None:
        out["bare_msgs_per_s"] = bare["msgs_per_s"]
        if one is not None:
            out["share_of_bare"] = one["msgs_per_s"] / bare["msgs_per_s"]
            lines.append(
                f"[generator] for reference: {out['share_of_bare']:.2f} of the plain bare "
                f"loop's messages/s ({bare['msgs_per_s']:,.0f}; one frame in flight, "
                "latency-bound)"
            )
    if one is not None and piped is not None:
        out["share_of_pipelined"] = one["msgs_per_s"] / piped["msgs_per_s"]
    verdict = judge(one, piped)
    out["judged"] = {k: v for k, v in verdict.items() if k != "line"}
    lines.append(verdict["line"])
    two = caps.get(2)
    top = max((r["offered_per_s"] for r in rows if r["kind"] == "locust"), default=None)
    if one is not None and two is not None and one["offered_per_s"] == top:
        out["scaling_2_over_1"] = None  # one process already kept every load offered
        lines.append(
            f"[generator] 1 and 2 processes both kept the highest load offered ({top:g} "
            "sends/s): the scaling is not measured (offer more with --loads)"
        )
    elif one is not None and two is not None:
        out["scaling_2_over_1"] = two["msgs_per_s"] / one["msgs_per_s"]
        lines.append(
            f"[generator] 2 processes give {out['scaling_2_over_1']:.2f}× one process "
            "(both on the generator's CPU set)"
        )
    out["lines"] = lines
    return out


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (
        f"{'kind':20}{'proc':>5}{'offered/s':>10}{'msgs/s':>9}{'acked/s':>9}{'CPU %':>7}"
        f"{'busiest':>8}{'msgs/CPU-s':>11}{'ack p99':>9}{'lag p99':>9}  sustained"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r['kind']:20}{r['processes']:>5}{r['offered_per_s']:>10g}{r['msgs_per_s']:>9,.0f}"
            f"{r['acked_per_s']:>9,.0f}{r['cpu_pct']:>7.0f}{r['max_process_cpu_pct']:>8.0f}"
            f"{r['msgs_per_cpu_s']:>11,.0f}{r['ack_p99_ms']:>9.2f}"
            f"{r['schedule_lag_p99_ms']:>9.1f}  "
            f"{'yes' if r['sustained'] else 'no'}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
