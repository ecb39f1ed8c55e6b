"""Helpers shared by the write-path tests (store, pool, faults, dedup, writer).

Imported explicitly (``from tests.server.support_writepath import …``).

Timing: tests never sleep to let time pass. Where a real timeout has to fire (a pool
acquire timeout), it is tiny and multiplied by ``CHATCAP_TIMING_FACTOR`` (default 1.0),
as websockets does, so a slow CI machine can stretch every timeout at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from server.store import PendingSend, StoreConnection

T = TypeVar("T")

TIMING_FACTOR = float(os.environ.get("CHATCAP_TIMING_FACTOR", "1.0"))


def scaled(seconds: float) -> float:
    """A test duration stretched by ``CHATCAP_TIMING_FACTOR``."""
    return seconds * TIMING_FACTOR


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async test body on a fresh event loop (no pytest-asyncio here)."""
    return asyncio.run(coro)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Yield to the loop (and to worker threads) until ``predicate`` holds; the timeout
    only turns a hang into a failure."""
    async with asyncio.timeout(scaled(timeout_s)):
        while not predicate():
            await asyncio.sleep(0.001)


class FakeClock:
    """A clock that moves only when told: ``clock()`` reads it, ``advance`` moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def send(room: str, sender: str, cid: str, body: str = "hi", sent_at_us: int = 1) -> PendingSend:
    """A PendingSend with short defaults."""
    return PendingSend(room, sender, cid, body, sent_at_us)


def open_store(path: Path, synchronous: str = "NORMAL") -> StoreConnection:
    """A store connection on ``path`` with a generous busy timeout for contention tests."""
    return StoreConnection(path, synchronous=synchronous, busy_timeout_ms=30_000)
