"""Host settings every load process makes first: many open sockets, the same event loop.

* :func:`raise_nofile_limit` — lift the soft ``RLIMIT_NOFILE`` (thousands of sockets);
  children inherit it;
* :func:`install_uvloop` — uvloop when installed, as the chat server does.
"""

from __future__ import annotations

import asyncio
import resource


def raise_nofile_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (thousands of sockets); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have; the run reports failed connections
    return soft


def install_uvloop() -> str:
    """Same choice as the chat server (server/cli.py): uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
