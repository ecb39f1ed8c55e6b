"""Server overhead: our chat server's CPU and memory beside a bare ``websockets`` server,
and beside itself over TLS.

``python -m bench server-overhead [--quick] [--repeat N] [--out DIR] [--messages N]
[--window W] [--fanout-messages M] [--fanout-window W] [--room-size K]
[--idle-connections C] [--low-rate-per-s R] [--low-rate-messages N] [--high-share F]
[--high-rate-messages N] [--cases echo,fanout,idle,lowrate] [--codec json,protobuf]
[--scenario FILE] [--set KEY=VALUE …] [--no-tls]``

Four cases, all in ONE run, driven by the same client (:mod:`bench.micro.loadclient`, its own
process per case) against servers in their own processes (``python -m server`` and
:mod:`bench.micro.bare_server`), everything on 127.0.0.1:

=======  ==================================================  ========================  ======
case     load                                                figure                    target
=======  ==================================================  ========================  ======
echo     1 connection, ``--window`` (100) sends in flight,   server CPU µs per message ≤ 2.5×
         ``--messages`` (20,000; quick 2,000). Ours: Send →  (ours / bare echo)
         durable Ack (+ the sender's own Deliver, being a
         member); bare: echo.
fanout   room of ``--room-size`` (50) connections, one       server CPU µs per         ≤ 1.3×
         sender, ``--fanout-window`` (20) in flight,         delivery = Δcpu /
         ``--fanout-messages`` (2,000; quick 300). Bare:     (messages × members)
         ``websockets.broadcast()`` to all connected.
idle     ``--idle-connections`` (5,000; quick 500) held      RSS KiB per connection    ≤ 20 KiB
         open, compression off. Ours: each its own user and
         token, joined to one of 100 rooms; bare: connected.
lowrate  1 connection (ours: alone in its room), **open      server CPU µs per         ≤ 2×
         loop** (:mod:`bench.micro.paced_client`):           message at the low rate   (vs
         ``--low-rate-messages`` (500; quick 200) at         ÷ the same at the high    its
         ``--low-rate-per-s`` (100), then                    rate (``highrate`` rows)  high
         ``--high-rate-messages`` (10,000; quick 3,000) at                             rate)
         ``--high-share`` (0.8) × the capacity the echo
         case measured for that codec in the same repeat.
=======  ==================================================  ========================  ======

**The low-rate case** asks what a message costs when it arrives alone — every message
its own batch, its own wake-up — against the cost near saturation. *Capacity* is the echo
case's acked messages per wall-clock second (window 100: the server is busy throughout);
``lowrate`` therefore runs the echo case too. Both rates are run for ours (each codec)
and for bare at the same rates as ours/json (bare's own ratio shows what the
``websockets`` library alone pays for a cold wake-up on this machine). The rows carry
``offered_per_s``, ``achieved_per_s`` and the client's ``lag_p99_ms`` (a client that could
not keep the pace says so there). CPU of these rows is read from
``/proc/<pid>/task/*/schedstat`` (ns): a few hundred messages at 100/s are a few clock
ticks of ``/proc/<pid>/stat``. ``ratio_low_high`` (the ``low÷high`` column) is the median
over repeats of lowrate ÷ highrate in the same repeat; its target is the issue's ≤ 2×.

Server CPU is utime + stime from ``/proc/<pid>/stat`` (all threads, clock ticks), read by
the client just before the measured phase (after a warm-up of ~10 % of the messages)
and just after its last frame arrived; RSS is ``VmRSS`` from ``/proc/<pid>/status``.
Ours runs both codecs (json and protobuf rows); bare rows carry our JSON Send frame as
opaque text (``codec = none``).

Each repeat starts fresh servers (ours with a new store) and runs every case; the order
of the implementations rotates between repeats so drift on a shared machine hits all
alike. Figures are **medians over repeats**; a ratio is the median of the per-repeat
ratios ours/bare (both measured seconds apart in the same repeat). The server's
scenario is ``--scenario`` (smoke) with :data:`SCENARIO_OVERRIDES` (no rate limit, no
per-IP caps in the way, big write batches and outbound buffers), then any ``--set``
(e.g. ``--set server.pool.size=1`` to see what the writer's batch concurrency costs).
The idle rows' ``server_cpu_s`` is what opening the connections cost (token, handshake,
join): a reconnect storm's bill.

**TLS beside plain.** A third implementation, ``ours-tls``, is our server with the same
scenario plus ``server.tls`` (a throwaway CA and a certificate for 127.0.0.1, made with
trustme into the run's temporary folder at the start and deleted with it — never a
committed key), driven by the same client over ``wss://`` (the token's request over
``https://``), every case and codec of ``ours``. Its rows carry no target and no verdict:
``ratio_vs_plain`` (the ``vs plain`` column) is the median over repeats of ours-tls ÷
ours in the same repeat — server CPU per message (echo), per delivery (fanout), RSS per
connection and the opening bill (idle: the TLS handshake and the per-connection TLS
buffers). ``--no-tls`` leaves it out.

**What the stage metrics cost.** A fourth, ``ours-nostages``, is our server with
``server.stage_metrics = false`` (no ``chatcap_send_stage_seconds`` observations, no
``gc.callbacks`` hook timing the collector), started with the others each repeat and
driven through the echo case per codec. The last line gives ours ÷ ours-nostages, the
median over repeats of the echo's server CPU per message in the same repeat
(:func:`stage_ratios`; the manifest's ``stage_metrics_vs_none``): what leaving them on
costs.

Read ``client_cpu_s`` beside ``wall_s``: the load client is one process on the other
core, and where it is busy all the time (bare fan-out) it, not the server, sets the pace.
CPU per message stays comparable; messages per second would not be.

Files, in ``DIR/<run-id>/``: ``manifest.json`` (sizes, targets, medians, verdicts, the
TLS ÷ plain ratios and what was negotiated, the servers' first lines) and
``overhead.csv`` (:data:`OVERHEAD_COLUMNS`, one row per case, impl, codec and repeat).
Exit status 1 when a client run failed (its row is left out and the reason printed),
else 0 — a MISS is a finding, not a failure.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._support.args import BadInput
from bench._support.clients import Job, Sizes, client_argv, run_client
from bench._support.host import raise_nofile_limit
from bench._support.servers import (
    JWT_SECRET,
    SCENARIO_OVERRIDES,
    ServerProc,
    bench_scenario,
    sigterm_as_exit,
    spawn_server,
    stop_server,
    wait_listening,
)
from bench._support.tls import TlsFiles, throwaway_tls
from chatcap.results import Column, new_manifest, new_run_id, write_manifest, write_table
from chatcap.scenario import CODEC_NAMES, ScenarioError, to_toml

OVERHEAD_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier, same as the folder name."),
    Column(
        "case",
        "str",
        "`echo`, `fanout`, `idle`, `lowrate` or `highrate` (see bench/micro/server_overhead.py).",
    ),
    Column(
        "impl",
        "str",
        "`ours` (python -m server), `ours-tls` (the same over TLS: wss://) or `bare`"
        " (bench.micro.bare_server).",
    ),
    Column("codec", "str", "`json` or `protobuf` (ours); `none` (bare: opaque frames)."),
    Column("repeat", "int", "Repeat index within the run, from 0."),
    Column("messages", "int", "Measured sends answered (Ack / echo / own copy); 0 for idle."),
    Column("deliveries", "int", "Deliver frames (ours) or copies (bare) received; 0 for idle."),
    Column(
        "server_cpu_s",
        "float",
        "Server utime+stime over the measured phase, s (idle: opening every connection"
        " — token, handshake, join — and a 1 s settle).",
    ),
    Column("cpu_us_per_msg", "float", "server_cpu_s / messages, µs (nan for idle)."),
    Column("cpu_us_per_delivery", "float", "server_cpu_s / deliveries, µs (nan for idle)."),
    Column("rss_kib_per_conn", "float", "Server VmRSS growth / connections, KiB (idle only)."),
    Column("connections", "int", "Client connections used by the case.", required=False),
    Column(
        "wall_s", "float", "Wall time of the measured phase (idle: opening), s.", required=False
    ),
    Column("client_cpu_s", "float", "Load client CPU in the measured phase, s.", required=False),
    Column(
        "offered_per_s",
        "float",
        "lowrate/highrate: the open-loop send rate asked for, messages/s (else empty).",
        required=False,
    ),
    Column(
        "achieved_per_s",
        "float",
        "lowrate/highrate: measured sends / time from first to last send, messages/s.",
        required=False,
    ),
    Column(
        "lag_p99_ms",
        "float",
        "lowrate/highrate: p99 of how late the client's sends left, ms (its own pace).",
        required=False,
    ),
)


# (case, figure column, target ratio vs bare or absolute KiB, unit)
TARGETS: dict[str, tuple[str, float, str]] = {
    "echo": ("cpu_us_per_msg", 2.5, "µs/msg"),
    "fanout": ("cpu_us_per_delivery", 1.3, "µs/delivery"),
    "idle": ("rss_kib_per_conn", 20.0, "KiB/conn"),
    "lowrate": ("cpu_us_per_msg", 2.0, "µs/msg"),  # target: ÷ highrate, not ÷ bare
    "highrate": ("cpu_us_per_msg", math.nan, "µs/msg"),  # no target: lowrate's divisor
}
CASES = ("echo", "fanout", "idle", "lowrate")  # what --cases takes (lowrate adds highrate)
CASE_ORDER = ("echo", "fanout", "idle", "lowrate", "highrate")
PACED_CLIENT = "bench.micro.paced_client"
OUR_CODECS = CODEC_NAMES
TLS_IMPL = "ours-tls"
NOSTAGES_IMPL = "ours-nostages"
"""Ours with ``server.stage_metrics = false`` (no stage histograms, no collector hook):
the echo case beside ours, for what the histograms cost (:func:`stage_ratios`)."""
IMPL_ORDER = ("bare", "ours", TLS_IMPL, NOSTAGES_IMPL)


# ----------------------------------------------------------------------------- processes


def our_argv(scenario_path: Path, db: Path) -> list[str]:
    return [
        sys.executable, "-m", "server", "--scenario", str(scenario_path),
        "--port", "0", "--db", str(db),
    ]  # fmt: skip


def start_servers(
    workdir: Path, scenario_path: Path, repeat: int, tls: TlsFiles | None = None
) -> dict[str, ServerProc]:
    """Ours (fresh store), ours over TLS (with ``tls``: its scenario beside the plain one,
    its own store) and the two bare modes; on failure, stop what started."""
    env = dict(os.environ, CHATCAP_JWT_SECRET=JWT_SECRET, PYTHONUNBUFFERED="1")
    py = sys.executable
    specs = {
        "ours": our_argv(scenario_path, workdir / f"store-{repeat}.db"),
        "bare-echo": [py, "-m", "bench.micro.bare_server", "--mode", "echo", "--port", "0"],
        "bare-broadcast": [
            py,
            "-m",
            "bench.micro.bare_server",
            "--mode",
            "broadcast",
            "--port",
            "0",
        ],
    }
    if tls is not None:
        specs[TLS_IMPL] = our_argv(tls_scenario_path(scenario_path), workdir / f"tls-{repeat}.db")
    nostages = nostages_scenario_path(scenario_path)
    if nostages.exists():
        specs[NOSTAGES_IMPL] = our_argv(nostages, workdir / f"nostages-{repeat}.db")
    servers: dict[str, ServerProc] = {}
    try:  # all start at once; then each must say where it listens
        for name, argv in specs.items():
            ca_file = tls.ca_file if tls is not None and name == TLS_IMPL else ""
            servers[name] = spawn_server(f"{name}-r{repeat}", argv, workdir, env, ca_file)
        for server in servers.values():
            wait_listening(server)
        if tls is not None and not servers[TLS_IMPL].secure:
            raise RuntimeError(f"{TLS_IMPL}: no wss:// in {servers[TLS_IMPL].first_line!r}")
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def tls_scenario_path(scenario_path: Path) -> Path:
    """Where the TLS variant of the scenario is written, beside the plain one."""
    return scenario_path.with_name(scenario_path.stem + "-tls.toml")


def nostages_scenario_path(scenario_path: Path) -> Path:
    """Where the scenario without stage metrics is written, beside the plain one."""
    return scenario_path.with_name(scenario_path.stem + "-nostages.toml")


def stop_servers(servers: dict[str, ServerProc]) -> None:
    for server in servers.values():
        stop_server(server)


# ----------------------------------------------------------------------------- one case


def to_row(run_id: str, job: Job, repeat: int, outcome: dict[str, Any]) -> dict[str, Any]:
    cpu = float(outcome["server_cpu_s"])
    messages, deliveries = int(outcome["messages"]), int(outcome["deliveries"])
    nan = float("nan")
    rss = nan
    if job.case == "idle" and outcome["connections"]:
        rss = (outcome["rss_after_kib"] - outcome["rss_before_kib"]) / outcome["connections"]
    return {
        "run_id": run_id,
        "case": job.case,
        "impl": job.impl,
        "codec": job.codec,
        "repeat": repeat,
        "messages": messages,
        "deliveries": deliveries,
        "server_cpu_s": cpu,
        "cpu_us_per_msg": cpu / messages * 1e6 if messages else nan,
        "cpu_us_per_delivery": cpu / deliveries * 1e6 if deliveries else nan,
        "rss_kib_per_conn": rss,
        "connections": int(outcome["connections"]),
        "wall_s": float(outcome["wall_s"]),
        "client_cpu_s": float(outcome["client_cpu_s"]),
    }


def progress(job: Job, row: dict[str, Any], repeat: int, sizes: Sizes) -> str:
    column, _, unit = TARGETS[job.case]
    extra = (
        f"{row['connections']:,} connections"
        if job.case == "idle"
        else f"{row['messages']:,} msgs, {row['deliveries']:,} deliveries"
    )
    return (
        f"[server-overhead] repeat {repeat + 1}/{sizes.repeat} {job.label:25} "
        f"{row[column]:8.2f} {unit:12} ({extra}, {row['wall_s']:.1f} s)"
    )


def jobs_for(
    case: str, cases: Sequence[str], codecs: Sequence[str], repeat: int, tls: bool = False
) -> list[Job]:
    """Bare first, then ours per codec, then ours-tls per codec (with ``tls``) — rotated
    by the repeat index."""
    if case not in cases:
        return []
    ours_codecs = codecs if case != "idle" else codecs[:1]
    impls = ("ours", TLS_IMPL) if tls else ("ours",)
    jobs = [Job(case, "bare", "none")]
    jobs += [Job(case, impl, c) for impl in impls for c in ours_codecs]
    if case == "echo":  # what the stage histograms cost: the same echo without them
        jobs += [Job(case, NOSTAGES_IMPL, c) for c in ours_codecs]
    shift = repeat % len(jobs)
    return jobs[shift:] + jobs[:shift]


def server_for(job: Job, servers: dict[str, ServerProc]) -> ServerProc:
    if job.impl in ("ours", TLS_IMPL, NOSTAGES_IMPL):
        return servers[job.impl]
    return servers["bare-broadcast" if job.case == "fanout" else "bare-echo"]


def run_repeat(
    run_id: str,
    repeat: int,
    sizes: Sizes,
    cases: Sequence[str],
    codecs: Sequence[str],
    scenario_path: Path,
    workdir: Path,
    tls: TlsFiles | None = None,
    negotiated: dict[str, str] | None = None,
    paced: Paced | None = None,
) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """Fresh servers, then idle (first, on the fresh processes), echo, fanout, and with
    ``lowrate`` the paced runs (after echo, whose capacity sets the high rate). The TLS
    protocol and cipher the client saw go into ``negotiated`` (by case/codec)."""
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    print(
        f"[server-overhead] repeat {repeat + 1}/{sizes.repeat}: starting fresh servers", flush=True
    )
    servers = start_servers(workdir, scenario_path, repeat, tls)
    try:
        for case in ("idle", "echo", "fanout"):
            for job in jobs_for(case, cases, codecs, repeat, tls is not None):
                server = server_for(job, servers)
                tag = f"r{repeat}-{job.case}-{job.impl}-{job.codec}"
                outcome = run_client(client_argv(job, server, sizes, tag), sizes.timeout_s * 3)
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{server.name} died:\n{server.log_tail()}")
                if not outcome.get("ok"):
                    failures.append(
                        f"repeat {repeat} {job.label}: {outcome.get('note')} "
                        f"errors={outcome.get('errors')}"
                    )
                    print(f"[server-overhead] FAILED {failures[-1]}", flush=True)
                    continue
                rows.append(to_row(run_id, job, repeat, outcome))
                if outcome.get("tls") and negotiated is not None:
                    negotiated[f"{job.case}/{job.codec}"] = str(outcome["tls"])
                print(progress(job, rows[-1], repeat, sizes), flush=True)
        if "lowrate" in cases and paced is not None:
            got, failed = run_paced(run_id, repeat, rows, codecs, servers, paced, sizes.timeout_s)
            rows += got
            failures += failed
        first_lines = {name: s.first_line for name, s in servers.items()}
    finally:
        stop_servers(servers)
    return rows, failures, first_lines


# ----------------------------------------------------------------------------- low rate


@dataclass(frozen=True)
class Paced:
    """The low-rate case's sizes: the low rate, the high rate's share of capacity."""

    low_rate_per_s: float
    low_messages: int
    high_share: float
    high_messages: int


def capacity_per_s(
    rows: Sequence[dict[str, Any]], repeat: int, impl: str, codec: str
) -> float | None:
    """The echo case's acked messages per wall-clock second for ``impl``/``codec`` in
    ``repeat`` (None without such a row): the server's closed-loop capacity."""
    for row in rows:
        key = (row["case"], row["impl"], row["codec"], row["repeat"])
        if key == ("echo", impl, codec, repeat) and row["wall_s"] > 0:
            return float(row["messages"]) / float(row["wall_s"])
    return None


def paced_plan(
    rows: Sequence[dict[str, Any]], repeat: int, codecs: Sequence[str], paced: Paced
) -> list[tuple[str, str, str, float]]:
    """``(case, impl, codec, rate_per_s)`` of every paced run of a repeat: ours per codec
    at the low rate and at ``high_share`` × its echo capacity, bare at the low rate and
    at ours' first codec's high rate; rotated by ``repeat`` like the other cases. A codec
    without an echo row (its echo run failed) gets no high-rate run."""
    plan: list[tuple[str, str, str, float]] = []
    bare_high: float | None = None
    for codec in codecs:
        plan.append(("lowrate", "ours", codec, paced.low_rate_per_s))
        capacity = capacity_per_s(rows, repeat, "ours", codec)
        if capacity is not None:
            high = capacity * paced.high_share
            plan.append(("highrate", "ours", codec, high))
            bare_high = high if bare_high is None else bare_high
    plan.append(("lowrate", "bare", "none", paced.low_rate_per_s))
    if bare_high is not None:
        plan.append(("highrate", "bare", "none", bare_high))
    shift = repeat % len(plan)
    return plan[shift:] + plan[:shift]


def paced_argv(
    server: ServerProc, impl: str, codec: str, rate_per_s: float, messages: int,
    timeout_s: float, tag: str,
) -> list[str]:  # fmt: skip
    argv = [
        sys.executable, "-m", PACED_CLIENT, "--impl", impl, "--url", server.url,
        "--server-pid", str(server.pid), "--rate-per-s", f"{rate_per_s:.3f}",
        "--messages", str(messages), "--timeout-s", str(timeout_s), "--tag", tag,
    ]  # fmt: skip
    if impl == "ours":
        argv += ["--codec", codec]
    return argv


def paced_row(
    run_id: str, case: str, impl: str, codec: str, repeat: int, outcome: dict[str, Any]
) -> dict[str, Any]:
    cpu, messages = float(outcome["server_cpu_s"]), int(outcome["messages"])
    nan = float("nan")
    return {
        "run_id": run_id,
        "case": case,
        "impl": impl,
        "codec": codec,
        "repeat": repeat,
        "messages": messages,
        "deliveries": 0,
        "server_cpu_s": cpu,
        "cpu_us_per_msg": cpu / messages * 1e6 if messages else nan,
        "cpu_us_per_delivery": nan,
        "rss_kib_per_conn": nan,
        "connections": 1,
        "wall_s": float(outcome["wall_s"]),
        "client_cpu_s": float(outcome["client_cpu_s"]),
        "offered_per_s": float(outcome["rate_per_s"]),
        "achieved_per_s": float(outcome["achieved_per_s"]),
        "lag_p99_ms": float(outcome["lag_p99_ms"]),
    }


def run_paced(
    run_id: str,
    repeat: int,
    echo_rows: Sequence[dict[str, Any]],
    codecs: Sequence[str],
    servers: dict[str, ServerProc],
    paced: Paced,
    timeout_s: float,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every paced run of one repeat (:func:`paced_plan`) against the running servers."""
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for case, impl, codec, rate in paced_plan(echo_rows, repeat, codecs, paced):
        server = servers["ours" if impl == "ours" else "bare-echo"]
        messages = paced.low_messages if case == "lowrate" else paced.high_messages
        tag = f"r{repeat}-{case}-{impl}-{codec}"
        argv = paced_argv(server, impl, codec, rate, messages, timeout_s, tag)
        outcome = run_client(argv, timeout_s * 3)  # its last stdout line is the JSON outcome
        label = f"{case:8} {impl}/{codec} at {rate:,.0f}/s"
        if not outcome.get("ok"):
            failures.append(f"repeat {repeat} {label}: {outcome.get('note')}")
            print(f"[server-overhead] FAILED {failures[-1]}", flush=True)
            continue
        rows.append(paced_row(run_id, case, impl, codec, repeat, outcome))
        row = rows[-1]
        print(
            f"[server-overhead] repeat {repeat + 1} {label:34} {row['cpu_us_per_msg']:8.2f} "
            f"µs/msg     (achieved {row['achieved_per_s']:,.0f}/s, lag p99 "
            f"{row['lag_p99_ms']:.1f} ms)",
            flush=True,
        )
    return rows, failures


def low_high_ratios(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Median over repeats of lowrate ÷ highrate CPU per message, each pair from the same
    repeat, per (impl, codec)."""
    by_key = {(r["case"], r["impl"], r["codec"], r["repeat"]): r for r in rows}
    ratios: dict[tuple[str, str], list[float]] = {}
    for (case, impl, codec, repeat), row in by_key.items():
        high = by_key.get(("highrate", impl, codec, repeat))
        if case != "lowrate" or high is None or not high["cpu_us_per_msg"] > 0:
            continue
        ratios.setdefault((impl, codec), []).append(row["cpu_us_per_msg"] / high["cpu_us_per_msg"])
    return {key: statistics.median(values) for key, values in ratios.items()}


# ----------------------------------------------------------------------------- summary


def medians(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
    """Median of each case's figure per (case, impl, codec)."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["case"], row["impl"], row["codec"]), []).append(
            row[TARGETS[row["case"]][0]]
        )
    return {key: statistics.median(values) for key, values in groups.items()}


def paired_ratios(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Median over repeats of ours/bare, each pair from the same repeat."""
    by_key = {(r["case"], r["impl"], r["codec"], r["repeat"]): r for r in rows}
    ratios: dict[tuple[str, str], list[float]] = {}
    for (case, impl, codec, repeat), row in by_key.items():
        bare = by_key.get((case, "bare", "none", repeat))
        if impl != "ours" or bare is None:
            continue
        column = TARGETS[case][0]
        if bare[column] > 0:
            ratios.setdefault((case, codec), []).append(row[column] / bare[column])
    return {key: statistics.median(values) for key, values in ratios.items()}


def tls_ratios(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
    """Median over repeats of ours-tls / ours, each pair from the same repeat, for the
    case's figure and, for idle, the opening CPU too: ``{(case, codec, column): ratio}``."""
    by_key = {(r["case"], r["impl"], r["codec"], r["repeat"]): r for r in rows}
    ratios: dict[tuple[str, str, str], list[float]] = {}
    for (case, impl, codec, repeat), row in by_key.items():
        plain = by_key.get((case, "ours", codec, repeat))
        if impl != TLS_IMPL or plain is None:
            continue
        columns = [TARGETS[case][0]] + (["server_cpu_s"] if case == "idle" else [])
        for column in columns:
            if plain[column] > 0:
                ratios.setdefault((case, codec, column), []).append(row[column] / plain[column])
    return {key: statistics.median(values) for key, values in ratios.items()}


def stage_ratios(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Median over repeats of ours ÷ ours-nostages, echo server CPU per message, each pair
    from the same repeat: ``{codec: ratio}`` (1.02: the stage histograms and the
    collector's hook cost 2 % of a message)."""
    by_key = {(r["case"], r["impl"], r["codec"], r["repeat"]): r for r in rows}
    ratios: dict[str, list[float]] = {}
    for (case, impl, codec, repeat), row in by_key.items():
        plain = by_key.get((case, NOSTAGES_IMPL, codec, repeat))
        if case != "echo" or impl != "ours" or plain is None:
            continue
        if plain["cpu_us_per_msg"] > 0:
            ratios.setdefault(codec, []).append(row["cpu_us_per_msg"] / plain["cpu_us_per_msg"])
    return {codec: statistics.median(values) for codec, values in sorted(ratios.items())}


def format_stage_ratios(ratios: dict[str, float]) -> str:
    """One line: what the stage metrics cost per echo message, per codec."""
    if not ratios:
        return "[server-overhead] stage metrics: not measured (no ours-nostages echo)"
    parts = ", ".join(f"{codec} {r:.3f}× ({(r - 1) * 100:+.1f} %)" for codec, r in ratios.items())
    return (
        "[server-overhead] stage metrics (ours ÷ ours-nostages, echo CPU per message, "
        f"median of per-repeat ratios): {parts}"
    )


def verdicts(
    med: dict[tuple[str, str, str], float],
    ratios: dict[tuple[str, str], float],
    tls: dict[tuple[str, str, str], float] | None = None,
    low_high: dict[tuple[str, str], float] | None = None,
) -> list[dict[str, Any]]:
    """One line per (case, impl, codec): median, ratio vs bare, target and PASS/MISS for
    ours; ratio vs plain (ours) for ours-tls, which has no target; lowrate lines carry
    ``ratio_low_high``, which their verdict (ours) is about, and highrate lines none."""
    lines = []
    for (case, impl, codec), value in sorted(med.items(), key=_table_order):
        column, target, unit = TARGETS[case]
        ratio = ratios.get((case, codec)) if impl == "ours" else None
        vs_plain = (tls or {}).get((case, codec, column)) if impl == TLS_IMPL else None
        low_high_ratio = (low_high or {}).get((impl, codec)) if case == "lowrate" else None
        line: dict[str, Any] = {
            "case": case,
            "impl": impl,
            "codec": codec,
            "figure": column,
            "median": value,
            "unit": unit,
            "ratio_vs_bare": ratio,
            "ratio_vs_plain": vs_plain,
            "ratio_low_high": low_high_ratio,
        }
        if impl == "ours" and case != "highrate":
            measured = {"idle": value, "lowrate": low_high_ratio}.get(case, ratio)
            line["target"] = {"idle": f"≤ {target:g} KiB", "lowrate": f"≤ {target:g}× hi"}.get(
                case, f"≤ {target:g}×"
            )
            line["verdict"] = "PASS" if measured is not None and measured <= target else "MISS"
        lines.append(line)
    return lines


def _table_order(item: tuple[tuple[str, str, str], float]) -> tuple[int, int, str]:
    (case, impl, codec), _ = item
    return (CASE_ORDER.index(case), IMPL_ORDER.index(impl), codec)


def _times(ratio: float | None) -> str:
    return f"{ratio:.2f}×" if ratio is not None else ""


def format_table(lines: Sequence[dict[str, Any]], repeats: int) -> str:
    out = [
        f"{'case':9}{'impl':14}{'codec':10}{'median':>10} {'unit':13}{'vs bare':>8}"
        f"{'vs plain':>9}{'low÷high':>9}  {'target':12}verdict   (median of {repeats})"
    ]
    for line in lines:
        out.append(
            f"{line['case']:9}{line['impl']:14}{line['codec']:10}{line['median']:10.2f} "
            f"{line['unit']:13}{_times(line['ratio_vs_bare']):>8}"
            f"{_times(line.get('ratio_vs_plain')):>9}"
            f"{_times(line.get('ratio_low_high')):>9}  "
            f"{line.get('target', ''):12}{line.get('verdict', '')}"
        )
    return "\n".join(out)


def tls_summary(tls: dict[tuple[str, str, str], float]) -> list[dict[str, Any]]:
    """The manifest's ``tls_vs_plain``: one entry per (case, codec, figure)."""
    order = CASE_ORDER
    return [
        {"case": case, "codec": codec, "figure": column, "ratio": ratio}
        for (case, codec, column), ratio in sorted(
            tls.items(), key=lambda item: (order.index(item[0][0]), item[0][1], item[0][2])
        )
    ]


def format_tls(tls: dict[tuple[str, str, str], float]) -> str:
    """Every TLS ÷ plain ratio, one a line, e.g. ``  echo   json     cpu_us_per_msg  1.31×``."""
    head = "[server-overhead] TLS ÷ plain (ours-tls / ours, median of per-repeat ratios):"
    lines = [
        f"  {e['case']:7}{e['codec']:10}{e['figure']:21}{e['ratio']:6.2f}×"
        for e in tls_summary(tls)
    ]
    return "\n".join([head, *(lines or ["  none (no pair of rows)"])])


# ----------------------------------------------------------------------------- main


def tls_manifest(tls: TlsFiles | None, negotiated: dict[str, str]) -> dict[str, Any] | None:
    """What ours-tls ran with (None with ``--no-tls``): the certificate's origin, the key
    type, what the client negotiated, and how the ratio is formed."""
    if tls is None:
        return None
    return {
        "impl": TLS_IMPL,
        "certificate": "throwaway trustme CA + leaf for 127.0.0.1, made in the run's "
        "temporary folder and deleted with it",
        "key_type": tls.key_type,
        "negotiated": negotiated,
        "ratio": "median over repeats of ours-tls/ours in the same repeat",
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench server-overhead", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", default="results/server-overhead", help="parent of the run folder")
    p.add_argument("--scenario", default="scenarios/smoke.toml", help="base scenario")
    p.add_argument("--quick", action="store_true", help="smaller sizes (see each flag)")
    p.add_argument("--repeat", type=int, default=3, help="repeats per case (median)")
    p.add_argument("--messages", type=int, help="echo: measured sends (20,000; quick 2,000)")
    p.add_argument("--window", type=int, default=100, help="echo: sends in flight")
    p.add_argument("--fanout-messages", type=int, help="fanout: sends (2,000; quick 300)")
    p.add_argument("--fanout-window", type=int, default=20, help="fanout: sends in flight")
    p.add_argument("--room-size", type=int, default=50, help="fanout: connections in the room")
    p.add_argument("--idle-connections", type=int, help="idle: connections (5,000; quick 500)")
    p.add_argument("--low-rate-per-s", type=float, default=100.0, help="lowrate: the low rate")
    p.add_argument("--low-rate-messages", type=int, help="lowrate: sends at it (500; quick 200)")
    p.add_argument(
        "--high-share", type=float, default=0.8, help="lowrate: high rate ÷ echo capacity"
    )
    p.add_argument(
        "--high-rate-messages",
        type=int,
        help="lowrate: sends at the high rate (10,000; quick 3,000)",
    )
    p.add_argument(
        "--cases",
        default="echo,fanout,idle,lowrate",
        help="comma-separated subset of echo,fanout,idle,lowrate (lowrate runs echo too)",
    )
    p.add_argument("--codec", default="json,protobuf", help="our codecs, comma-separated")
    p.add_argument("--timeout-s", type=float, default=120.0, help="bound of each client wait")
    p.add_argument(
        "--no-tls", action="store_true", help="leave out ours-tls (our server over wss://)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra scenario override for our server, e.g. --set server.pool.size=1",
    )
    return p


def resolve_sizes(args: argparse.Namespace) -> Sizes:
    def pick(value: int | None, full: int, quick: int) -> int:
        return value if value is not None else (quick if args.quick else full)

    return Sizes(
        messages=pick(args.messages, 20_000, 2_000),
        window=args.window,
        fanout_messages=pick(args.fanout_messages, 2_000, 300),
        fanout_window=args.fanout_window,
        room_size=args.room_size,
        idle_connections=pick(args.idle_connections, 5_000, 500),
        repeat=args.repeat,
        timeout_s=args.timeout_s,
    )


def resolve_paced(args: argparse.Namespace) -> Paced:
    """The low-rate case's sizes; ValueError naming the flag for a bad one."""
    quick = args.quick
    paced = Paced(
        low_rate_per_s=args.low_rate_per_s,
        low_messages=args.low_rate_messages or (200 if quick else 500),
        high_share=args.high_share,
        high_messages=args.high_rate_messages or (3_000 if quick else 10_000),
    )
    if not paced.low_rate_per_s > 0:
        raise ValueError(f"--low-rate-per-s {paced.low_rate_per_s!r}: must be > 0")
    if not 0 < paced.high_share <= 1:
        raise ValueError(f"--high-share {paced.high_share!r}: must be in (0, 1]")
    for flag, value in (
        ("--low-rate-messages", paced.low_messages),
        ("--high-rate-messages", paced.high_messages),
    ):
        if value < 1:
            raise ValueError(f"{flag} {value!r}: must be >= 1")
    return paced


def main(argv: Sequence[str] | None = None) -> int:
    """Run every case ``--repeat`` times, print the table, write the run folder."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    sizes = resolve_sizes(args)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    codecs = [c.strip() for c in args.codec.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES] + [c for c in codecs if c not in OUR_CODECS]
    if "lowrate" in cases and "echo" not in cases:
        cases.append("echo")  # its capacity sets the high rate
    try:
        paced = resolve_paced(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (
        bad
        or not cases
        or not codecs
        or sizes.repeat < 1
        or min(
            sizes.messages,
            sizes.window,
            sizes.fanout_messages,
            sizes.fanout_window,
            sizes.room_size,
            sizes.idle_connections,
        )
        < 1
    ):
        print(
            f"error: bad arguments {bad or ''} (sizes and --repeat must be >= 1)", file=sys.stderr
        )
        return 2
    try:
        scenario = bench_scenario(args.scenario, args.set)
        if scenario.server.tls.enabled:
            raise BadInput(
                "server.tls is on in the base scenario: ours must be plain "
                "(ours-tls adds a throwaway certificate itself)"
            )
    except (ScenarioError, BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    nofile = raise_nofile_limit()  # children inherit it, our server included
    created = datetime.now(UTC)
    run_id = new_run_id(created, "quick" if args.quick else "")
    run_dir = Path(args.out) / run_id
    print(
        f"[server-overhead] {run_id}: cases {','.join(cases)}, codecs {','.join(codecs)}, "
        f"{sizes.repeat} repeat(s), RLIMIT_NOFILE {nofile}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    first_lines: dict[str, str] = {}
    negotiated: dict[str, str] = {}
    tls: TlsFiles | None = None
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="chatcap-overhead-") as tmp:
        workdir = Path(tmp)
        scenario_path = workdir / "scenario.toml"
        scenario_path.write_text(to_toml(scenario, comments=False))
        if not args.no_tls:
            try:
                tls = throwaway_tls(workdir / "tls")
            except BadInput as exc:
                print(f"error: {exc} (or pass --no-tls)", file=sys.stderr)
                return 2
            tls_scenario = scenario.with_overrides(tls.overrides())
            tls_scenario_path(scenario_path).write_text(to_toml(tls_scenario, comments=False))
        if "echo" in cases:
            bare_metrics = scenario.with_overrides({"server.stage_metrics": False})
            nostages_scenario_path(scenario_path).write_text(to_toml(bare_metrics, comments=False))
        for repeat in range(sizes.repeat):
            got, failed, first_lines = run_repeat(
                run_id, repeat, sizes, cases, codecs, scenario_path, workdir, tls, negotiated, paced
            )
            rows += got
            failures += failed
    med, ratios, vs_plain = medians(rows), paired_ratios(rows), tls_ratios(rows)
    stages = stage_ratios(rows)
    low_high = low_high_ratios(rows)
    lines = verdicts(med, ratios, vs_plain, low_high)
    manifest = new_manifest(
        run_id,
        ["python", "-m", "bench", "server-overhead", *argv],
        created.isoformat(),
        scenario=scenario.to_dict(),
        seed=scenario.seed,
        sizes=sizes.__dict__,
        cases=cases,
        codecs=codecs,
        scenario_overrides=SCENARIO_OVERRIDES,
        extra_overrides=args.set,
        targets={
            case: {"figure": col, "target": t, "unit": unit}
            for case, (col, t, unit) in TARGETS.items()
            if not math.isnan(t)
        },
        statistic="median",
        ratio="median over repeats of ours/bare in the same repeat",
        paced=paced.__dict__ if "lowrate" in cases else None,
        low_high={f"{impl}/{codec}": r for (impl, codec), r in sorted(low_high.items())},
        idle_connections_joined="ours: each joined to one of 100 rooms; bare: connected",
        servers=first_lines,
        summary=lines,
        tls=tls_manifest(tls, negotiated),
        tls_vs_plain=tls_summary(vs_plain),
        stage_metrics_vs_none={
            "ratio": "median over repeats of ours/ours-nostages, echo cpu_us_per_msg",
            "by_codec": stages,
        },
        failures=failures,
        rlimit_nofile=nofile,
    )
    write_manifest(run_dir, manifest)
    write_table(run_dir / "overhead.csv", rows, OVERHEAD_COLUMNS)
    print(format_table(lines, sizes.repeat))
    if tls is not None:
        print(format_tls(vs_plain))
    print(format_stage_ratios(stages))
    for failure in failures:
        print(f"[server-overhead] failed: {failure}")
    print(f"[server-overhead] wrote {run_dir}/{{manifest.json,overhead.csv}}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
