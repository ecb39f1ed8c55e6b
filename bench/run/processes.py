"""The processes of a point: the server, Locust headless in its own process, the samples.

Locust runs as a subprocess (``python -m locust -f bench/locustfile.py``): gevent never
shares a process with this orchestrator. The server is pinned to ``Settings.cpus.server``
and Locust (with the workers it forks) to ``Settings.cpus.generator`` before they exec
(:mod:`bench._support.cpus`); :func:`cpu_record` reads back from ``/proc`` what each got.
Against a server that announced ``wss://`` the readiness poll and the scrapes verify it
with :meth:`ServerProc.client_context`, and Locust gets ``--host https://…`` and
:meth:`ServerProc.client_env` (the CA to trust).
"""

from __future__ import annotations

import csv
import math
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._support import metrics_scrape
from bench._support.cpus import CpuPlan, pinned_preexec, plan_cpus
from bench._support.paths import REPO_ROOT
from bench._support.procstat import ProcessTree, cpus_allowed_list, machine_jiffies
from bench._support.servers import (
    ServerProc,
    stop_server,
)
from bench._support.tls import client_ca_file
from bench.run.points import Point, PointFailed
from bench.run.window import Sample
from chatcap.scenario import Scenario

ROOT = REPO_ROOT
LOCUSTFILE = ROOT / "bench" / "locustfile.py"
JWT_SECRET = "bench-run-secret-0123456789abcdef-0123456789"  # loopback only, never a real one
READY_TIMEOUT_S = 30.0
LOCUST_START_ALLOWANCE_S = 60.0  # imports, spawning, and the distributed collect at the end


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
    cpus: CpuPlan = field(default_factory=plan_cpus)
    """Where the server and Locust run (default: :func:`plan_cpus`, apart when possible)."""

    @property
    def ca_file(self) -> str:
        """What the clients trust when the server speaks TLS (:func:`client_ca_file`)."""
        return client_ca_file(self.scenario)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(server: ServerProc) -> None:
    """Poll ``GET /readyz`` until 200 (bounded); over https, verified as a client would."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    url, context = server.base_url + "/readyz", server.client_context()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2.0, context=context) as resp:
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
        "--chat-warmup-s", f"{settings.warmup_s:g}",
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


def start_locust(
    argv: list[str],
    log: Path,
    extra_env: Mapping[str, str] | None = None,
    cpus: Sequence[int] | None = None,
) -> subprocess.Popen[bytes]:
    """Locust in its own process; ``extra_env``: e.g. the CA it trusts (``client_env``);
    ``cpus``: the generator's CPU set, set before exec, so the ``--processes`` workers it
    forks inherit it (None: this process's set)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
    preexec = pinned_preexec(cpus) if cpus is not None else None
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=preexec,
        )


def isolation_note(settings: Settings) -> str:
    """What a summary row's ``note`` says about the CPU sets: ``""`` when the server and the
    generator ran apart, else why not (one sentence, from :class:`CpuPlan`)."""
    return settings.cpus.note


def cpu_record(plan: CpuPlan, server_pid: int, tree: ProcessTree | None) -> dict[str, Any]:
    """The plan (``server_cpus``, ``generator_cpus``, ``isolated``, ``note``) and, read back
    from ``/proc/<pid>/status``, the set each process really had: the server's and each
    Locust process's (``Cpus_allowed_list``; ``""`` for one already gone)."""
    observed = dict(tree.cpus_allowed) if tree is not None else {}
    return plan.describe() | {
        "server_cores": plan.server_cores(),
        "server_cpus_allowed": cpus_allowed_list(server_pid),
        "generator_cpus_allowed": {str(pid): cpus for pid, cpus in observed.items()},
    }


def reap(proc: subprocess.Popen[bytes]) -> resource.struct_rusage | None:
    """Reap ``proc`` if it exited (``wait4``: its rusage includes its reaped children)."""
    if proc.returncode is not None:
        return None
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def take_sample(
    base_url: str, tree: ProcessTree | None, context: ssl.SSLContext | None = None
) -> Sample | None:
    """Scrape the server and read the generator's and the machine's CPU; None on failure."""
    try:
        scrape = metrics_scrape.fetch(base_url, timeout_s=2.0, context=context)
    except (OSError, ValueError):
        return None
    cpu = tree.cpu_s() if tree is not None else {}
    return Sample(time.monotonic(), scrape, cpu, machine_jiffies())


def watch_locust(
    proc: subprocess.Popen[bytes],
    tree: ProcessTree,
    server: ServerProc,
    sample_s: float,
    limit_s: float,
) -> tuple[list[Sample], float]:
    """Sample until Locust exits; returns the samples and Locust's total CPU seconds."""
    samples: list[Sample] = []
    deadline = time.monotonic() + limit_s
    next_at = time.monotonic()
    base_url, context = server.base_url, server.client_context()
    while True:
        usage = reap(proc)
        if usage is not None:
            return samples, usage.ru_utime + usage.ru_stime
        now = time.monotonic()
        if now > deadline:
            raise PointFailed(f"locust did not finish within {limit_s:.0f} s")
        if now >= next_at:
            tree.scan()
            sample = take_sample(base_url, tree, context)
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
