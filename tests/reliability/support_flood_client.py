"""One user flooding Sends as fast as it can, in a process of its own.

``python -m tests.reliability.support_flood_client --url WS_URL --room ROOM --count N`` (the token
comes on ``CHATCAP_FLOOD_TOKEN``) connects, joins ROOM, says ``ready`` and waits for a
line ``go`` on stdin; then it writes all N Sends to the socket at once — framed and
masked beforehand by the sans-I/O ``websockets`` client, so the flood goes out as fast as
the kernel takes it and costs this process almost no CPU — while its main thread reads
and tallies every reply (so the flooder never becomes a slow consumer). The run has a
deadline (``--deadline-s``), so it always stops by itself.

The server throttles a client that goes on sending after ``rate_limited`` (it reads
nothing more until the ``retry_after`` it sent), so N Sends over the limit are answered
at the limiter's pace: ``--duration-s`` ends the run that long after ``go`` instead of at
the last reply. The connection is then cut (its unsent and unread frames cannot make way
for a closing handshake), which also ends a write still blocked by the server's
backpressure.

Stdout, one JSON object per line: ``ready``; ``progress`` with the replies so far, every
``--progress-every`` replies (the test paces its own traffic by it); then ``done`` with
the acked and the refused ``client_msg_id`` s, the count of ``rate_limited`` errors, the
range of their ``retry_after_ms`` and any other reply; or ``failed`` with the reason.
Exit status 0 when every send got its reply, or when ``--duration-s`` ended the run.

Its own process keeps the flood's client-side work away from the interpreter lock of the
test, which meanwhile times another user's acks.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from contextlib import suppress
from typing import Any

from websockets.frames import Frame, Opcode

from chatcap.protocol import CODECS, Ack, Error, Join, Joined, Send
from tests.reliability.support_rawws import RawClient

TOKEN_ENV = "CHATCAP_FLOOD_TOKEN"
CODEC = CODECS["json"]


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Connection(RawClient):
    """The flooder's connection: a raw client whose socket a writer thread also uses, so
    replies are read without answering control frames from this thread."""

    def __init__(self, url: str, token: str, timeout_s: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        super().__init__(
            sock, url, token, CODEC.subprotocol, recv_bytes=262144, answer_control=False
        )

    def next_message(self) -> Any:
        while True:
            event = self.next_event()
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                return CODEC.decode(bytes(event.data))
            if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                raise EOFError(f"closed by the server: {self.protocol.close_rcvd}")

    def framed(self, payloads: list[bytes]) -> bytes:
        """The masked frames of ``payloads``, to be written later in one go."""
        for payload in payloads:
            self.protocol.send_text(payload)
        return b"".join(self.protocol.data_to_send())


class Tally:
    def __init__(self, progress_every: int) -> None:
        self.progress_every = max(1, progress_every)
        self.count = 0
        self.acked: list[str] = []
        self.limited = 0
        self.refused: list[str] = []
        self.retry_after_ms: list[int] = []
        self.foreign_ids = 0
        self.other: list[str] = []

    def take(self, msg: Any) -> None:
        self.count += 1
        if isinstance(msg, Ack):
            self.acked.append(msg.client_msg_id)
        elif isinstance(msg, Error) and msg.code == "rate_limited":
            self.limited += 1
            self.refused.append(msg.client_msg_id)
            self.retry_after_ms.append(msg.retry_after_ms)
            self.foreign_ids += not msg.client_msg_id.startswith("f-")
        else:
            self.other.append(repr(msg)[:200])
        if self.count % self.progress_every == 0:
            say("progress", replies=self.count)


def write_all(sock: socket.socket, data: bytes) -> None:
    """The writer thread: the whole flood, until the kernel takes it or the socket is cut."""
    with suppress(OSError):  # cut at the end of a --duration-s run
        sock.sendall(data)  # releases the interpreter lock while the kernel takes the bytes


def read_replies(conn: Connection, tally: Tally, count: int, stop_at: float) -> bool:
    """Tally replies until all ``count`` came (True) or ``stop_at`` passed (False)."""
    while tally.count < count:
        left = stop_at - time.monotonic()
        if left <= 0:
            return False
        conn.sock.settimeout(left)
        try:
            tally.take(conn.next_message())
        except TimeoutError:
            return False
    return True


def main(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.deadline_s
    conn = Connection(args.url, os.environ.get(TOKEN_ENV, ""), args.deadline_s)
    conn.flush()
    conn.sock.sendall(conn.framed([CODEC.encode(Join(room=args.room))]))
    joined = conn.next_message()
    if not isinstance(joined, Joined):
        say("failed", error=f"expected Joined, got {joined!r}"[:300])
        return 1
    flood = conn.framed(
        [
            CODEC.encode(Send(client_msg_id=f"f-{i}", room=args.room, body=f"flood {i}"))
            for i in range(args.count)
        ]
    )
    say("ready", flood_bytes=len(flood))
    if sys.stdin.readline().strip() != "go":
        say("failed", error="no go")
        return 1
    tally = Tally(args.progress_every)
    started = time.monotonic()
    writer = threading.Thread(target=write_all, args=(conn.sock, flood), daemon=True)
    writer.start()
    stop_at = min(deadline, started + args.duration_s) if args.duration_s else deadline
    complete = read_replies(conn, tally, args.count, stop_at)
    seconds = time.monotonic() - started
    if complete:
        writer.join(timeout=max(0.0, deadline - time.monotonic()))
        conn.protocol.send_close(1000)
        conn.flush()
    elif not args.duration_s:
        say("failed", error=f"{tally.count} of {args.count} replies by the deadline")
        return 1
    else:
        conn.sock.shutdown(socket.SHUT_RDWR)  # wakes a sendall still blocked
        writer.join(timeout=max(0.0, deadline - time.monotonic()))
    conn.sock.close()
    say(
        "done",
        sent=args.count,
        seconds=round(seconds, 3),
        replies=tally.count,
        acked=tally.acked,
        refused=tally.refused,
        rate_limited=tally.limited,
        retry_after_ms_min=min(tally.retry_after_ms, default=0),
        retry_after_ms_max=max(tally.retry_after_ms, default=0),
        foreign_ids=tally.foreign_ids,
        other=tally.other[:5],
    )
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", default="flood")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--progress-every", type=int, default=100)
    parser.add_argument("--deadline-s", type=float, default=120.0)
    parser.add_argument("--duration-s", type=float, default=0.0, help="0: until all replies")
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        sys.exit(main(parse(sys.argv[1:])))
    except Exception as exc:  # reported on stdout, where the test reads
        say("failed", error=f"{type(exc).__name__}: {exc}"[:300])
        sys.exit(1)
