"""The pure rules of the Send pipeline, written once for the server and the model.

Every decision a Send meets between the limiter's answer and the Ack lives here or in
``chatcap.policy``; ``server/`` (asyncio) and ``sim/`` (SimPy) are drivers that call these
functions and objects with their own clock (the server's µs clock, the model's
``env.now``) — a differential test drives both with one script and compares every outcome.

==================  ===========================================================  =========
module              rule                                                         stage
==================  ===========================================================  =========
``answers``         a policy's ``retry_after`` as protocol ms; ``store_busy``'s   2, 4, 5
                    waited ms; the read-throttle after ``rate_limited``; the pool
                    wait limit from the scenario's ms
``drain``           the queue's drain rate and the ``overloaded`` retry hint      4
``faults``          injected store latency and errors: constants, runtime         5
                    overrides and timed episodes
``dedup``           the idempotency lifecycle: in flight → stored → duplicate     3
                    answer; a failure forgets
``handoff``         the pool's wait line: FIFO hand-off, no overtaking            5
==================  ===========================================================  =========

Pure: no I/O, no clock, no randomness of their own (a seeded ``random.Random`` is passed
in where a draw is part of the rule). Times are seconds on the caller's clock.
"""

from __future__ import annotations

from chatcap.pipeline.answers import (
    DRAIN_RETRY_AFTER_MS,
    THROTTLE_MAX_S,
    UINT32_MAX_MS,
    acquire_timeout_s,
    protocol_ms,
    throttle_until,
    waited_ms,
)
from chatcap.pipeline.dedup import JOIN, NEW, REPLAY, DedupTable
from chatcap.pipeline.drain import DRAIN_BATCHES, DrainRate, overload_retry_after_ms
from chatcap.pipeline.faults import FaultPlan
from chatcap.pipeline.handoff import WaitLine

__all__ = [
    "DRAIN_BATCHES",
    "DRAIN_RETRY_AFTER_MS",
    "JOIN",
    "NEW",
    "REPLAY",
    "THROTTLE_MAX_S",
    "UINT32_MAX_MS",
    "DedupTable",
    "DrainRate",
    "FaultPlan",
    "WaitLine",
    "acquire_timeout_s",
    "overload_retry_after_ms",
    "protocol_ms",
    "throttle_until",
    "waited_ms",
]
