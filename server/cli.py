"""Command line of the reference server.

``python -m server --scenario FILE [--host 127.0.0.1] [--port 8765] [--db PATH]
[--users FILE] [--log-level INFO]`` serves until SIGTERM or SIGINT, then drains (see
:mod:`server.app`) and exits 0. ``--port 0`` picks a free port; the first line on
stdout always says where it listens::

    chatcap server listening on ws://127.0.0.1:8765/api/v1/ws codecs=chat.v1.json,... store=...

``python -m server adduser --users FILE NAME`` adds a user for ``auth = "users"``
(password on stdin).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from chatcap.protocol import SUBPROTOCOLS
from chatcap.scenario import ScenarioError, load_scenario
from server import logs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server", description="chatcap reference server")
    p.add_argument("--scenario", required=True, help="scenario TOML file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 = any free port")
    p.add_argument("--db", default=None, help="store path (overrides server.store.path)")
    p.add_argument("--users", default=None, help="users file for auth = 'users'")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def serve_until_signal(args: argparse.Namespace, loop_name: str) -> int:
    from server.app import ChatServer

    scenario = load_scenario(args.scenario)
    server = ChatServer(
        scenario, host=args.host, port=args.port, db_path=args.db, users_file=args.users
    )
    await server.start()
    print(
        f"chatcap server listening on {server.ws_url} "
        f"codecs={','.join(SUBPROTOCOLS)} store={server.db_path} loop={loop_name} "
        f"pid={__import__('os').getpid()}",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.shutdown()))
    await server.wait_stopped()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["adduser"]:
        from server.auth import adduser_main

        return adduser_main(argv[1:])
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        load_scenario(args.scenario)  # fail fast, before any socket or file is opened
        return asyncio.run(serve_until_signal(args, install_uvloop()))
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
