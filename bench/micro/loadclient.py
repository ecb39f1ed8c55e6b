"""The load client of ``bench server-overhead``: one case against one server, one JSON line.

``python -m bench.micro.loadclient --case echo|fanout|rooms|idle --impl ours|bare --url WS_URL
--server-pid PID [--codec json|protobuf] [--messages N] [--window W] [--members K]
[--connections C] [--scrape] [--timeout-s S] [--ca-file PEM]``

``--scrape`` (ours; echo, fanout, rooms): the server's ``/metrics`` is read at the
measured phase's edges, and the line carries its collector over that phase
(``gc_collections``, ``gc_pause_s`` by generation).

A ``wss://`` URL means TLS for everything this client opens (the token's HTTPS request
and the WebSocket), the server verified against ``--ca-file`` (the system store without
it; :func:`bench._support.tls.trust_context`).

asyncio + ``websockets.asyncio.client`` in a process of its own (never gevent beside
asyncio). It reads the server's CPU (``/proc/<pid>/stat``: utime + stime) and memory
(``/proc/<pid>/status``: VmRSS) itself, right at the edges of the measured phase, and
prints ONE line of JSON (:class:`Outcome`) on stdout; exit status 0 when the case ran
cleanly, 1 otherwise (the line then says why).

Cases — ``ours`` is the chat server (token, subprotocol, Join, Send → Ack + Deliver);
``bare`` is :mod:`bench.micro.bare_server` (no auth, no subprotocol, opaque frames):

* ``echo``: one connection keeps ``--window`` sends in flight until ``--messages`` are
  answered. A slot frees on the Ack (ours; the sender also gets its own Deliver, being a
  room member) or on the echo (bare).
* ``fanout``: ``--members`` connections (all joined to one room for ours; all connected
  for bare), one of them the sender, with ``--window`` sends in flight; a slot frees on
  the Ack (ours) or on the sender's own broadcast copy (bare). Every member counts its
  deliveries; the phase ends when all of them have arrived.
* ``rooms`` (ours only): the shape of a load run — ``--connections`` connections, each
  with its own user, in rooms of ``--members`` (connection ``i`` in room ``i // members``;
  the connections a multiple of the members), and every one of them a sender in turn
  (send ``j`` from connection ``j mod connections`` to its room), ``--window`` sends in
  flight in all; a slot frees on any Ack, and each member but the sender counts a
  Deliver. What a server's heap and collector see under a load generator's users, with
  no generator's schedule in it.
* ``idle``: ``--connections`` connections opened (ours: each with its own user and token,
  joined to one of 100 rooms) and held; RSS is read before the first token is fetched and
  after every connection is open and joined (then a short settle). With ``--hold-s S``
  the connections are then held ``S`` seconds more, doing nothing, and the server's CPU
  over that hold is read on its own (``hold_cpu_s``, schedstat ns where the kernel has
  it): the background cost of open connections (keepalive pings, timers).

echo and fanout first run a warm-up of ~10 % of the messages (not measured), then the
measured phase; the server's CPU is read just before its first send and just after its
last expected frame arrived. Every wait is bounded by ``--timeout-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from bench._support.args import BadInput
from bench._support.host import install_uvloop, raise_nofile_limit
from bench._support.metrics_scrape import GC_PAUSE, Scrape, fetch
from bench._support.procstat import precise_cpu_s, process_cpu_s, rss_kib
from bench._support.tls import http_base, is_secure, trust_context
from chatcap.pipeline.stages import GC_GENERATIONS
from chatcap.protocol import CODECS, Ack, Codec, DecodeError, Deliver, Error, Join, Joined, Send

CASES = ("echo", "fanout", "rooms", "idle")
IMPLS = ("ours", "bare")
IDLE_ROOMS = 100
OPEN_CONCURRENCY = 64
IDLE_SETTLE_S = 1.0
WARMUP_SHARE = 0.1
# ~120 UTF-8 bytes, like the scenarios' default body_bytes, with a little non-ASCII.
BODY = "capacity check: fan-out latency and p99 after the deploy — 请看 dashboard 👍 " + "x" * 40


@dataclass
class Outcome:
    """The JSON line this process prints."""

    case: str
    impl: str
    codec: str
    ok: bool = False
    messages: int = 0  # measured sends answered by an Ack (ours) or an echo/copy (bare)
    failed: int = 0  # measured sends answered by an Error
    deliveries: int = 0  # Deliver (ours) / echo or broadcast copies (bare), measured phase
    members: int = 0
    connections: int = 0
    failed_connections: int = 0
    server_cpu_s: float = 0.0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    tls: str = ""  # wss://: the negotiated protocol and cipher of the first connection
    hold_s: float = 0.0  # idle --hold-s: how long the connections were held, doing nothing
    hold_cpu_s: float = 0.0  # the server's CPU over that hold
    # --scrape: the server's collector over the measured phase, by generation (its
    # /metrics at the phase's edges): collections, and their time (s)
    gc_collections: list[float] = field(default_factory=list)
    gc_pause_s: list[float] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class Plan:
    case: str
    impl: str
    codec: str
    url: str
    server_pid: int
    messages: int
    window: int
    members: int
    connections: int
    timeout_s: float
    tag: str  # makes user names, rooms and client_msg_ids unique per client run
    tls: ssl.SSLContext | None = None  # set for a wss:// URL
    hold_s: float = 0.0  # idle: hold the open connections this long, reading the CPU
    scrape: bool = False  # echo, fanout, rooms: the server's collector over the phase


# ----------------------------------------------------------------------------- links


async def fetch_token(
    host: str, port: int, user: str, timeout_s: float, tls: ssl.SSLContext | None = None
) -> str:
    """``GET /api/v1/token`` with HTTP Basic auth over a raw socket (TLS with ``tls``);
    returns the token."""
    cred = base64.b64encode(f"{user}:bench".encode()).decode()
    request = (
        f"GET /api/v1/token HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Basic {cred}\r\nConnection: close\r\n\r\n"
    ).encode()
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):  # the server closes first
                await writer.wait_closed()
    if status != b"200":
        raise RuntimeError(f"token for {user}: HTTP {status.decode()} {body[:200]!r}")
    return str(json.loads(body)["token"])


class Link:
    """One client connection and how to read what comes back on it."""

    def __init__(self, ws: ClientConnection, codec: Codec | None) -> None:
        self.ws = ws
        self.codec = codec  # None: bare server, frames are opaque

    def tls(self) -> str:
        """``"TLSv1.3 TLS_AES_256_GCM_SHA384"`` over TLS, ``""`` over plain TCP."""
        ssl_object = self.ws.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return ""
        cipher = ssl_object.cipher()
        return f"{ssl_object.version()} {cipher[0] if cipher else '?'}"

    async def send_frame(self, frame: bytes, text: bool) -> None:
        await self.ws.send(frame, text=text)

    async def join(self, room: str, timeout_s: float) -> None:
        assert self.codec is not None
        await self.ws.send(self.codec.encode(Join(room=room)), text=self.codec.text)
        async with asyncio.timeout(timeout_s):
            reply = self.codec.decode(await self.ws.recv(decode=False))
        if not isinstance(reply, Joined):
            raise RuntimeError(f"join {room}: got {reply!r}")


async def open_link(plan: Plan, user: str) -> Link:
    common: dict[str, Any] = {
        "compression": None,
        "proxy": None,
        "ping_interval": None,  # no client pings: keep the server's work to the load
        "open_timeout": plan.timeout_s,
        "max_size": None,
    }
    if plan.tls is not None:
        common["ssl"] = plan.tls
    if plan.impl == "bare":
        return Link(await connect(plan.url, **common), None)
    parts = urlsplit(plan.url)
    assert parts.hostname is not None and parts.port is not None
    token = await fetch_token(parts.hostname, parts.port, user, plan.timeout_s, plan.tls)
    codec = CODECS[plan.codec]
    ws = await connect(
        plan.url,
        subprotocols=[codec.subprotocol],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {token}"},
        **common,
    )
    if ws.subprotocol != codec.subprotocol:
        await ws.close()
        raise RuntimeError(f"server chose subprotocol {ws.subprotocol!r}")
    return Link(ws, codec)


# -------------------------------------------------------------------------- windowed load


class Tally:
    """Counters shared by the readers of one run; ``done`` fires when a phase is complete."""

    def __init__(self) -> None:
        self.deliveries = 0
        self.answered = 0  # acks + errors of the current phase (frees window slots)
        self.acked = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.delivery_target: float = float("inf")
        self.done = asyncio.Event()
        self.on_answer: Callable[[], Awaitable[None]] | None = None

    def start_phase(self) -> None:
        self.deliveries = self.answered = self.acked = self.failed = 0
        self.delivery_target = float("inf")
        self.done.clear()

    def delivered(self) -> None:
        self.deliveries += 1
        if self.deliveries >= self.delivery_target:
            self.done.set()

    def expect_deliveries(self, target: int) -> None:
        self.delivery_target = target
        if self.deliveries >= target:
            self.done.set()


async def reader(link: Link, tally: Tally, is_sender: bool) -> None:
    """Count what arrives on ``link`` until it closes; the sender's answers free slots."""
    codec = link.codec
    try:
        while True:
            frame = await link.ws.recv(decode=False)
            if codec is None:  # bare: every frame is a copy of a sent message
                tally.delivered()
                if not is_sender:
                    continue
                tally.acked += 1
            else:
                msg = codec.decode(frame)
                if type(msg) is Deliver:
                    tally.delivered()
                    continue
                if type(msg) is Ack:
                    tally.acked += 1
                elif type(msg) is Error:
                    tally.failed += 1
                    tally.errors[msg.code] += 1
                else:
                    tally.errors[f"unexpected {type(msg).__name__}"] += 1
                    continue
            tally.answered += 1
            if tally.on_answer is not None:
                await tally.on_answer()
    except ConnectionClosed:
        pass


async def run_phase(
    plan: Plan,
    pick: Callable[[int], tuple[Link, str]],
    tally: Tally,
    first_id: int,
    count: int,
    per_message: int,
) -> None:
    """Send ``count`` messages, send ``i`` from ``pick(i)`` (its link and room), with
    ``plan.window`` in flight; return when all were answered and ``per_message`` Delivers
    of each acked one arrived."""
    json_codec = CODECS["json"]
    sent = 0

    async def send_one() -> None:
        nonlocal sent
        link, room = pick(first_id + sent)
        codec = link.codec
        msg = Send(
            client_msg_id=f"{plan.tag}-{first_id + sent}",
            room=room,
            body=BODY,
            sent_at_us=time.time_ns() // 1000,
        )
        sent += 1
        # bare rows carry our JSON Send frame as opaque text, the same bytes as ours/json
        text = codec.text if codec is not None else True
        await link.send_frame((codec or json_codec).encode(msg), text)

    async def on_answer() -> None:
        if sent < count:
            await send_one()
        elif tally.answered >= count:
            tally.expect_deliveries(tally.acked * per_message)

    tally.start_phase()
    tally.on_answer = on_answer
    for _ in range(min(plan.window, count)):
        await send_one()
    await tally.done.wait()


async def windowed(plan: Plan, out: Outcome) -> None:
    """echo (members = 1) and fanout: warm-up phase, then the measured phase."""
    out.members = plan.members
    links: list[Link] = []
    tasks: list[asyncio.Task[None]] = []
    room = f"ovh-{plan.tag}"
    tally = Tally()
    try:
        for i in range(plan.members):
            link = await open_link(plan, f"bench-{plan.tag}-{i}")
            links.append(link)
            if link.codec is not None:
                await link.join(room, plan.timeout_s)
        out.connections = len(links)
        out.tls = links[0].tls()
        tasks = [asyncio.create_task(reader(lk, tally, i == 0)) for i, lk in enumerate(links)]
        # ours: the sending connection gets the Ack instead of its own Deliver
        per_message = plan.members - 1 if links[0].codec is not None else plan.members
        sender = links[0]
        await measured_phases(plan, out, tally, lambda _: (sender, room), per_message)
    finally:
        await close_all(links, plan.timeout_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def measured_phases(
    plan: Plan,
    out: Outcome,
    tally: Tally,
    pick: Callable[[int], tuple[Link, str]],
    per_message: int,
) -> None:
    """A warm-up of ~:data:`WARMUP_SHARE` of the messages, then the measured phase, the
    server's CPU read at its edges, into ``out``."""
    warmup = max(1, int(plan.messages * WARMUP_SHARE))
    async with asyncio.timeout(plan.timeout_s):
        await run_phase(plan, pick, tally, 0, warmup, per_message)
    before = scrape(plan) if plan.scrape else None
    cpu0, wall0, own0 = process_cpu_s(plan.server_pid), time.perf_counter(), time.process_time()
    async with asyncio.timeout(plan.timeout_s):
        await run_phase(plan, pick, tally, warmup, plan.messages, per_message)
    out.server_cpu_s = process_cpu_s(plan.server_pid) - cpu0
    if before is not None:
        delta = scrape(plan).minus(before)
        out.gc_collections = [
            delta.total(f"{GC_PAUSE}_count", generation=g) for g in GC_GENERATIONS
        ]
        out.gc_pause_s = [delta.total(f"{GC_PAUSE}_sum", generation=g) for g in GC_GENERATIONS]
    out.wall_s = time.perf_counter() - wall0
    out.client_cpu_s = time.process_time() - own0
    out.messages, out.failed, out.deliveries = tally.acked, tally.failed, tally.deliveries
    out.errors = dict(tally.errors)
    out.ok = out.failed == 0 and not out.errors and out.messages == plan.messages


def scrape(plan: Plan) -> Scrape:
    """The server's ``/metrics`` (a blocking GET at a phase's edge, nothing in flight)."""
    return fetch(http_base(plan.url), plan.timeout_s, plan.tls)


async def rooms(plan: Plan, out: Outcome) -> None:
    """``plan.connections`` connections in rooms of ``plan.members``, every one a sender
    in turn (module docstring); warm-up, then the measured phase."""
    if plan.impl != "ours":
        raise RuntimeError("the rooms case needs the chat server (--impl ours)")
    if plan.members < 2 or plan.connections % plan.members:
        raise RuntimeError(
            f"rooms: --connections {plan.connections} must be a multiple of --members "
            f"{plan.members} (≥ 2)"
        )
    out.members = plan.members
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    links: list[Link | None] = [None] * plan.connections
    tasks: list[asyncio.Task[None]] = []
    tally = Tally()

    def room_of(i: int) -> str:
        return f"rooms-{plan.tag}-{i // plan.members}"

    async def open_one(i: int) -> None:
        async with gate:
            link = await open_link(plan, f"rooms-{plan.tag}-{i}")
            links[i] = link
            await link.join(room_of(i), plan.timeout_s)

    try:
        async with asyncio.timeout(plan.timeout_s):
            await asyncio.gather(*(open_one(i) for i in range(plan.connections)))
        opened = [lk for lk in links if lk is not None]
        out.connections = len(opened)
        out.tls = opened[0].tls()
        tasks = [asyncio.create_task(reader(lk, tally, True)) for lk in opened]
        n = plan.connections

        def pick(j: int) -> tuple[Link, str]:
            link = links[j % n]
            assert link is not None
            return link, room_of(j % n)

        await measured_phases(plan, out, tally, pick, plan.members - 1)
    finally:
        await close_all([lk for lk in links if lk is not None], plan.timeout_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ----------------------------------------------------------------------------- idle


async def idle(plan: Plan, out: Outcome) -> None:
    """Open ``plan.connections`` connections, hold them, read the server's RSS."""
    links: list[Link] = []
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one(i: int) -> None:
        async with gate:
            link = await open_link(plan, f"idle-{plan.tag}-{i}")
            links.append(link)
            if link.codec is not None:
                await link.join(f"idle-{plan.tag}-{i % IDLE_ROOMS}", plan.timeout_s)

    try:
        out.rss_before_kib = rss_kib(plan.server_pid)
        cpu0, wall0, own0 = process_cpu_s(plan.server_pid), time.perf_counter(), time.process_time()
        async with asyncio.timeout(plan.timeout_s):
            results = await asyncio.gather(
                *(open_one(i) for i in range(plan.connections)), return_exceptions=True
            )
        failures = [r for r in results if isinstance(r, BaseException)]
        out.failed_connections = len(failures)
        if failures:
            out.note = f"{len(failures)} connections failed, first: {failures[0]!r}"[:300]
        await asyncio.sleep(IDLE_SETTLE_S)
        out.rss_after_kib = rss_kib(plan.server_pid)
        out.server_cpu_s = process_cpu_s(plan.server_pid) - cpu0
        out.wall_s = time.perf_counter() - wall0
        out.client_cpu_s = time.process_time() - own0
        out.connections = plan.connections - len(failures)
        out.tls = links[0].tls() if links else ""
        if plan.hold_s > 0 and not failures:
            (held0, _), t0 = precise_cpu_s(plan.server_pid), time.perf_counter()
            await asyncio.sleep(plan.hold_s)  # the measurement: connections left alone
            (held1, _), out.hold_s = precise_cpu_s(plan.server_pid), time.perf_counter() - t0
            out.hold_cpu_s = held1 - held0
        out.ok = not failures
    finally:
        await close_all(links, plan.timeout_s)


async def close_all(links: Sequence[Link], timeout_s: float) -> None:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY * 4)

    async def close(link: Link) -> None:
        async with gate:
            await link.ws.close()

    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(close(lk) for lk in links), return_exceptions=True)
    except TimeoutError:
        for link in links:
            link.ws.transport.abort()


# ----------------------------------------------------------------------------- main


async def run(plan: Plan) -> Outcome:
    out = Outcome(case=plan.case, impl=plan.impl, codec=plan.codec)
    wall0 = time.perf_counter()
    try:
        if plan.case == "idle":
            await idle(plan, out)
        elif plan.case == "rooms":
            await rooms(plan, out)
        else:
            await windowed(plan, out)
    except TimeoutError:
        out.ok = False
        out.note = (
            f"timed out after {time.perf_counter() - wall0:.1f} s (--timeout-s {plan.timeout_s:g})"
        )
    except (OSError, RuntimeError, DecodeError, WebSocketException) as exc:
        out.ok = False
        out.note = f"{type(exc).__name__}: {exc}"[:300]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.micro.loadclient", description=__doc__)
    p.add_argument("--case", choices=CASES, required=True)
    p.add_argument("--impl", choices=IMPLS, required=True)
    p.add_argument("--codec", choices=tuple(CODECS), default="json", help="ours only")
    p.add_argument("--url", required=True, help="ws:// or wss://127.0.0.1:PORT/... of the server")
    p.add_argument("--server-pid", type=int, required=True, help="whose CPU and RSS to read")
    p.add_argument("--messages", type=int, default=2000, help="measured sends")
    p.add_argument("--window", type=int, default=100, help="sends in flight")
    p.add_argument("--members", type=int, default=1, help="fanout, rooms: connections in a room")
    p.add_argument("--connections", type=int, default=500, help="idle, rooms: connections opened")
    p.add_argument(
        "--hold-s", type=float, default=0.0, help="idle: hold them this long more, reading CPU"
    )
    p.add_argument(
        "--scrape",
        action="store_true",
        help="ours: the server's collector over the measured phase (its /metrics at the edges)",
    )
    p.add_argument("--timeout-s", type=float, default=120.0, help="bound of each wait")
    p.add_argument("--tag", default=f"p{os.getpid()}", help="unique prefix for names and ids")
    p.add_argument("--ca-file", default="", help="wss://: PEM CA bundle to trust (else system)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tls = trust_context(args.ca_file, "--ca-file") if is_secure(args.url) else None
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan = Plan(
        case=args.case,
        impl=args.impl,
        codec=args.codec if args.impl == "ours" else "none",
        url=args.url,
        server_pid=args.server_pid,
        messages=max(1, args.messages),
        window=max(1, args.window),
        members=1 if args.case == "echo" else max(1, args.members),
        connections=max(1, args.connections),
        timeout_s=args.timeout_s,
        tag=args.tag,
        tls=tls,
        hold_s=max(0.0, args.hold_s),
        scrape=args.scrape and args.impl == "ours",
    )
    raise_nofile_limit()
    install_uvloop()
    out = asyncio.run(run(plan))
    print(json.dumps(asdict(out), sort_keys=True), flush=True)
    return 0 if out.ok else 1


if __name__ == "__main__":
    sys.exit(main())
