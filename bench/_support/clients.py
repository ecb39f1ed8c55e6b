"""The asyncio load client (:mod:`bench.micro.loadclient`) run as a subprocess.

* :class:`Sizes` (messages, windows, room size, connections, timeout) and :class:`Job`
  (case, ``ours``, ``ours-tls`` or ``bare``, codec) — what one client run does;
* :func:`client_argv` → the command line (``--ca-file`` when the server announced
  ``wss://`` and names a CA), :func:`run_client` → its one-line JSON outcome;
* :func:`run_case` — one echo or fan-out case against our server (``calibrate`` and the
  ``regress`` gate's trials).

The client runs in a process of its own: asyncio never meets gevent, and its CPU is
never counted as the server's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from bench._support.servers import ServerProc

LOADCLIENT = "bench.micro.loadclient"
WINDOW = 20  # sends in flight, the same for every point: batching stays comparable


@dataclass(frozen=True)
class Sizes:
    messages: int
    window: int
    fanout_messages: int
    fanout_window: int
    room_size: int
    idle_connections: int
    repeat: int
    timeout_s: float


@dataclass(frozen=True)
class Job:
    case: str
    impl: str  # "ours", "ours-tls" (over TLS), "ours-nostages" (no stage metrics) or "bare"
    codec: str  # "none" for bare

    @property
    def label(self) -> str:
        return f"{self.case:6} {self.impl}/{self.codec}"

    @property
    def protocol(self) -> str:
        """What the load client speaks (``--impl``): ``ours`` (chat) or ``bare``; TLS
        follows the server's URL."""
        return "bare" if self.impl == "bare" else "ours"


def client_argv(job: Job, server: ServerProc, sizes: Sizes, tag: str) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        LOADCLIENT,
        "--case",
        job.case,
        "--impl",
        job.protocol,
        "--url",
        server.url,
        "--server-pid",
        str(server.pid),
        "--timeout-s",
        str(sizes.timeout_s),
        "--tag",
        tag,
    ]
    if job.protocol == "ours":
        argv += ["--codec", job.codec]
    if server.secure and server.ca_file:
        argv += ["--ca-file", server.ca_file]
    if job.case == "echo":
        argv += ["--messages", str(sizes.messages), "--window", str(sizes.window)]
    elif job.case == "fanout":
        argv += [
            "--messages",
            str(sizes.fanout_messages),
            "--window",
            str(sizes.fanout_window),
            "--members",
            str(sizes.room_size),
        ]
    else:
        argv += ["--connections", str(sizes.idle_connections)]
    return argv


def run_client(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run one load client; its last stdout line is the JSON outcome."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, text=True)
    except subprocess.TimeoutExpired:
        return {"ok": False, "note": f"client killed after {timeout_s:g} s"}
    lines = done.stdout.strip().splitlines()
    try:
        outcome: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ok": False, "note": f"client exit {done.returncode}: {done.stderr[-800:]}"}
    return outcome


def run_case(
    server: ServerProc,
    codec: str,
    room_size: int,
    messages: int,
    timeout_s: float,
    tag: str,
    window: int = WINDOW,
) -> dict[str, Any]:
    """One load-client run (echo when ``room_size`` is 1, else fan-out); its outcome."""
    case = "echo" if room_size == 1 else "fanout"
    sizes = Sizes(messages, window, messages, window, room_size, 1, 1, timeout_s)
    outcome = run_client(client_argv(Job(case, "ours", codec), server, sizes, tag), timeout_s * 3)
    if not outcome.get("ok"):
        raise RuntimeError(f"{case} {codec} K={room_size}: {outcome.get('note')}")
    return outcome
