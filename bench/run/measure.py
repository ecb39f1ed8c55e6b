"""One point, measured: server up, Locust run, window cut, row written.

``point.json`` records the CPU sets (``cpus``: the plan, and what ``/proc`` says each
process had) and each side's CPU in the window (``window.server_cpu_pct``: the server,
% of one core; ``window.generator_cpu_pct``: each Locust process, by PID)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._support import metrics_scrape
from bench._support.cpus import pinned
from bench._support.procstat import ProcessTree, machine_jiffies
from bench._support.servers import spawn_server, wait_listening
from bench.run.figures import failed_row, summary_row
from bench.run.points import Point, PointFailed
from bench.run.processes import (
    JWT_SECRET,
    LOCUST_START_ALLOWANCE_S,
    Settings,
    cpu_record,
    locust_argv,
    server_argv,
    start_locust,
    stop_gracefully,
    stop_locust,
    wait_ready,
    watch_locust,
    write_samples,
)
from bench.run.window import Sample, Window, choose_window


@dataclass
class Measured:
    """What one point's processes left behind."""

    doc: dict[str, Any]
    window: Window
    details: dict[str, Any]


def measure_point(point: Point, settings: Settings, pdir: Path) -> Measured:
    """Server up, Locust run, scrapes, server down (always, in ``finally``).

    The server runs on ``settings.cpus.server``, Locust on ``settings.cpus.generator``,
    and this process — its scrapes and ``/proc`` reads are the measuring side's work — on
    the generator's set too for the point's length (its own set given back after)."""
    with pinned(settings.cpus.generator):
        return _measure_point(point, settings, pdir)


def _measure_point(point: Point, settings: Settings, pdir: Path) -> Measured:
    db = pdir / "store.db"
    env = dict(os.environ, CHATCAP_JWT_SECRET=JWT_SECRET, PYTHONUNBUFFERED="1")
    cpus = settings.cpus
    argv = server_argv(settings, db)
    server = spawn_server("server", argv, pdir, env, settings.ca_file, cpus.server)
    locust: subprocess.Popen[bytes] | None = None
    tree: ProcessTree | None = None
    details: dict[str, Any] = {"server_argv": argv}
    try:
        try:
            wait_listening(server)
        except RuntimeError as exc:
            raise PointFailed(str(exc).splitlines()[0]) from None
        base_url, context = server.base_url, server.client_context()  # https after wss://
        details["server_url"] = server.url
        wait_ready(server)
        before_text = metrics_scrape.fetch_text(base_url, context=context)
        (pdir / "metrics-before.txt").write_text(before_text)
        before = Sample(time.monotonic(), metrics_scrape.parse(before_text), {}, machine_jiffies())
        argv = locust_argv(point, settings, base_url, pdir)
        details["locust_argv"] = argv
        locust = start_locust(argv, pdir / "locust.log", server.client_env(), cpus.generator)
        tree = ProcessTree(locust.pid)
        limit_s = settings.duration_s + point.shape.spawn_s + LOCUST_START_ALLOWANCE_S
        samples, locust_cpu_s = watch_locust(locust, tree, server, settings.sample_s, limit_s)
        details["cpus"] = cpu_record(cpus, server.pid, tree)
        after_text = fetch_after(base_url, context)
        if after_text is not None:
            (pdir / "metrics-after.txt").write_text(after_text)
            scraped = metrics_scrape.parse(after_text)
            after = Sample(time.monotonic(), scraped, {}, machine_jiffies())
        elif samples:  # an overloaded server (a retry storm) may answer no scrape at all
            after = samples[-1]
            details["after_note"] = (
                f"no /metrics answer within {AFTER_SCRAPE_PATIENCE_S:g} s after the run: "
                "the last in-run sample stands for the after-scrape"
            )
        else:
            raise PointFailed(
                f"the server answered no /metrics scrape within {AFTER_SCRAPE_PATIENCE_S:g} s "
                "after the run, nor any during it (overloaded?)"
            )
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


AFTER_SCRAPE_PATIENCE_S = 30.0
"""How long the scrape after a run keeps trying: a server the run overloaded (a retry
storm's backlog) answers ``/metrics`` only once it has worked through what it queued."""


def fetch_after(
    base_url: str,
    context: Any,
    patience_s: float = AFTER_SCRAPE_PATIENCE_S,
    *,
    fetch: Callable[..., str] = metrics_scrape.fetch_text,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> str | None:
    """The ``/metrics`` text after the run, asked again (5 s a try, 0.2 s apart) until
    ``patience_s`` is spent; None when every try failed."""
    deadline = clock() + patience_s
    while True:
        left = deadline - clock()
        try:
            return fetch(base_url, timeout_s=max(0.5, min(5.0, left)), context=context)
        except OSError:
            if deadline - clock() <= 0:
                return None
            pause(0.2)


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
        "server_cpu_pct": window.server_cpu_pct(),
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
    info = point.describe() | {"processes": settings.processes, "cpus": settings.cpus.describe()}
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
