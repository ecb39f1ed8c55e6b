"""The paced (open-loop) client of ``bench server-overhead``'s low-rate case: one line of JSON.

``python -m bench.micro.paced_client --url WS_URL --server-pid PID --rate-per-s R
[--messages N] [--impl ours|bare] [--codec json|protobuf] [--timeout-s S] [--tag T]
[--ca-file PEM]``

One connection (ours: token, subprotocol, a Join of a room of its own) sends ``--messages``
Sends at ``--rate-per-s``, **open loop**: send *i* is due at ``t0 + i / rate``, whatever the
answers do (a late answer never holds the next send back). A warm-up of ~10 % of the
messages (at least one) goes first at the same pace, then the measured phase; the server's
CPU is read just before the measured phase's first send and just after its last answer
(an Ack for ours, the echo for bare).

Server CPU comes from ``/proc/<pid>/task/*/schedstat`` (time on CPU of every thread, ns)
where the kernel has it, else utime + stime of ``/proc/<pid>/stat`` (10 ms ticks, too
coarse for a few hundred messages at 100/s): the line says which (``cpu_source``).

The outcome (:class:`PacedOutcome`) says what was offered and what was kept:
``achieved_per_s`` (measured sends / the time from the first to the last send),
``lag_p99_ms`` (how late the sends left against their due times: the client's own
schedule lag; a high figure means the client, not the server, could not keep the pace).
With ``--gap-ms G`` instead of ``--rate-per-s``: **closed loop with an idle gap** — one send
in flight, the next sent ``G`` ms after the previous answer arrived (``G = 0``: at once), so
that the server's loop is idle for about ``G`` before every message (the cold-path probe
of ``bench calibrate``). The gap is slept with ``time.sleep`` (microsecond-precise; the
event loop's timers are not, and nothing else runs on this connection while it waits).
The outcome then also gives the client's round trip per send (``rtt_p50_ms``,
``rtt_mean_ms``: frame written → its answer read). ``--room-size K`` (gap mode, ours):
``K − 1`` more connections of this process join the sender's room and read its Delivers
(``deliveries``), so that each message fans out to ``K − 1`` readers who were idle for
the gap too (the cold fan-out of ``bench calibrate``).

Exit status 0 when every measured send was answered by an Ack (or echo), else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from websockets.exceptions import ConnectionClosed, WebSocketException

from bench._support.args import BadInput
from bench._support.host import install_uvloop, raise_nofile_limit
from bench._support.procstat import precise_cpu_s
from bench._support.tls import is_secure, trust_context
from bench.micro.loadclient import BODY, WARMUP_SHARE, Link, Plan, open_link
from chatcap.protocol import CODECS, Ack, DecodeError, Error, Send

IMPLS = ("ours", "bare")


@dataclass
class PacedOutcome:
    """The JSON line this process prints."""

    impl: str
    codec: str
    rate_per_s: float
    ok: bool = False
    messages: int = 0  # measured sends answered by an Ack (ours) / the echo (bare)
    failed: int = 0  # measured sends answered by an Error
    server_cpu_s: float = 0.0
    cpu_source: str = ""  # "schedstat" (ns) or "stat" (clock ticks)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    achieved_per_s: float = 0.0
    lag_p99_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    gap_ms: float | None = None  # closed loop with this idle gap (None: open loop)
    room_size: int = 1  # gap mode: the sender and room_size - 1 reading members
    deliveries: int = 0  # Delivers the members read over the measured phase
    rtt_p50_ms: float = 0.0  # gap mode: the client's round trip per send
    rtt_mean_ms: float = 0.0
    note: str = ""


def due_times_s(start_s: float, rate_per_s: float, count: int) -> list[float]:
    """When each of ``count`` open-loop sends is due: ``start + i / rate``."""
    return [start_s + i / rate_per_s for i in range(count)]


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (nearest rank); 0 for no values."""
    return quantile(values, 0.99)


class Answers:
    """Counts what comes back on the connection; ``done`` fires when ``target`` arrived."""

    def __init__(self) -> None:
        self.acked = self.failed = 0
        self.errors: dict[str, int] = {}
        self.target = 0
        self.done = asyncio.Event()

    def expect(self, target: int) -> None:
        self.acked = self.failed = 0
        self.target = target
        self.done.clear()

    def note(self, ok: bool, code: str = "") -> None:
        if ok:
            self.acked += 1
        else:
            self.failed += 1
            self.errors[code] = self.errors.get(code, 0) + 1
        if self.acked + self.failed >= self.target:
            self.done.set()


async def read_answers(link: Link, answers: Answers) -> None:
    codec = link.codec
    with contextlib.suppress(ConnectionClosed):
        while True:
            frame = await link.ws.recv(decode=False)
            if codec is None:  # bare: every frame is the echo of a send
                answers.note(True)
                continue
            msg = codec.decode(frame)
            if type(msg) is Ack:
                answers.note(True)
            elif type(msg) is Error:
                answers.note(False, msg.code)
            # a Deliver (another member's message) or anything else: not an answer


async def paced_phase(
    link: Link, tag: str, room: str, first_id: int, count: int, rate_per_s: float
) -> tuple[float, list[float]]:
    """Send ``count`` messages on the open-loop schedule; returns (the time from the
    first to the last send, each send's lag behind its due time in s)."""
    codec = link.codec or CODECS["json"]  # bare: our JSON Send frame as opaque text
    text = codec.text
    loop_clock = time.perf_counter
    due = due_times_s(loop_clock(), rate_per_s, count)
    lags: list[float] = []
    for i, due_s in enumerate(due):
        wait_s = due_s - loop_clock()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        msg = Send(
            client_msg_id=f"{tag}-{first_id + i}",
            room=room,
            body=BODY,
            sent_at_us=time.time_ns() // 1000,
        )
        await link.send_frame(codec.encode(msg), text)
        lags.append(max(0.0, loop_clock() - due_s))
    return (loop_clock() - due[0]) if due else 0.0, lags


async def next_answer(link: Link) -> bool:
    """Read frames until the answer to the one send in flight: True for an Ack (or
    bare's echo), False for an Error; other frames are skipped."""
    codec = link.codec
    while True:
        frame = await link.ws.recv(decode=False)
        if codec is None:
            return True
        msg = codec.decode(frame)
        if type(msg) is Ack:
            return True
        if type(msg) is Error:
            return False


async def gapped_phase(
    link: Link, tag: str, room: str, first_id: int, count: int, gap_s: float, answers: Answers
) -> list[float]:
    """``count`` sends, one in flight, each ``gap_s`` after the previous answer; each
    send's round trip (s). Answers are counted into ``answers``."""
    codec = link.codec or CODECS["json"]
    text, clock, rtts = codec.text, time.perf_counter, []
    for i in range(count):
        if gap_s > 0:
            time.sleep(gap_s)  # blocks this loop on purpose: nothing else is in flight
        msg = Send(
            client_msg_id=f"{tag}-{first_id + i}",
            room=room,
            body=BODY,
            sent_at_us=time.time_ns() // 1000,
        )
        sent = clock()
        await link.send_frame(codec.encode(msg), text)
        ok = await next_answer(link)
        rtts.append(clock() - sent)
        answers.note(ok, "" if ok else "error")
    return rtts


async def read_delivers(link: Link, count: list[int]) -> None:
    """A member's reader: every frame it gets counts (the room's Delivers), until
    cancelled or closed."""
    with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
        while True:
            await link.ws.recv(decode=False)
            count[0] += 1


async def run_gapped(plan: Plan, gap_s: float, out: PacedOutcome, room_size: int = 1) -> None:
    """Gap mode (see the module docstring): warm-up, then the measured sends."""
    link = await open_link(plan, f"gap-{plan.tag}")
    room = f"gap-{plan.tag}"
    answers = Answers()
    members: list[Link] = []
    readers: list[asyncio.Task[None]] = []
    delivered = [0]
    out.room_size = room_size
    try:
        if link.codec is not None:
            await link.join(room, plan.timeout_s)
            for i in range(room_size - 1):
                member = await open_link(plan, f"gap-{plan.tag}-m{i}")
                members.append(member)
                await member.join(room, plan.timeout_s)
                readers.append(asyncio.create_task(read_delivers(member, delivered)))
        async with asyncio.timeout(plan.timeout_s):
            warmup = max(1, int(plan.messages * WARMUP_SHARE))
            answers.expect(warmup)
            await gapped_phase(link, plan.tag, room, 0, warmup, gap_s, answers)
            answers.expect(plan.messages)
            (cpu0, source), wall0 = precise_cpu_s(plan.server_pid), time.perf_counter()
            own0, delivered0 = time.process_time(), delivered[0]
            rtts = await gapped_phase(link, plan.tag, room, warmup, plan.messages, gap_s, answers)
            cpu1, _ = precise_cpu_s(plan.server_pid)
            out.deliveries = delivered[0] - delivered0
        out.server_cpu_s, out.cpu_source = cpu1 - cpu0, source
        out.wall_s = time.perf_counter() - wall0
        out.client_cpu_s = time.process_time() - own0
        out.messages, out.failed, out.errors = answers.acked, answers.failed, answers.errors
        out.achieved_per_s = plan.messages / out.wall_s if out.wall_s > 0 else 0.0
        out.rtt_p50_ms = quantile(rtts, 0.5) * 1000
        out.rtt_mean_ms = sum(rtts) / len(rtts) * 1000
        out.ok = out.failed == 0 and out.messages == plan.messages
    finally:
        for task in readers:
            task.cancel()
        for one in (link, *members):
            with contextlib.suppress(Exception):
                await one.ws.close()


async def run(plan: Plan, rate_per_s: float, out: PacedOutcome) -> None:
    link = await open_link(plan, f"paced-{plan.tag}")
    room = f"paced-{plan.tag}"
    answers = Answers()
    reader: asyncio.Task[None] | None = None
    try:
        if link.codec is not None:
            await link.join(room, plan.timeout_s)  # before the reader starts: its recv
        reader = asyncio.create_task(read_answers(link, answers))
        warmup = max(1, int(plan.messages * WARMUP_SHARE))
        answers.expect(warmup)
        async with asyncio.timeout(plan.timeout_s):
            await paced_phase(link, plan.tag, room, 0, warmup, rate_per_s)
            await answers.done.wait()
        answers.expect(plan.messages)
        (cpu0, source), wall0 = precise_cpu_s(plan.server_pid), time.perf_counter()
        own0 = time.process_time()
        async with asyncio.timeout(plan.timeout_s):
            sending_s, lags = await paced_phase(
                link, plan.tag, room, warmup, plan.messages, rate_per_s
            )
            await answers.done.wait()
        cpu1, _ = precise_cpu_s(plan.server_pid)
        out.server_cpu_s, out.cpu_source = cpu1 - cpu0, source
        out.wall_s = time.perf_counter() - wall0
        out.client_cpu_s = time.process_time() - own0
        out.messages, out.failed, out.errors = answers.acked, answers.failed, answers.errors
        out.achieved_per_s = (plan.messages - 1) / sending_s if sending_s > 0 else 0.0
        out.lag_p99_ms = p99(lags) * 1000
        out.ok = out.failed == 0 and out.messages == plan.messages
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        with contextlib.suppress(Exception):
            await link.ws.close()


async def run_outcome(
    plan: Plan, rate_per_s: float, gap_ms: float | None = None, room_size: int = 1
) -> PacedOutcome:
    out = PacedOutcome(impl=plan.impl, codec=plan.codec, rate_per_s=rate_per_s, gap_ms=gap_ms)
    started = time.perf_counter()
    try:
        if gap_ms is not None:
            await run_gapped(plan, gap_ms / 1000.0, out, room_size)
        else:
            await run(plan, rate_per_s, out)
    except TimeoutError:
        out.note = f"timed out after {time.perf_counter() - started:.1f} s"
    except (OSError, RuntimeError, DecodeError, WebSocketException) as exc:
        out.note = f"{type(exc).__name__}: {exc}"[:300]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.micro.paced_client", description=__doc__)
    p.add_argument("--impl", choices=IMPLS, default="ours")
    p.add_argument("--codec", choices=tuple(CODECS), default="json", help="ours only")
    p.add_argument("--url", required=True, help="ws:// or wss://127.0.0.1:PORT/... of the server")
    p.add_argument("--server-pid", type=int, required=True, help="whose CPU to read")
    pace = p.add_mutually_exclusive_group(required=True)
    pace.add_argument("--rate-per-s", type=float, help="open loop: sends per second (> 0)")
    pace.add_argument(
        "--gap-ms", type=float, help="closed loop: idle ms between an answer and the next send"
    )
    p.add_argument("--messages", type=int, default=500, help="measured sends (>= 1)")
    p.add_argument(
        "--room-size", type=int, default=1, help="gap mode, ours: the sender + reading members"
    )
    p.add_argument("--timeout-s", type=float, default=120.0, help="bound of each wait")
    p.add_argument("--tag", default=f"q{os.getpid()}", help="unique prefix for names and ids")
    p.add_argument("--ca-file", default="", help="wss://: PEM CA bundle to trust (else system)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    gap_ok = args.gap_ms is None or 0 <= args.gap_ms <= 60_000
    rate_ok = args.rate_per_s is None or args.rate_per_s > 0
    room_ok = args.room_size == 1 or (
        1 < args.room_size <= 1000 and args.gap_ms is not None and args.impl == "ours"
    )
    if not (gap_ok and rate_ok and room_ok) or args.messages < 1:
        print(
            f"error: --rate-per-s {args.rate_per_s!r} must be > 0, --gap-ms "
            f"{args.gap_ms!r} within 0..60000, --messages {args.messages!r} >= 1 and "
            f"--room-size {args.room_size!r} within 1..1000 (above 1: --gap-ms, ours only)",
            file=sys.stderr,
        )
        return 2
    try:
        tls = trust_context(args.ca_file, "--ca-file") if is_secure(args.url) else None
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan = Plan(
        case="echo",
        impl=args.impl,
        codec=args.codec if args.impl == "ours" else "none",
        url=args.url,
        server_pid=args.server_pid,
        messages=args.messages,
        window=1,
        members=1,
        connections=1,
        timeout_s=args.timeout_s,
        tag=args.tag,
        tls=tls,
    )
    raise_nofile_limit()
    install_uvloop()
    out = asyncio.run(run_outcome(plan, args.rate_per_s or 0.0, args.gap_ms, args.room_size))
    print(json.dumps(asdict(out), sort_keys=True), flush=True)
    return 0 if out.ok else 1


if __name__ == "__main__":
    sys.exit(main())
