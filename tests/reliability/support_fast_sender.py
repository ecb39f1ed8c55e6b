"""A sender near the server's capacity, in a process of its own, for kill -9 at high rate.

``python -m tests.reliability.support_fast_sender --url WS_URL --room ROOM --tag T
[--codec json|protobuf] [--probe-messages N] [--share F] [--deadline-s S]`` (the token
comes on ``CHATCAP_FAST_TOKEN``).

1. **Probe**: ``--probe-messages`` Sends with 100 in flight (closed loop, as the echo case
   of ``bench server-overhead``): the server is busy throughout, so acked/s is its
   capacity for this connection (``capacity_per_s``).
2. **Load**: open loop at ``--share`` (0.8) × that capacity, send *i* due at
   ``t0 + i / rate``, until the connection breaks (the test kills the server) or the
   deadline passes.

Every Ack is appended to stdout as it arrives — ``{"event": "ack", "cid": …, "seq": …}``
is too chatty at 10k/s, so acks go out in lines of up to 200 ``[cid, seq]`` pairs
(``{"event": "acks", "acks": [...]}``), flushed at least every 20 ms — so what the test
reads is exactly what this client was told before the kill. Other lines: ``probe``
(capacity) once the probe is done, ``load`` (the rate) as the load starts, and at the end
``done`` with ``sent``, ``achieved_per_s`` (load-phase sends per second) and the reason
it stopped. asyncio + websockets in its own process: never beside gevent, and its CPU is
not the test's.

The test drives it through :class:`FastSender` (start, wait for load-phase acks, kill the
server, collect what was acked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from chatcap.protocol import CODECS, Ack, Codec, Join, Joined, Send
from tests.server.support_writepath import scaled

if TYPE_CHECKING:
    from tests.server.support_chat import ServerProcess

TOKEN_ENV = "CHATCAP_FAST_TOKEN"
PROBE_WINDOW = 100
ACKS_PER_LINE = 200
FLUSH_EVERY_S = 0.02


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Acks:
    """Acked ``[cid, seq]`` pairs, written out in lines (see the module docstring)."""

    def __init__(self) -> None:
        self.count = 0
        self.pending: list[tuple[str, int]] = []
        self.last_flush = time.perf_counter()
        self.answered = asyncio.Event()  # set on every answer: the probe's window
        self.closed = False  # the connection is gone: no answer will come

    def add(self, cid: str, seq: int) -> None:
        self.count += 1
        self.pending.append((cid, seq))
        now = time.perf_counter()
        if len(self.pending) >= ACKS_PER_LINE or now - self.last_flush >= FLUSH_EVERY_S:
            self.flush(now)
        self.answered.set()

    def flush(self, now: float | None = None) -> None:
        if self.pending:
            say("acks", acks=self.pending)
            self.pending = []
        self.last_flush = time.perf_counter() if now is None else now


async def read_acks(ws: ClientConnection, codec: Codec, acks: Acks) -> None:
    try:
        while True:
            msg = codec.decode(await ws.recv(decode=False))
            if type(msg) is Ack:
                acks.add(msg.client_msg_id, msg.seq)
    finally:
        acks.flush()
        acks.closed = True
        acks.answered.set()


def frame(codec: Codec, tag: str, room: str, n: int) -> bytes:
    send = Send(client_msg_id=f"{tag}-{n}", room=room, body=f"{tag} #{n}", sent_at_us=n)
    return codec.encode(send)


async def probe(
    ws: ClientConnection, codec: Codec, acks: Acks, tag: str, room: str, count: int
) -> float:
    """Closed loop with PROBE_WINDOW in flight; returns acked messages per second."""
    started, base = time.perf_counter(), acks.count

    async def until_acked(n: int) -> None:
        while acks.count - base < n:
            if acks.closed:
                raise OSError("the connection closed during the probe")
            acks.answered.clear()
            await acks.answered.wait()

    for n in range(count):
        await until_acked(n + 1 - PROBE_WINDOW)
        await ws.send(frame(codec, tag, room, n), text=codec.text)
    await until_acked(count)
    return count / (time.perf_counter() - started)


class Progress:
    """The load phase so far (kept by :func:`load`, read even after it raised)."""

    def __init__(self) -> None:
        self.sent = 0
        self.started = 0.0
        self.last_sent = 0.0

    @property
    def per_s(self) -> float:
        elapsed = self.last_sent - self.started
        return (self.sent - 1) / elapsed if self.sent > 1 and elapsed > 0 else 0.0


async def load(
    ws: ClientConnection, codec: Codec, tag: str, room: str, first: int, rate_per_s: float,
    deadline: float, progress: Progress,
) -> None:  # fmt: skip
    """Open loop until the connection breaks (raises) or ``deadline``."""
    t0 = progress.started = time.perf_counter()
    while time.perf_counter() < deadline:
        wait_s = t0 + progress.sent / rate_per_s - time.perf_counter()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        await ws.send(frame(codec, tag, room, first + progress.sent), text=codec.text)
        progress.sent += 1
        progress.last_sent = time.perf_counter()


async def run(args: argparse.Namespace) -> int:
    codec = CODECS[args.codec]
    token = os.environ[TOKEN_ENV]
    ws = await connect(
        args.url,
        subprotocols=[codec.subprotocol],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        ping_interval=None,
        max_size=None,
    )
    await ws.send(codec.encode(Join(room=args.room)), text=codec.text)
    if not isinstance(codec.decode(await ws.recv(decode=False)), Joined):
        say("failed", reason="no Joined")
        return 1
    acks = Acks()
    reader = asyncio.create_task(read_acks(ws, codec, acks))
    deadline = time.perf_counter() + args.deadline_s
    progress, reason = Progress(), "deadline"
    try:
        capacity = await probe(ws, codec, acks, args.tag, args.room, args.probe_messages)
        say("probe", capacity_per_s=capacity)
        rate = capacity * args.share
        say("load", rate_per_s=rate)
        await load(ws, codec, args.tag, args.room, args.probe_messages, rate, deadline, progress)
    except (ConnectionClosed, OSError, WebSocketException) as exc:
        reason = f"connection lost: {type(exc).__name__}"
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        acks.flush()
    sent = args.probe_messages + progress.sent
    say("done", sent=sent, achieved_per_s=progress.per_s, reason=reason)
    return 0


class FastSender:
    """The test's side: one sender process and what it reported, read by a thread."""

    def __init__(self, proc: subprocess.Popen[str], room: str) -> None:
        self.proc, self.room = proc, room
        self.acked: list[tuple[str, int]] = []
        self.capacity_per_s = 0.0
        self.load_from: int | None = None  # len(acked) when the load phase began
        self.done: dict[str, Any] | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="fast-sender", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, server: ServerProcess, user: str, codec: str) -> FastSender:
        room = f"{user}-room"
        env = dict(os.environ, **{TOKEN_ENV: server.token(user)})
        argv = [
            sys.executable, "-m", "tests.reliability.support_fast_sender",
            "--url", server.ws_url, "--room", room, "--tag", user, "--codec", codec,
            "--deadline-s", str(scaled(60.0)),
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True)
        return cls(proc, room)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = json.loads(raw)
            with self._changed:
                if line["event"] == "acks":
                    self.acked += [(cid, int(seq)) for cid, seq in line["acks"]]
                elif line["event"] == "probe":
                    self.capacity_per_s = float(line["capacity_per_s"])
                elif line["event"] == "load":
                    self.load_from = len(self.acked)
                elif line["event"] == "done":
                    self.done = line
                self._changed.notify_all()

    def wait_load_acks(self, n: int, timeout_s: float = 60.0) -> bool:
        """Wait until ``n`` acks came in the load phase (False: not within the timeout)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.load_from is not None and len(self.acked) - self.load_from >= n,
                scaled(timeout_s),
            )

    def finish(self, timeout_s: float = 30.0) -> None:
        """Wait for the process (it ends once its connection broke) and its last line."""
        self.proc.wait(timeout=scaled(timeout_s))
        self._thread.join(scaled(timeout_s))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.support_fast_sender")
    p.add_argument("--url", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--tag", required=True, help="prefix of client_msg_ids")
    p.add_argument("--codec", choices=tuple(CODECS), default="json")
    p.add_argument("--probe-messages", type=int, default=3000)
    p.add_argument("--share", type=float, default=0.8, help="load rate / probed capacity")
    p.add_argument("--deadline-s", type=float, default=30.0)
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
