"""A bare ``websockets`` server: the baseline that ``bench server-overhead`` compares with.

``python -m bench.micro.bare_server --mode echo|broadcast [--host 127.0.0.1] [--port 0]``

* ``echo``: every message received goes back to its sender, unchanged;
* ``broadcast``: every message received goes to every connected client (the sender too)
  with one ``websockets.broadcast()`` call.

It is configured like the chat server where that shapes the cost: ``compression=None``,
uvloop when installed, library defaults otherwise (keepalive, queue sizes, ``max_size``).
No routes, no subprotocol, no auth, no codec: what is left is the library's own cost.

It runs as its own process so that ``/proc/<pid>/stat`` counts its CPU alone. The first
stdout line says where it listens (the port is the number after the last ``:`` of the
URL); SIGTERM or SIGINT stop it with exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench._support.host import install_uvloop, raise_nofile_limit

MODES = ("echo", "broadcast")


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


Handler = Callable[[ServerConnection], Awaitable[None]]


def make_broadcaster() -> Handler:
    """The handler of broadcast mode: one ``broadcast()`` per message, to every client."""
    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            async for message in ws:
                websockets.broadcast(clients, message)
        except ConnectionClosed:
            pass
        finally:
            clients.discard(ws)

    return handler


async def run(mode: str, host: str, port: int, loop_name: str) -> int:
    handler: Handler = echo if mode == "echo" else make_broadcaster()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, host, port, compression=None) as server:
        bound = server.sockets[0].getsockname()[1]
        print(
            f"bare websockets server listening on ws://{host}:{bound} mode={mode} "
            f"loop={loop_name} pid={os.getpid()}",
            flush=True,
        )
        await stop
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.micro.bare_server", description=__doc__)
    p.add_argument("--mode", choices=MODES, default="echo")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_nofile_limit()
    loop_name = install_uvloop()
    return asyncio.run(run(args.mode, args.host, args.port, loop_name))


if __name__ == "__main__":
    sys.exit(main())
