"""The server's one clock: seconds with µs resolution, for every latency and deadline.

Every time the server measures or compares — ack and commit latencies, the rate
limiters, the breaker, fault episodes, pool borrow times, HTTP request timings, drain
deadlines — is a reading of :func:`now_s` (``time.perf_counter``: monotonic, sub-µs).
The event loop's own clock is *not* used for them: uvloop's ``loop.time()`` ticks in
milliseconds, coarser than the latency histograms' first bucket (50 µs).

asyncio still schedules on ``loop.time()``. Relative waits (``asyncio.sleep(d)``,
``loop.call_later(d, …)``, ``asyncio.timeout(d)``) need no conversion; an absolute
deadline on this clock is turned into a loop deadline by offset with
:func:`loop_deadline`, just before it is handed to ``asyncio.timeout_at`` or
``loop.call_at``.

Components that read time take a ``clock`` argument (a :data:`Clock`, default
:func:`now_s`), so tests pass a clock that moves only when told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Clock", "loop_deadline", "now_s"]

Clock = Callable[[], float]
"""A function returning seconds on one monotonic timeline."""

now_s: Clock = time.perf_counter
"""The server's clock: seconds, monotonic, µs resolution (an alias, not a wrapper: it is
read on the hot path)."""


def loop_deadline(
    deadline_s: float, clock: Clock = now_s, loop: asyncio.AbstractEventLoop | None = None
) -> float:
    """``deadline_s`` on ``clock`` as a time on the event loop's clock (by offset)."""
    loop = loop if loop is not None else asyncio.get_running_loop()
    return loop.time() + (deadline_s - clock())
