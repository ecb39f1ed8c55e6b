"""The pieces the model (``sim.model``) is built of: its records, one server process's
state, the outcome codes, scheduling and random-draw helpers, and the tracing wrappers
that let tests compare the model's policy calls with direct ones.

Records use ``__slots__`` and plain attributes: the model makes one ``Attempt`` per
send and one ``Message`` per message, millions in a long run.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy
from simpy.events import Event

from chatcap.policy import BreakerState
from chatcap.results import OUTCOMES
from chatcap.scenario import Scenario
from sim.workload import Layout

ACKED, RATE_LIMITED, OVERLOADED, STORE_BUSY, UNAVAILABLE, TIMEOUT, ERROR = range(7)
assert OUTCOMES[TIMEOUT] == "timeout" and OUTCOMES[ERROR] == "error"

STORED = object()  # dedup entry of a message already committed
NORMAL = 1  # SimPy's priority of ordinary events
BREAKER_CODES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
DRAIN_BATCHES = 32  # server/writer.py _DrainRate
UNKNOWN_RATE_RETRY_AFTER_S = 1.0
OVERLOAD_RETRY_AFTER_CAP_S = 60.0
UINT32_MAX_MS = 2**32 - 1
CHUNK = 4096  # random draws are made this many at a time


class ModelError(ValueError):
    """The scenario asks for something the model cannot do; the message says what."""


# ---------------------------------------------------------------------------- records


def user_key(user: int) -> str:
    """A user's name, the key of its per-user limiter (the server keys by user name)."""
    return f"user-{user}"


class Message:
    """One chat message of one user (shared by its attempts)."""

    __slots__ = (
        "codec",
        "finished",
        "index",
        "intended_s",
        "last_delay_s",
        "plan",
        "proc",
        "room",
        "user",
    )

    def __init__(self, user: int, room: int, codec: int, index: int, intended_s: float) -> None:
        self.user = user
        self.room = room
        self.codec = codec
        self.index = index
        self.intended_s = intended_s
        self.last_delay_s: float | None = None
        self.finished = False
        self.proc: Process
        self.plan: tuple[Any, ...]  # its fan-out (sim.model._plan)


class Attempt:
    """One send attempt; ``outcome`` stays -1 until the client knows it."""

    __slots__ = ("deadline_s", "done_s", "msg", "n", "outcome", "sent_s")

    def __init__(self, msg: Message, n: int, sent_s: float, deadline_s: float) -> None:
        self.msg = msg
        self.n = n
        self.sent_s = sent_s
        self.deadline_s = deadline_s
        self.done_s = math.nan
        self.outcome = -1


class Write:
    """A message accepted into the write queue, with every attempt waiting on it."""

    __slots__ = ("attempts", "msg", "stamp_s")

    def __init__(self, msg: Message, attempt: Attempt) -> None:
        self.msg = msg
        self.attempts = [attempt]
        self.stamp_s = attempt.sent_s  # the Deliver's sent_at: the attempt that wrote it


class Batch:
    __slots__ = ("acquired_s", "proc", "writes")

    def __init__(self, proc: Process, writes: list[Write], acquired_s: float) -> None:
        self.proc = proc
        self.writes = writes
        # When the call started, for the breaker: the connection's acquisition, moved
        # later by the wait for the store's turn (queueing, not the store being slow).
        self.acquired_s = acquired_s


class Process:
    """One server process: its loop, limiter, breaker, dedup, writer and pool."""

    def __init__(self, index: int, slots: int, pool_size: int) -> None:
        self.index = index
        self.busy_until = 0.0
        self.busy_total = 0.0  # CPU seconds reserved so far
        self.limiter: Any = None
        self.breaker: Any = None
        self.dedup: dict[Message, Any] = {}
        self.queue: deque[Write] = deque()
        self.slots = slots
        self.slots_free = slots
        self.cutting = False
        self.pool_size = pool_size
        self.pool_free = pool_size
        self.pool_waiters: deque[list[Any]] = deque()  # [writes, still waiting]
        self.pool_waiting = 0
        self.drained: deque[tuple[float, int]] = deque(maxlen=DRAIN_BATCHES)

    def busy_done(self, at: float) -> float:
        """CPU seconds the loop has worked by ``at`` (reserved work is contiguous)."""
        ahead = self.busy_until - at
        return self.busy_total - ahead if ahead > 0 else self.busy_total

    def overload_retry_after_s(self, now: float) -> float:
        """server/writer.py: the queue's drain time at the rate of the last batches."""
        if not self.drained:
            return UNKNOWN_RATE_RETRY_AFTER_S
        span_s = now - self.drained[0][0]
        if span_s <= 0:
            return UNKNOWN_RATE_RETRY_AFTER_S
        rate = sum(n for _, n in self.drained) / span_s
        wait_ms = math.ceil(len(self.queue) / rate * 1000.0)
        return max(1, min(OVERLOAD_RETRY_AFTER_CAP_S * 1000, wait_ms)) / 1000.0


class Call(Event):
    """An event that calls ``fn(event)`` when processed; its payload is ``_value``."""

    __slots__ = ()

    def __init__(self, env: simpy.Environment, fn: Callable[[Any], None], value: Any) -> None:
        self.env = env
        self.callbacks = [fn]
        self._value = value
        self._ok = True


class Draws:
    """Random numbers drawn ``CHUNK`` at a time by ``fn(n)`` and handed out one by one."""

    __slots__ = ("_buf", "_fn", "_i")

    def __init__(self, fn: Callable[[int], np.ndarray]) -> None:
        self._fn = fn
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> Any:
        i = self._i
        if i >= len(self._buf):
            self._buf = self._fn(CHUNK).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]


@dataclass
class RawRun:
    """What one simulation leaves for :mod:`sim.stats` to turn into frames."""

    scenario: Scenario
    seed: int
    layout: Layout
    attempts: list[Attempt]
    deliveries: list[tuple[Any, ...]]  # t_first, lat_first, n, codec, proc, message
    step_s: float  # time between two recipients of one delivery group
    samples: dict[str, list[float]]
    cpu_window_s: float  # loop busy seconds in the measured window, all processes
    cpu_by_codec_s: list[float]  # CPU reserved in the window on behalf of each codec
    offered_per_s: float
    events: int
    trace: list[tuple[Any, ...]] | None = None
    users_by_codec: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------- tracing


class TracedLimiter:
    """Records every limiter question and answer (tests compare whole traces)."""

    def __init__(self, inner: Any, proc: int, trace: list[tuple[Any, ...]]) -> None:
        self.inner, self.proc, self.trace = inner, proc, trace

    def try_acquire(self, key: str, now: float, cost: float = 1.0) -> Any:
        decision = self.inner.try_acquire(key, now, cost)
        self.trace.append(("limiter", self.proc, key, now, decision))
        return decision


class TracedBreaker:
    """Records every call the model makes on a breaker."""

    def __init__(self, inner: Any, proc: int, trace: list[tuple[Any, ...]]) -> None:
        self.inner, self.proc, self.trace = inner, proc, trace
        self.config = inner.config

    @property
    def state(self) -> BreakerState:
        return self.inner.state  # type: ignore[no-any-return]

    def try_acquire(self, now: float) -> Any:
        decision = self.inner.try_acquire(now)
        self.trace.append(("breaker.try_acquire", self.proc, now, decision))
        return decision

    def on_success(self, now: float, duration_s: float) -> None:
        self.trace.append(("breaker.on_success", self.proc, now, duration_s))
        self.inner.on_success(now, duration_s)

    def on_error(self, now: float, duration_s: float) -> None:
        self.trace.append(("breaker.on_error", self.proc, now, duration_s))
        self.inner.on_error(now, duration_s)

    def release_permission(self) -> None:
        self.trace.append(("breaker.release_permission", self.proc))
        self.inner.release_permission()


def limiter_retry_after_s(decision: Any) -> float:
    """A limiter refusal as the client hears it: whole ms, rounded up (session.retry_ms)."""
    seconds = float(decision.retry_after_s)
    if not math.isfinite(seconds):
        return UINT32_MAX_MS / 1000.0
    return max(1, min(UINT32_MAX_MS, math.ceil(seconds * 1000))) / 1000.0


def breaker_retry_after_ms(retry_after_s: float, never_s: float) -> int:
    """server/writer.py retry_after_ms: whole ms, at least 1; inf becomes ``never_s``."""
    if not math.isfinite(retry_after_s):
        retry_after_s = never_s
    return min(UINT32_MAX_MS, max(1, math.ceil(retry_after_s * 1000.0)))
