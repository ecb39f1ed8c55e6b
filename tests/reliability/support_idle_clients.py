"""Hold many idle WebSocket connections open at once, in a process of their own.

``python -m tests.reliability.support_idle_clients --url WS_URL --count N`` (the token comes on the
``CHATCAP_IDLE_TOKEN`` environment variable, so it never shows in a process list) opens N
connections to the chat server at a bounded pace — at most ``--in-flight`` handshakes at
a time, all within ``--deadline-s`` — then holds them, idle, until a line ``close`` (or
end of file) arrives on stdin, or ``--max-life-s`` passes, so it stops by itself even when
the test that started it is gone. Then it closes every connection with a normal close
handshake and exits.

Progress goes to stdout as one JSON object per line: ``nofile`` (the open-files limit it
raised), ``opened`` (all N open, with the time it took) or ``failed`` (why, and how many
were open), then ``closed``. Exit status 0 when all N opened and closed, 1 otherwise.

It runs asyncio (uvloop when installed) in its own process, so it never shares a loop
with the test's threads, and one process can hold more sockets than the test's own
limit would allow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

TOKEN_ENV = "CHATCAP_IDLE_TOKEN"


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Lift the soft open-files limit toward the hard one; returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


async def open_all(args: argparse.Namespace, token: str, held: list[ClientConnection]) -> None:
    """Open ``args.count`` connections, ``args.in_flight`` handshakes at a time."""
    next_index = iter(range(args.count))

    async def worker() -> None:
        for _ in next_index:
            conn = await connect(
                args.url,
                subprotocols=[Subprotocol(args.subprotocol)],
                additional_headers={"Authorization": f"Bearer {token}"},
                compression=None,
                proxy=None,
                open_timeout=args.open_timeout_s,
                ping_interval=None,  # idle means idle: the server's own pings still come
                close_timeout=args.open_timeout_s,
            )
            held.append(conn)

    async with asyncio.timeout(args.deadline_s):
        await asyncio.gather(*(worker() for _ in range(args.in_flight)))


async def wait_for_close_request(max_life_s: float) -> str:
    """A line on stdin, end of file, or the end of this process's allowed life."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        async with asyncio.timeout(max_life_s):
            line = await reader.readline()
    except TimeoutError:
        return "max_life"
    return line.decode().strip() or "eof"


async def close_all(held: list[ClientConnection], in_flight: int) -> None:
    gate = asyncio.Semaphore(in_flight)

    async def close(conn: ClientConnection) -> None:
        async with gate:
            await conn.close()

    await asyncio.gather(*(close(c) for c in held), return_exceptions=True)


async def main(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    soft, hard = raise_nofile(args.count + 256)
    say("nofile", soft=soft, hard=hard)
    held: list[ClientConnection] = []
    started = time.monotonic()
    ok = True
    try:
        await open_all(args, token, held)
        say("opened", count=len(held), seconds=round(time.monotonic() - started, 3))
        reason = await wait_for_close_request(args.max_life_s)
    except Exception as exc:  # any failure is reported, then everything is closed
        ok = False
        reason = "failed"
        say("failed", opened=len(held), error=f"{type(exc).__name__}: {exc}"[:300])
    await close_all(held, args.in_flight)
    say("closed", count=len(held), reason=reason)
    return 0 if ok else 1


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--subprotocol", default="chat.v1.json")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--deadline-s", type=float, default=120.0)
    parser.add_argument("--open-timeout-s", type=float, default=30.0)
    parser.add_argument("--max-life-s", type=float, default=300.0)
    return parser.parse_args(argv)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, int]) -> int:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


if __name__ == "__main__":
    sys.exit(run(main(parse(sys.argv[1:]))))
