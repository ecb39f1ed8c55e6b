"""A WebSocket echo endpoint with the chat port's protocol settings, for conformance runs.

The Autobahn fuzzing client needs a peer that echoes every message back; a chat session
is not one (it decodes envelopes and answers with Acks). This endpoint echoes, and is
served with :func:`server.app.websocket_options` of the same scenario — frame size limit,
compression, keepalive, opening and closing deadlines — on the same event loop as the
chat server (uvloop when installed), so the Autobahn verdicts are about the settings the
chat server really runs with. It offers no subprotocol and no routes: Autobahn sends
neither.

``python -m server.echo --scenario FILE [--host 127.0.0.1] [--port 0]`` prints one line,
``chatcap echo listening on ws://HOST:PORT/ pid=N``, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from chatcap.scenario import ScenarioError, load_scenario
from server import logs
from server.app import websocket_options
from server.cli import install_uvloop


async def echo(conn: ServerConnection) -> None:
    """Send every message back as it came (text as text, binary as binary)."""
    try:
        async for message in conn:
            await conn.send(message)
    except ConnectionClosed:
        pass  # a protocol error closed it: the library already answered with a close code


async def serve_echo(scenario_path: str, host: str, port: int) -> int:
    cfg = load_scenario(scenario_path).server
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(echo, host, port, **websocket_options(cfg)) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"chatcap echo listening on ws://{host}:{bound}/ pid={os.getpid()}", flush=True)
        await stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m server.echo", description="WebSocket echo for conformance runs"
    )
    p.add_argument("--scenario", required=True, help="scenario TOML file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    logs.configure("INFO")
    try:
        load_scenario(args.scenario)
        install_uvloop()
        return asyncio.run(serve_echo(args.scenario, args.host, args.port))
    except (ScenarioError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
