"""The run orchestrator: measure the reference server under Locust load, write a run folder.

``python -m bench run --scenario FILE [--codec json,protobuf] [--loads 100,200,400]
[--repeat N] [--processes N] [--duration-s S] [--warmup-s S] [--set KEY=VALUE …]
[--out results/<run-id>] [--keep-db]``

For each point — every (replication, offered load, codec), codecs interleaved so that
drift on a shared machine hits both alike — it:

1. starts ``python -m server --scenario <resolved scenario> --port 0 --db <fresh file>``
   (``CHATCAP_JWT_SECRET`` set), waits for its listening line and ``GET /readyz`` = 200;
2. scrapes ``/metrics`` (*before*);
3. runs Locust headless in its own process (never gevent in this one)::

       python -m locust -f bench/locustfile.py --headless -u USERS -r SPAWN -t RUN
           --host http://127.0.0.1:PORT --chat-codec CODEC --chat-scenario FILE
           --chat-send-rate RATE --chat-seed SEED --chat-out chat.json
           --csv locust --html locust.html --exit-code-on-error 0
           [--processes N --master-bind-host 127.0.0.1 --master-bind-port P --master-port P]

   while it runs, every ``--sample-s`` (1 s) it scrapes ``/metrics`` and reads the CPU
   time of the Locust process and its ``--processes`` children from ``/proc/<pid>/stat``
   (by PID) and the machine's from ``/proc/stat``;
4. scrapes ``/metrics`` (*after*), sends SIGTERM to the server and expects exit status 0
   (graceful drain), then turns it all into one ``summary.csv`` row.

**Offered load → users.** An offered load ``L`` sends/s keeps the scenario's
``send_rate_per_user_per_s`` and sets ``users = round(L / rate)`` (at least 1); the
per-user rate is then ``L / users``, so the offered load is exactly ``L``. Above
``--max-users`` (default: the server's ``max_connections_per_ip``, at most 1000) the users
stay at the cap and the per-user rate rises instead (the row's note says so). Users spawn
at ``min(users, server.handshake_rate_per_s)`` per second and Locust runs
``duration + spawn time`` seconds. Rooms fill to the scenario's room size.

**The measured window.** Server-side figures come from the differences of two in-run
scrapes: from ``warm-up`` seconds after the first scrape that saw 95 % of the users
connected, to the last scrape that still did (Locust stops its users at the end, so the
window never holds the ramp or the stop). ``acked_per_s``, ``sent_total``
(frames received), ``acked_total``, ``duration_s``, ``server_cpu_us_per_msg`` (Δ
``chatcap_process_cpu_seconds_total`` ÷ Δ acks) and ``server_ack_p50_ms`` /
``server_ack_p99_ms`` (Δ ``chatcap_ack_latency_seconds`` buckets, interpolated) cover
that window. The client's figures — ack and delivery latency percentiles from the merged
µs HdrHistograms, ``error_rate`` — cover the whole Locust run: the load generator does
not cut a warm-up. ``delivered_per_s`` is the window's goodput times the deliveries per
ack the generator counted (the server does not count fan-out frames). A run too short for
a warm-up cut uses the whole loaded interval, and a run without such scrapes
before → after; the note says which.

**Generator-bound rows.** A row is marked ``generator_bound = true`` (with the reasons in
its note), not reported as server capacity, when the load generator may have set the
pace: a Locust process used ≥ 90 % of a core in the window (``/proc``), or the
``--chat-out`` document says so (:func:`bench.load.report.generator_bound`: a process
over 90 % CPU, or scheduled sends never sent), or the send schedule lagged (schedule lag
p99 over :data:`LAG_P99_MAX_MS`). A smaller lag that is still over half the ack p99
earns a caution note instead (the load went out, but the tail is partly the
generator's; ``ack_from_send`` in ``chat.json`` is the latency without it). On this
2-core machine the server competes with the generator: the note also says when the
whole machine was ≥ 95 % busy.

**Files** (``results/<run-id>/``): ``manifest.json``, ``summary.csv`` (rewritten after
each point, so an interrupted run leaves a valid folder), ``scenario.toml`` (what the
server and Locust read) and ``points/<codec>-<load>-r<replication>/`` with
``chat.json`` (the ``--chat-out`` document: histograms, loss, errors, generator),
``locust_stats.csv``, ``locust_stats_history.csv``, ``locust_failures.csv``,
``locust_exceptions.csv``, ``locust.html``, ``locust.log``, ``server.stdout``,
``server.stderr`` (the server's log), ``metrics-before.txt``, ``metrics-after.txt``,
``samples.csv`` (the in-run scrapes) and ``point.json`` (everything computed, with the
commands, exit codes, window and generator CPU). The store is deleted unless
``--keep-db``.

Exit status: 0; 1 when a point failed (its row carries NaNs and the reason); 2 for bad
input (one line).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._support import metrics_scrape
from bench._support.args import BadInput, OneLineParser, csv_list, load_with_overrides
from bench._support.histo import HistogramSet, LatencyHistogram
from bench._support.host import raise_nofile_limit
from bench._support.metrics_scrape import ACK_LATENCY, Scrape
from bench._support.procstat import ProcessTree, machine_jiffies
from bench._support.servers import (
    LISTEN_URL,
    ServerProc,
    sigterm_as_exit,
    spawn_server,
    stop_server,
    wait_listening,
)
from bench.load.plan import body_text
from bench.load.report import generator_bound
from chatcap.protocol import Deliver, get_codec
from chatcap.results import ResultsError, new_manifest, new_run_id, write_run
from chatcap.scenario import Scenario, ScenarioError, to_toml

__all__ = [
    "CPU_BOUND_PCT",
    "LAG_P99_MAX_MS",
    "LoadShape",
    "Sample",
    "Window",
    "choose_window",
    "deliver_bytes",
    "generator_limits",
    "load_shape",
    "main",
    "summary_row",
]

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "bench" / "locustfile.py"
CODECS = ("json", "protobuf", "mix")
JWT_SECRET = "bench-run-secret-0123456789abcdef-0123456789"  # loopback only, never a real one
CPU_BOUND_PCT = 90.0
"""A generator process at or above this share of one core may have set the pace."""
LAG_P99_MAX_MS = 50.0
"""Sends leaving later than this (p99 of the schedule lag) mean the schedule slipped."""
LAG_SHARE_NOTE = 0.5
"""Schedule lag p99 above this share of the ack p99 earns the row a caution note."""
MACHINE_BUSY_PCT = 95.0
FULL_SHARE = 0.95
"""The share of the users that must be connected for the load to count as on."""
READY_TIMEOUT_S = 30.0
LOCUST_START_ALLOWANCE_S = 60.0  # imports, spawning, and the distributed collect at the end
NAN = math.nan


class PointFailed(RuntimeError):
    """A point could not be measured; the reason goes into its row's note."""


# ----------------------------------------------------------------------------- load shape


@dataclass(frozen=True)
class LoadShape:
    """How an offered load is generated: users × per-user rate, and how fast they spawn."""

    offered_per_s: float
    users: int
    send_rate_per_user_per_s: float
    spawn_rate_per_s: float
    note: str = ""

    @property
    def spawn_s(self) -> float:
        return self.users / self.spawn_rate_per_s


def load_shape(offered_per_s: float, scenario: Scenario, max_users: int) -> LoadShape:
    """Keep the scenario's per-user rate, scale the users (see the module docstring)."""
    if offered_per_s <= 0:
        raise BadInput(f"offered load {offered_per_s:g}: must be > 0")
    rate = scenario.workload.send_rate_per_user_per_s
    users = max(1, round(offered_per_s / rate))
    notes = []
    if users > max_users:
        users = max_users
        notes.append(f"users capped at {max_users}, so the per-user rate rose")
    per_user = offered_per_s / users
    limit = scenario.server.rate_limit
    if limit.algorithm != "none" and per_user > limit.rate_per_s:
        notes.append(
            f"{per_user:g} sends/s per user exceeds the server's rate limit "
            f"({limit.rate_per_s:g}/s): expect rate_limited"
        )
    spawn = float(min(users, scenario.server.handshake_rate_per_s))
    return LoadShape(offered_per_s, users, per_user, spawn, "; ".join(notes))


@dataclass(frozen=True)
class Point:
    """One measurement: a codec at an offered load, in one replication."""

    index: int
    total: int
    codec: str
    shape: LoadShape
    replication: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.codec}-{self.shape.offered_per_s:g}-r{self.replication}"

    def describe(self) -> dict[str, Any]:
        """The point as plain data (manifest, ``point.json``)."""
        shape = self.shape
        return {
            "point": self.name,
            "codec": self.codec,
            "replication": self.replication,
            "seed": self.seed,
            "offered_per_s": shape.offered_per_s,
            "users": shape.users,
            "send_rate_per_user_per_s": shape.send_rate_per_user_per_s,
            "spawn_rate_per_s": shape.spawn_rate_per_s,
            "shape_note": shape.note,
        }


def deliver_bytes(codec: str, body_bytes: int, codec_mix: Mapping[str, float]) -> float:
    """Encoded size of a representative Deliver with a ``body_bytes`` body.

    Ids, seq and times at the magnitudes a run produces (16-digit µs stamps, a
    ``client_msg_id`` like the generator's). ``mix``: the codec mix's weighted mean.
    """
    if codec == "mix":
        total = sum(codec_mix.values())
        return sum(
            w / total * deliver_bytes(name, body_bytes, codec_mix) for name, w in codec_mix.items()
        )
    frame = Deliver(
        room="r0-12",
        seq=123_456,
        sender="u0-123",
        body=body_text(body_bytes),
        ts_us=1_795_000_000_000_000,
        client_msg_id="19ac4e5f2b1.123.4567",
        sent_at_us=1_795_000_000_000_000,
    )
    return float(len(get_codec(codec).encode(frame)))


# ----------------------------------------------------------------------------- /proc


# ----------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Sample:
    """One look at the run: the server's metrics, the generator's CPU, the machine's."""

    t_s: float
    server: Scrape
    generator_cpu_s: Mapping[int, float] = field(default_factory=dict)
    machine: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Window:
    """The measured interval between two samples."""

    start: Sample
    end: Sample
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.end.t_s - self.start.t_s

    def server(self) -> Scrape:
        """What the server counted in the window (counters: end − start)."""
        return self.end.server.minus(self.start.server)

    def generator_cpu_pct(self) -> dict[int, float]:
        """Each generator process's CPU in the window, % of one core."""
        if self.seconds <= 0:
            return {}
        a, b = self.start.generator_cpu_s, self.end.generator_cpu_s
        return {pid: 100.0 * (b[pid] - a[pid]) / self.seconds for pid in b if pid in a}

    def machine_busy_pct(self) -> float:
        """All CPUs' busy share in the window, % (NaN when unknown)."""
        busy = self.end.machine[0] - self.start.machine[0]
        total = self.end.machine[1] - self.start.machine[1]
        return 100.0 * busy / total if total > 0 else NAN


def choose_window(samples: Sequence[Sample], users: int, warmup_s: float) -> Window | None:
    """The window of the module docstring; None when no two samples saw the load on."""
    if not samples:
        return None
    need = max(1, math.ceil(FULL_SHARE * users))
    peak = max(s.server.connections for s in samples)
    notes = []
    if peak < need:
        if peak <= 0:
            return None
        notes.append(f"only {peak:.0f} of {users} users connected")
        need = math.ceil(peak)
    on = [i for i, s in enumerate(samples) if s.server.connections >= need]
    first, last = on[0], on[-1]
    if last == first:
        return None
    start = next(
        (i for i in range(first, last) if samples[i].t_s >= samples[first].t_s + warmup_s), None
    )
    if start is None or samples[last].t_s - samples[start].t_s < 1.0:
        start = first
        notes.append("warm-up not cut (run too short)")
    return Window(samples[start], samples[last], "; ".join(notes))


# ----------------------------------------------------------------------------- figures


def _merged(doc: Mapping[str, Any], name: str) -> LatencyHistogram:
    """The ``name`` histogram of the ``--chat-out`` document, all codecs merged."""
    hists = HistogramSet.from_json(doc.get("histograms", {}))
    merged = LatencyHistogram()
    for hist_name, codec in hists:
        if hist_name == name:
            merged.merge(hists.get(hist_name, codec))
    return merged


def generator_limits(
    doc: Mapping[str, Any],
    cpu_pct_by_process: Mapping[int, float],
    *,
    cpu_pct_max: float = CPU_BOUND_PCT,
    lag_p99_max_ms: float = LAG_P99_MAX_MS,
) -> list[str]:
    """Why the generator, not the server, may have set this point's pace (empty: it kept up).

    ``doc`` is the ``--chat-out`` document (its own CPU and unsent-send check, and the
    schedule lag histogram); ``cpu_pct_by_process`` is each Locust process's CPU in the
    measured window from ``/proc``, % of one core.
    """
    reasons = generator_bound(doc, cpu_pct_max)
    if cpu_pct_by_process:
        top = max(cpu_pct_by_process.values())
        if top >= cpu_pct_max:
            reasons.append(f"a Locust process used {top:.0f}% of a core in the window (/proc)")
    lag = _merged(doc, "schedule_lag")
    if lag.count and lag.percentile_ms(99) > lag_p99_max_ms:
        reasons.append(f"sends left late: schedule lag p99 {lag.percentile_ms(99):.0f} ms")
    return reasons


def lag_note(doc: Mapping[str, Any], share: float = LAG_SHARE_NOTE) -> str:
    """A note when the generator's own lateness is a large part of the ack tail it reports.

    Not a generator-bound verdict (the load went out), a caution on ``ack_p99_ms``:
    ``ack_from_send`` in ``chat.json`` has the latency without the generator's lag.
    """
    lag, ack = _merged(doc, "schedule_lag"), _merged(doc, "ack")
    if not lag.count or not ack.count:
        return ""
    lag_p99, ack_p99 = lag.percentile_ms(99), ack.percentile_ms(99)
    if lag_p99 < 1.0 or lag_p99 <= share * ack_p99:
        return ""
    return (
        f"schedule lag p99 {lag_p99:.1f} ms is {lag_p99 / ack_p99:.0%} of ack p99 "
        f"{ack_p99:.1f} ms: the tail is partly the generator's"
    )


def error_rate(loss: Mapping[str, int]) -> float:
    """Share of answered send attempts that were not acked (in-flight ones left out)."""
    attempts = loss["sent"] + loss["retries"] - loss["unacked"]
    return max(attempts - loss["acked"], 0) / attempts if attempts > 0 else NAN


def summary_row(
    run_id: str,
    scenario: str,
    point: Point,
    doc: Mapping[str, Any],
    window: Window,
    bytes_per_msg: float,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """One ``summary.csv`` row from the generator's document and the measured window."""
    server = window.server()
    seconds = window.seconds
    acked = server.acks
    loss = doc["loss"]
    ack, deliver = _merged(doc, "ack"), _merged(doc, "deliver")
    cpu_pct = window.generator_cpu_pct()
    reasons = generator_limits(doc, cpu_pct)
    acked_per_s = acked / seconds if seconds > 0 else NAN
    per_ack = loss["delivered"] / loss["acked"] if loss["acked"] else NAN
    all_notes = [n for n in (window.note, point.shape.note, *notes) if n]
    busy = window.machine_busy_pct()
    if busy >= MACHINE_BUSY_PCT:
        all_notes.append(f"machine CPU {busy:.0f}% busy (server and generator share it)")
    if reasons:
        all_notes.insert(0, "generator-bound: " + "; ".join(reasons))
    elif lag_note(doc):
        all_notes.append(lag_note(doc))
    return {
        "run_id": run_id,
        "scenario": scenario,
        "source": "measured",
        "codec": point.codec,
        "replication": point.replication,
        "seed": point.seed,
        "offered_per_s": point.shape.offered_per_s,
        "acked_per_s": acked_per_s,
        "delivered_per_s": acked_per_s * per_ack,
        "ack_mean_ms": ack.mean_ms(),
        "ack_p50_ms": ack.percentile_ms(50),
        "ack_p99_ms": ack.percentile_ms(99),
        "deliver_p50_ms": deliver.percentile_ms(50),
        "deliver_p99_ms": deliver.percentile_ms(99),
        "error_rate": error_rate(loss),
        "server_cpu_us_per_msg": server.cpu_s / acked * 1e6 if acked > 0 else NAN,
        "bytes_per_msg": bytes_per_msg,
        "duration_s": seconds,
        "sent_total": int(server.frames_received()),
        "acked_total": int(acked),
        "ack_p999_ms": ack.percentile_ms(99.9),
        "server_ack_p50_ms": server.quantile(ACK_LATENCY, 0.50) * 1000.0,
        "server_ack_p99_ms": server.quantile(ACK_LATENCY, 0.99) * 1000.0,
        "generator_bound": bool(reasons),
        "note": "; ".join(all_notes),
    }


_FIGURES = (
    "acked_per_s",
    "delivered_per_s",
    "ack_mean_ms",
    "ack_p50_ms",
    "ack_p99_ms",
    "deliver_p50_ms",
    "deliver_p99_ms",
    "error_rate",
    "server_cpu_us_per_msg",
)


def failed_row(run_id: str, scenario: str, point: Point, reason: str, bpm: float) -> dict[str, Any]:
    """A row for a point that could not be measured: NaN figures, the reason in the note."""
    row: dict[str, Any] = {
        "run_id": run_id,
        "scenario": scenario,
        "source": "measured",
        "codec": point.codec,
        "replication": point.replication,
        "seed": point.seed,
        "offered_per_s": point.shape.offered_per_s,
        "bytes_per_msg": bpm,
        "note": f"failed: {reason}",
    }
    row.update(dict.fromkeys(_FIGURES, NAN))
    return row


# ----------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Settings:
    """Everything a point needs besides itself."""

    scenario: Scenario
    scenario_path: Path
    run_dir: Path
    processes: int
    duration_s: float
    warmup_s: float
    sample_s: float
    keep_db: bool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(base_url: str, server: ServerProc) -> None:
    """Poll ``GET /readyz`` until 200 (bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base_url + "/readyz", timeout=2.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if server.proc.poll() is not None:
            raise PointFailed(f"server exited with {server.proc.returncode}")
        time.sleep(0.05)
    raise PointFailed(f"server not ready within {READY_TIMEOUT_S:g} s")


def server_argv(settings: Settings, db: Path) -> list[str]:
    return [
        sys.executable, "-m", "server", "--scenario", str(settings.scenario_path),
        "--port", "0", "--db", str(db),
    ]  # fmt: skip


def locust_argv(point: Point, settings: Settings, base_url: str, pdir: Path) -> list[str]:
    shape = point.shape
    run_time_s = math.ceil(settings.duration_s + shape.spawn_s)
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(shape.users), "-r", f"{shape.spawn_rate_per_s:g}", "-t", f"{run_time_s}s",
        "--host", base_url,
        "--chat-codec", point.codec, "--chat-scenario", str(settings.scenario_path),
        "--chat-send-rate", repr(shape.send_rate_per_user_per_s),
        "--chat-seed", str(point.seed), "--chat-out", str(pdir / "chat.json"),
        "--csv", str(pdir / "locust"), "--html", str(pdir / "locust.html"),
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    if settings.processes > 1:
        port = str(free_port())
        argv += [
            "--processes", str(settings.processes), "--master-bind-host", "127.0.0.1",
            "--master-bind-port", port, "--master-port", port,
        ]  # fmt: skip
    return argv


def stop_gracefully(server: ServerProc, drain_timeout_s: float) -> int:
    """SIGTERM by PID and wait out the drain (plus slack); SIGKILL if it lingers.

    Returns the exit status (negative: killed by that signal). Unlike
    :func:`bench._support.servers.stop_server`, the wait follows the scenario's drain.
    """
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(drain_timeout_s + 10.0)
        except subprocess.TimeoutExpired:
            stop_server(server)  # SIGKILL path (by PID), reaps it
    return int(proc.returncode if proc.returncode is not None else -signal.SIGKILL)


def start_locust(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )


def reap(proc: subprocess.Popen[bytes]) -> resource.struct_rusage | None:
    """Reap ``proc`` if it exited (``wait4``: its rusage includes its reaped children)."""
    if proc.returncode is not None:
        return None
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def take_sample(base_url: str, tree: ProcessTree | None) -> Sample | None:
    """Scrape the server and read the generator's and the machine's CPU; None on failure."""
    try:
        scrape = metrics_scrape.fetch(base_url, timeout_s=2.0)
    except (OSError, ValueError):
        return None
    cpu = tree.cpu_s() if tree is not None else {}
    return Sample(time.monotonic(), scrape, cpu, machine_jiffies())


def watch_locust(
    proc: subprocess.Popen[bytes], tree: ProcessTree, base_url: str, sample_s: float, limit_s: float
) -> tuple[list[Sample], float]:
    """Sample until Locust exits; returns the samples and Locust's total CPU seconds."""
    samples: list[Sample] = []
    deadline = time.monotonic() + limit_s
    next_at = time.monotonic()
    while True:
        usage = reap(proc)
        if usage is not None:
            return samples, usage.ru_utime + usage.ru_stime
        now = time.monotonic()
        if now > deadline:
            raise PointFailed(f"locust did not finish within {limit_s:.0f} s")
        if now >= next_at:
            tree.scan()
            sample = take_sample(base_url, tree)
            if sample is not None:
                samples.append(sample)
            next_at = max(next_at + sample_s, now + sample_s / 2)
        time.sleep(0.02)


def stop_locust(proc: subprocess.Popen[bytes], tree: ProcessTree | None) -> None:
    """SIGTERM the Locust process by PID, then SIGKILL; its children by PID too."""
    if proc.returncode is None and reap(proc) is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10.0)
    if tree is not None:
        tree.kill_children()


def write_samples(path: Path, samples: Sequence[Sample]) -> None:
    """The in-run scrapes as CSV: time, server CPU/acks/frames/connections, generator CPU."""
    if not samples:
        return
    t0 = samples[0].t_s
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(
            ["t_s", "server_cpu_s", "acks", "frames_received", "connections",
             "generator_cpu_s", "machine_busy_ticks", "machine_total_ticks"]
        )  # fmt: skip
        for s in samples:
            out.writerow(
                [round(s.t_s - t0, 3), s.server.cpu_s, s.server.acks,
                 s.server.frames_received(), s.server.connections,
                 round(sum(s.generator_cpu_s.values()), 3), *s.machine]
            )  # fmt: skip


# ----------------------------------------------------------------------------- one point


@dataclass
class Measured:
    """What one point's processes left behind."""

    doc: dict[str, Any]
    window: Window
    details: dict[str, Any]


def measure_point(point: Point, settings: Settings, pdir: Path) -> Measured:
    """Server up, Locust run, scrapes, server down (always, in ``finally``)."""
    db = pdir / "store.db"
    env = dict(os.environ, CHATCAP_JWT_SECRET=JWT_SECRET, PYTHONUNBUFFERED="1")
    server = spawn_server("server", server_argv(settings, db), pdir, env)
    locust: subprocess.Popen[bytes] | None = None
    tree: ProcessTree | None = None
    details: dict[str, Any] = {"server_argv": server_argv(settings, db)}
    try:
        try:
            wait_listening(server)
        except RuntimeError as exc:
            raise PointFailed(str(exc).splitlines()[0]) from None
        match = LISTEN_URL.match(server.url)
        base_url = f"http://127.0.0.1:{match.group(1) if match else 0}"
        wait_ready(base_url, server)
        before_text = metrics_scrape.fetch_text(base_url)
        (pdir / "metrics-before.txt").write_text(before_text)
        before = Sample(time.monotonic(), metrics_scrape.parse(before_text), {}, machine_jiffies())
        argv = locust_argv(point, settings, base_url, pdir)
        details["locust_argv"] = argv
        locust = start_locust(argv, pdir / "locust.log")
        tree = ProcessTree(locust.pid)
        limit_s = settings.duration_s + point.shape.spawn_s + LOCUST_START_ALLOWANCE_S
        samples, locust_cpu_s = watch_locust(locust, tree, base_url, settings.sample_s, limit_s)
        after_text = metrics_scrape.fetch_text(base_url)
        (pdir / "metrics-after.txt").write_text(after_text)
        after = Sample(time.monotonic(), metrics_scrape.parse(after_text), {}, machine_jiffies())
        details.update(
            locust_rc=locust.returncode,
            locust_cpu_s=locust_cpu_s,
            locust_wall_s=after.t_s - before.t_s,
            locust_pids=[tree.root, *tree.children],
        )
        write_samples(pdir / "samples.csv", samples)
    finally:
        if locust is not None:
            stop_locust(locust, tree)
        details["server_rc"] = stop_gracefully(server, settings.scenario.server.drain_timeout_s)
        if not settings.keep_db:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
    return _check(point, settings, pdir, samples, before, after, details)


def _check(
    point: Point,
    settings: Settings,
    pdir: Path,
    samples: list[Sample],
    before: Sample,
    after: Sample,
    details: dict[str, Any],
) -> Measured:
    """The point's document and window, or :class:`PointFailed` saying what went wrong."""
    if details["locust_rc"] != 0:
        tail = (pdir / "locust.log").read_text(errors="replace")[-400:].strip()
        raise PointFailed(f"locust exited {details['locust_rc']}: …{tail[-200:]}")
    try:
        doc = json.loads((pdir / "chat.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PointFailed(f"no --chat-out document ({exc})") from None
    window = choose_window(samples, point.shape.users, settings.warmup_s)
    if window is None:
        window = Window(before, after, "no in-run window: whole run, before → after")
    if window.server().acks <= 0:
        raise PointFailed("the server acked nothing in the measured window")
    if details["server_rc"] != 0:
        raise PointFailed(f"server exited {details['server_rc']} after SIGTERM (expected 0)")
    details["window"] = {
        "seconds": window.seconds,
        "start_s": window.start.t_s - before.t_s,
        "end_s": window.end.t_s - before.t_s,
        "note": window.note,
        "generator_cpu_pct": window.generator_cpu_pct(),
        "machine_busy_pct": window.machine_busy_pct(),
        "server": {
            "cpu_s": window.server().cpu_s,
            "acks": window.server().acks,
            "frames_received": window.server().frames_received(),
            "errors_by_code": window.server().errors_by_code(),
            "rate_limited": window.server().rate_limited,
        },
    }
    whole = after.server.minus(before.server)
    details["whole_run_server"] = {
        "cpu_s": whole.cpu_s,
        "acks": whole.acks,
        "frames_received": whole.frames_received(),
        "errors_by_code": whole.errors_by_code(),
        "breaker_transitions": {
            f"{a}->{b}": n for (a, b), n in whole.breaker_transitions().items()
        },
    }
    return Measured(doc, window, details)


def run_point(
    point: Point, settings: Settings, run_id: str, bytes_per_msg: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure one point and turn it into its summary row and its ``point.json``."""
    pdir = settings.run_dir / "points" / point.name
    pdir.mkdir(parents=True, exist_ok=True)
    name = settings.scenario.name
    info = point.describe() | {"processes": settings.processes}
    try:
        measured = measure_point(point, settings, pdir)
    except (PointFailed, OSError) as exc:
        row = failed_row(run_id, name, point, str(exc), bytes_per_msg)
    else:
        row = summary_row(run_id, name, point, measured.doc, measured.window, bytes_per_msg)
        info.update(measured.details)
        info["generator"] = measured.doc.get("generator")
        info["loss"] = measured.doc.get("loss")
        info["client_errors"] = measured.doc.get("errors")
    info["row"] = row
    (pdir / "point.json").write_text(json.dumps(info, indent=2, default=str, allow_nan=True) + "\n")
    return row, info


# ----------------------------------------------------------------------------- output


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


# ----------------------------------------------------------------------------- command line


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
