"""The pieces the model (``sim.model``) is built of: its records, one server worker
process's state (:class:`Worker`), the outcome codes, a random-draw helper, and the
tracing wrappers that let tests compare the model's policy calls with direct ones.

Mutable records use ``__slots__`` and plain attributes: the model makes one ``Attempt``
per send and one ``Message`` per message, millions in a long run. Immutable ones are
``NamedTuple`` records (tuples with names: as cheap to read as a bare tuple, and equal to one).
The model's scheduling is in :mod:`sim.engine`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from chatcap.pipeline import DedupTable, DrainRate, WaitLine, overload_retry_after_ms
from chatcap.policy import BreakerState
from chatcap.results import OUTCOMES
from chatcap.scenario import Scenario
from sim.workload import Layout

ACKED, RATE_LIMITED, OVERLOADED, STORE_BUSY, UNAVAILABLE, TIMEOUT, ERROR = range(7)
assert OUTCOMES[TIMEOUT] == "timeout" and OUTCOMES[ERROR] == "error"

BREAKER_CODES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
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
        "in_server",
        "index",
        "intended_s",
        "last_delay_s",
        "plan",
        "proc",
        "room",
        "stored",
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
        self.in_server = 0  # its attempts the server has not answered yet
        self.stored = False  # its dedup entry holds its ack (a retry is acked at once)
        self.proc: Worker
        self.plan: Plan  # its fan-out (sim.model._plan)


class Attempt:
    """One send attempt; ``outcome`` stays -1 until the client knows it."""

    __slots__ = (
        "deadline_s", "done_s", "msg", "n", "outcome", "read_s", "retry_after_s", "sent_s",
        "t_in_s",
    )  # fmt: skip

    def __init__(self, msg: Message, n: int, sent_s: float, deadline_s: float) -> None:
        self.msg = msg
        self.n = n
        self.sent_s = sent_s
        self.deadline_s = deadline_s
        self.done_s = math.nan
        self.outcome = -1
        self.retry_after_s = 0.0  # the answer's retry hint (0: none)
        self.read_s = 0.0  # the server's ingress stage of its frame (t_in → queue)
        self.t_in_s = math.nan  # the server's arrival stamp of its frame (t_in)


class Write:
    """A message accepted into the write queue, with every attempt waiting on it."""

    __slots__ = ("attempts", "cut_s", "msg", "queued_s", "stamp_s")

    def __init__(self, msg: Message, attempt: Attempt, queued_s: float = 0.0) -> None:
        self.msg = msg
        self.attempts = [attempt]
        self.stamp_s = attempt.sent_s  # the Deliver's sent_at: the attempt that wrote it
        self.queued_s = queued_s  # when it entered the write queue
        self.cut_s = queued_s  # when its batch was cut


class Batch:
    """The writes one commit carries, cut from ``proc``'s queue."""

    __slots__ = ("acquired_s", "proc", "writes")

    def __init__(self, proc: Worker, writes: list[Write], acquired_s: float) -> None:
        self.proc = proc
        self.writes = writes
        # When the call started, for the breaker: the connection's acquisition, moved
        # later by the wait for the store's turn (queueing, not the store being slow).
        self.acquired_s = acquired_s


class PoolWaiter:
    """A batch waiting in its worker's pool line (``Worker.pool_line``)."""

    __slots__ = ("proc", "writes")

    def __init__(self, proc: Worker, writes: list[Write]) -> None:
        self.proc = proc
        self.writes = writes


class Group:
    """The recipients of one codec on one worker: ``recipients`` frames, the first of
    them ``first_s`` after the worker's share starts; ``cost_s`` of loop time in all.
    (Slotted, not a NamedTuple: read on every fan-out, and slot reads are the fastest.)"""

    __slots__ = ("codec", "cost_s", "first_s", "recipients")

    def __init__(self, codec: int, recipients: int, first_s: float, cost_s: float) -> None:
        self.codec = codec
        self.recipients = recipients
        self.first_s = first_s
        self.cost_s = cost_s


class Share:
    """One worker's part of a fan-out: its loop time and its codec groups."""

    __slots__ = ("groups", "loop_s", "proc")

    def __init__(self, proc: int, loop_s: float, groups: tuple[Group, ...]) -> None:
        self.proc = proc
        self.loop_s = loop_s
        self.groups = groups


Plan = tuple[Share, ...]  # how one message fans out, per worker hosting recipients


class ScriptedCommit(NamedTuple):
    """One commit of a scripted store (``sim.model.simulate(store_script=…)``)."""

    delay_s: float = 0.0
    fails: bool = False


WireEvent = tuple[str, Any]  # ("deliver", Message) or ("answer", Attempt), in write order


class Delivery(NamedTuple):
    """One delivery group: ``recipients`` users of ``codec`` on worker ``proc``, the
    first reached at ``t_first_s``, ``latency_s`` after the Send left the client."""

    t_first_s: float
    latency_s: float
    recipients: int
    codec: int
    proc: int
    msg: Message


class Snapshot(NamedTuple):
    """CPU worked so far: in all, and on behalf of each codec."""

    worked_s: float
    by_codec_s: list[float]


class Worker:
    """One server worker process (``server.processes`` of them): its loop, limiter,
    breaker, dedup, writer and pool — the rules from ``chatcap.policy`` and
    ``chatcap.pipeline``, the loop and the queues the model's own."""

    def __init__(self, index: int, slots: int, pool_size: int) -> None:
        self.index = index
        self.busy_until = 0.0
        self.busy_total = 0.0  # CPU seconds reserved so far
        self.limiter: Any = None
        self.breaker: Any = None
        # unbounded: a message's entry goes when its client is done with it
        self.dedup: DedupTable[Message, Write, None] = DedupTable(max_entries=None)
        self.queue: deque[Write] = deque()
        self.slots = slots
        self.slots_free = slots
        self.cutting = False
        self.cut_pending = False  # commits on the loop: a cut waits for the loop's turn
        self.pool_size = pool_size
        self.pool_free = pool_size
        self.pool_line: WaitLine[PoolWaiter] = WaitLine()
        self.drain = DrainRate()
        self.gc_due = [0.5, 0.5, 0.5]  # collections due by generation (the model draws them)
        self.gc: Any = None  # its sim.calibration.GcPauses (its connections' pauses) ...
        self.gc_full: Any = None  # ... and the same once the idempotency table is full,
        self.gc_filling = 0  # ... this many messages from now
        self.last_fanout_s = 0.0  # when its loop last finished a fan-out (the cold fan-out)

    def busy_done(self, at: float) -> float:
        """CPU seconds the loop has worked by ``at`` (reserved work is contiguous)."""
        ahead = self.busy_until - at
        return self.busy_total - ahead if ahead > 0 else self.busy_total

    def overload_retry_after_s(self, now: float) -> float:
        """The ``overloaded`` hint (``chatcap.pipeline.drain``), in seconds."""
        rate = self.drain.per_s(now)
        return overload_retry_after_ms(len(self.queue), rate) / 1000.0


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
    deliveries: list[Delivery]
    step_s: float  # time between two recipients of one delivery group
    samples: dict[str, list[float]]
    cpu_window_s: float  # loop busy seconds in the measured window, all processes
    cpu_by_codec_s: list[float]  # CPU reserved in the window on behalf of each codec
    offered_per_s: float
    events: int
    trace: list[TraceEntry] | None = None
    users_by_codec: list[int] = field(default_factory=list)
    # the server's stages of a Send (sim.model.STAGES), over messages committed in the
    # measured window: seconds in all, and how many messages
    stage_s: list[float] = field(default_factory=list)
    stage_n: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------- tracing


class LimiterCall(NamedTuple):
    """``("limiter", proc, key, now, decision)``: one limiter question and its answer."""

    kind: str
    proc: int
    key: str
    now: float
    decision: Any


class BreakerCall(NamedTuple):
    """``(kind, proc, now, detail)``: ``breaker.try_acquire`` (detail: the decision),
    ``breaker.on_success`` or ``breaker.on_error`` (detail: the call's duration)."""

    kind: str
    proc: int
    now: float
    detail: Any


class BreakerRelease(NamedTuple):
    """``("breaker.release_permission", proc)``: a permission handed back unused."""

    kind: str
    proc: int


TraceEntry = LimiterCall | BreakerCall | BreakerRelease


class TracedLimiter:
    """Records every limiter question and answer (tests compare whole traces)."""

    def __init__(self, inner: Any, proc: int, trace: list[TraceEntry]) -> None:
        self.inner, self.proc, self.trace = inner, proc, trace

    def try_acquire(self, key: str, now: float, cost: float = 1.0) -> Any:
        decision = self.inner.try_acquire(key, now, cost)
        self.trace.append(LimiterCall("limiter", self.proc, key, now, decision))
        return decision


class TracedBreaker:
    """Records every call the model makes on a breaker."""

    def __init__(self, inner: Any, proc: int, trace: list[TraceEntry]) -> None:
        self.inner, self.proc, self.trace = inner, proc, trace
        self.config = inner.config

    @property
    def state(self) -> BreakerState:
        return self.inner.state  # type: ignore[no-any-return]

    def try_acquire(self, now: float) -> Any:
        decision = self.inner.try_acquire(now)
        self.trace.append(BreakerCall("breaker.try_acquire", self.proc, now, decision))
        return decision

    def on_success(self, now: float, duration_s: float) -> None:
        self.trace.append(BreakerCall("breaker.on_success", self.proc, now, duration_s))
        self.inner.on_success(now, duration_s)

    def on_error(self, now: float, duration_s: float) -> None:
        self.trace.append(BreakerCall("breaker.on_error", self.proc, now, duration_s))
        self.inner.on_error(now, duration_s)

    def release_permission(self) -> None:
        self.trace.append(BreakerRelease("breaker.release_permission", self.proc))
        self.inner.release_permission()
