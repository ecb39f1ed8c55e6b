"""Server processes for the benchmarks: start one, learn where it listens, stop it.

* :class:`ServerProc`, :func:`spawn_server` (output to files, never to a pipe; pinned to
  a CPU set before exec when given one, :mod:`bench._support.cpus`),
  :func:`wait_listening` (the ``ws://`` or ``wss://`` URL of the first stdout line),
  :func:`stop_server` (SIGTERM by PID, then SIGKILL, always reaped); a server knows the CA
  its clients trust, so its :attr:`~ServerProc.base_url`, :meth:`~ServerProc.client_context`
  and :meth:`~ServerProc.client_env` follow the scheme it announced
  (:mod:`bench._support.tls`);
* :func:`start_our_server` — ``python -m server`` on a free port with a fresh store;
* :func:`bench_scenario` — a scenario with :data:`SCENARIO_OVERRIDES` (rate limits and
  connection caps out of the way of a CPU measurement), then ``--set`` overrides;
* :func:`sigterm_as_exit` — SIGTERM raises SystemExit, so ``finally`` blocks stop servers.

Used by ``server-overhead``, ``calibrate``, ``regress``, ``run`` and ``generator``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._support.args import parse_override
from bench._support.cpus import pinned_preexec
from bench._support.tls import http_base, is_secure, tls_env, trust_context
from chatcap.scenario import Scenario, load_scenario

SCENARIO_OVERRIDES: dict[str, Any] = {
    "server.rate_limit.algorithm": "none",
    "server.max_connections_per_ip": 20_000,
    "server.handshake_rate_per_s": 100_000.0,
    "server.handshake_burst": 100_000,
    "server.store.batch_max": 64,
    "server.store.write_queue_max": 100_000,
    "server.outbound_buffer_max_bytes": 256 * 2**20,
    "server.compression": False,
}


JWT_SECRET = "bench-server-overhead-secret-0123456789abcdef"  # loopback only, never a real one


START_TIMEOUT_S = 30.0


STOP_TIMEOUT_S = 15.0


LISTEN_URL = re.compile(r"wss?://[^\s:/]+:(\d+)(\S*)")


@dataclass
class ServerProc:
    """A server subprocess: its pid, its URL, the files its output goes to, and the CA
    bundle its clients trust when it speaks TLS (``""``: the system store)."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    first_line: str
    log_paths: tuple[Path, Path]
    ca_file: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def secure(self) -> bool:
        """Whether the server announced ``wss://`` (TLS on its port)."""
        return is_secure(self.url)

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (``https://`` when the server announced ``wss://``)."""
        return http_base(self.url)

    def client_context(self) -> ssl.SSLContext | None:
        """What an in-process client (a scrape, a readiness poll) verifies the server with;
        None when it speaks plain."""
        return trust_context(self.ca_file) if self.secure else None

    def client_env(self) -> dict[str, str]:
        """What a client subprocess (Locust) needs in its environment to trust the server."""
        return tls_env(self.ca_file) if self.secure else {}

    def log_tail(self, chars: int = 1500) -> str:
        return "".join(p.read_text(errors="replace")[-chars:] for p in self.log_paths)


def spawn_server(
    name: str,
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    ca_file: str = "",
    cpus: Sequence[int] | None = None,
) -> ServerProc:
    """Start ``argv`` with its output going to files, not pipes: a chatty server can never
    block on a full pipe. :func:`wait_listening` then reads its URL. ``ca_file``: what its
    clients trust if it speaks TLS (:func:`bench._support.tls.client_ca_file`); ``cpus``:
    the CPU set it is pinned to before it execs (its threads inherit it; None: this
    process's set, :mod:`bench._support.cpus`)."""
    out_path, err_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    preexec = pinned_preexec(cpus) if cpus is not None else None
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL, preexec_fn=preexec
        )
    return ServerProc(name, proc, "", "", (out_path, err_path), ca_file)


def wait_listening(server: ServerProc) -> None:
    """Wait (bounded) for the first stdout line and take the ws:// or wss:// URL from it."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = server.log_paths[0].read_text(errors="replace")
        if "\n" in text:
            server.first_line = text.split("\n", 1)[0]
            match = LISTEN_URL.search(server.first_line)
            if match is None:
                raise RuntimeError(
                    f"{server.name}: no ws:// or wss:// URL in {server.first_line!r}"
                )
            server.url = match.group(0)
            return
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"{server.name}: no listening line within {START_TIMEOUT_S:g} s")


def stop_server(server: ServerProc) -> None:
    """SIGTERM by PID, wait (bounded), then SIGKILL by PID; always reaps the process."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def bench_scenario(path: str, sets: Sequence[str] = ()) -> Scenario:
    """The base scenario with :data:`SCENARIO_OVERRIDES`, then ``--set`` overrides."""
    overrides = dict(SCENARIO_OVERRIDES)
    overrides.update(parse_override(s) for s in sets)
    return load_scenario(path).with_overrides(overrides)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit, so the ``finally`` that stops the servers still runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_now(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_our_server(
    scenario_path: Path,
    workdir: Path,
    tag: str,
    ca_file: str = "",
    users: Path | None = None,
    cpus: Sequence[int] | None = None,
) -> ServerProc:
    """``python -m server`` on a free port with a fresh store; waits until it listens.
    ``ca_file``: what its clients trust if the scenario turns TLS on; ``users``: the
    password file for ``auth = "users"``; ``cpus``: the CPU set it runs on (None: ours)."""
    env = dict(os.environ, CHATCAP_JWT_SECRET=JWT_SECRET, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "server", "--scenario", str(scenario_path)]
    argv += ["--port", "0", "--db", str(workdir / f"store-{tag}.db")]
    argv += ["--users", str(users)] if users is not None else []
    server = spawn_server(f"ours-{tag}", argv, workdir, env, ca_file, cpus)
    try:
        wait_listening(server)
    except BaseException:
        stop_server(server)
        raise
    return server
