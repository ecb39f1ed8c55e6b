"""Command line of the reference server.

``python -m server --scenario FILE [--host 127.0.0.1] [--port 8765] [--db PATH]
[--users FILE] [--log-level INFO]`` serves until SIGTERM or SIGINT, then drains (see
:mod:`server.app`) and exits 0. ``--port 0`` picks a free port; the first line on
stdout always says where it listens::

    chatcap server listening on ws://127.0.0.1:8765/api/v1/ws codecs=chat.v1.json,... store=...

``python -m server adduser --users FILE NAME`` adds a user for ``auth = "users"``
(password on stdin).

Bad input is one line on stderr and exit status 2, before any socket or file is opened:
``--port`` outside 0..65535, a store path (``--db``, else the scenario's
``server.store.path``) that cannot be a database file — a directory, under a regular
file, in a directory this user cannot write — and a host that does not resolve or a port
already taken, each naming the option and the cause.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from chatcap.protocol import SUBPROTOCOLS
from chatcap.scenario import Scenario, load_scenario
from server import logs

PORT_MAX = 65535


class UsageError(ValueError):
    """A bad option value: printed as one line, exit status 2."""


def port_number(text: str) -> int:
    """``--port``: an integer 0..65535, 0 = any free port."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port number (0..{PORT_MAX}, 0 = any free port)"
        ) from None
    if not 0 <= port <= PORT_MAX:
        raise argparse.ArgumentTypeError(
            f"{port} is out of range: allowed 0..{PORT_MAX} (0 = any free port)"
        )
    return port


def store_path_problem(path: str) -> str | None:
    """Why SQLite could not keep its database at ``path`` (None: it can, as far as a
    look at the file system tells). Missing folders are fine: the server makes them."""
    if path == ":memory:":
        return None
    target = Path(path)
    if target.is_dir():
        return "is a directory, not a database file"
    if target.exists():
        if not os.access(target, os.R_OK | os.W_OK):
            return "the file is not readable and writable by this user"
        folder = target.parent
    else:
        folder = next(p for p in target.absolute().parents if p.exists())
        if not folder.is_dir():
            return f"{folder} is a regular file, not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the directory {folder} is not writable by this user"
    return None


def check_store_path(args: argparse.Namespace, scenario: Scenario) -> None:
    """Raise :class:`UsageError` naming ``--db`` (or the scenario key) and the cause."""
    path = args.db or scenario.server.store.path
    problem = store_path_problem(path)
    if problem is None:
        problem = _try_create(path)
    if problem is not None:
        where = f"--db {path}" if args.db else f"server.store.path = {path!r} (or --db)"
        raise UsageError(f"{where}: {problem}")


def _try_create(path: str) -> str | None:
    """Make the folders and open the file, as the store will: the permission checks above
    cannot see everything (root, read-only mounts, ACLs)."""
    if path == ":memory:":
        return None
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        return f"cannot create it: {exc.strerror or exc}"
    return None


def listen_problem(exc: OSError, args: argparse.Namespace) -> str:
    """An error from binding the listening socket, naming the option at fault."""
    if isinstance(exc, socket.gaierror):
        return f"--host {args.host}: cannot resolve it ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return f"--port {args.port}: already in use on {args.host}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--host {args.host}: not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"--port {args.port}: permission denied (ports below 1024 need privileges)"
    return f"cannot start on {args.host}:{args.port}: {exc.strerror or exc}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server", description="chatcap reference server")
    p.add_argument("--scenario", required=True, help="scenario TOML file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--port", type=port_number, default=8765, help=f"0..{PORT_MAX}; 0 = any free port"
    )
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
    try:
        await server.start()
    except OSError as exc:
        raise UsageError(listen_problem(exc, args)) from None
    print(
        f"chatcap server listening on {server.ws_url} "
        f"codecs={','.join(SUBPROTOCOLS)} store={server.db_path} loop={loop_name} "
        f"pid={os.getpid()}",
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
        # fail fast, before any socket is opened
        check_store_path(args, load_scenario(args.scenario))
        return asyncio.run(serve_until_signal(args, install_uvloop()))
    except (OSError, ValueError) as exc:  # ScenarioError and UsageError too
        print(f"error: {exc}", file=sys.stderr)
        return 2
