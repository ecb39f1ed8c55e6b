"""How the pipeline's waits become numbers on the wire.

The policies answer in seconds (``retry_after_s``, possibly ``inf`` for "not by itself");
the protocol carries whole milliseconds in a uint32 (``Error.retry_after_ms``). Rounding
is *up*, so a client that waits what it was told never comes back a moment too early,
and never below 1 ms, because 0 means "no hint" on the wire.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "DRAIN_RETRY_AFTER_MS",
    "THROTTLE_MAX_S",
    "UINT32_MAX_MS",
    "acquire_timeout_s",
    "protocol_ms",
    "throttle_until",
    "waited_ms",
]

UINT32_MAX_MS: Final = 2**32 - 1  # the largest retry_after_ms the schema can carry

# What a send hears while the server drains (shutdown), and when the pool has closed.
DRAIN_RETRY_AFTER_MS: Final = 1000

# The longest a session holds a connection's frames back after a ``rate_limited``
# answer. Token buckets refill within 1/rate_per_s, so this bounds only slow window
# algorithms (and the "never" refusal, whose retry_after is infinite).
THROTTLE_MAX_S: Final = 1.0


def protocol_ms(seconds: float, never_s: float | None = None) -> int:
    """``seconds`` as whole protocol milliseconds: rounded up, within [1, UINT32_MAX_MS].

    ``inf`` (a policy's "not by itself") becomes ``never_s`` when given — the breaker's
    open duration, the next moment worth a try — and the largest value otherwise.
    """
    if not math.isfinite(seconds):
        if never_s is None or not math.isfinite(never_s):
            return UINT32_MAX_MS
        seconds = never_s
    return min(UINT32_MAX_MS, max(1, math.ceil(seconds * 1000.0)))


def waited_ms(waited_s: float) -> int:
    """How long a batch waited for a pool connection, as ``store_busy`` reports it."""
    return max(0, math.ceil(waited_s * 1000.0))


def throttle_until(t_in: float, retry_after_s: float) -> float:
    """When a rate-limited connection's next frame may be read (``t_in`` = the refusal)."""
    return t_in + min(retry_after_s, THROTTLE_MAX_S)


def acquire_timeout_s(acquire_timeout_ms: float) -> float:
    """How long a borrower waits for a pool connection, in seconds, from the scenario's
    ``server.pool.acquire_timeout_ms``: ``inf`` waits forever, ``0`` never waits (the
    Erlang-B loss system: no free connection is ``store_busy`` at once)."""
    if acquire_timeout_ms < 0:
        raise ValueError(f"acquire_timeout_ms must be >= 0, got {acquire_timeout_ms!r}")
    return acquire_timeout_ms / 1000.0
