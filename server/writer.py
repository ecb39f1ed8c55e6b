"""The write path behind the session: bounded queue, batches, breaker, pool, commit.

Stages 4 and 5 of the pipeline in docs/design.md, as one asyncio component::

    submit(send) ──► queue (≤ write_queue_max, else Overloaded at once)
                       │  a pump (one loop callback) cuts up to batch_max sends
                       │  whenever a batch slot is free
                       ▼
                 breaker.try_acquire ── refused ──► Unavailable(retry_after_ms)
                       ▼
                 pool connection    ── timeout ──► StoreBusy(waited_ms)
                       ▼
                 injected latency (asyncio.sleep, holding the connection),
                 injected error ──────────────────► StoreFailed
                       ▼
                 commit_batch, on the loop or on the pool's thread
                       │                    ── StoreError ──► StoreFailed
                       ▼
                 each send's future gets its StoredMessage, only after COMMIT returned

**Where the commit runs** (``server.store.commit_on``, rule
:func:`chatcap.policy.commit.commit_place`): with WAL and ``synchronous = NORMAL`` a
commit does not fsync and costs less than the two thread hops around it, so it runs on
the loop's own thread (``loop``); ``FULL``/``EXTRA`` or several processes on one file
commit on the pool's threads (``thread``), as every commit did before.

**No batch window, few wake-ups.** ``submit`` queues the send and, unless one is pending
already, schedules the pump with ``loop.call_soon``: the pump runs once the frames
already read this loop turn have been handled, so sends that arrive together share a
batch while a lone send commits at once — there is no timer and no waiting for company.
In ``loop`` mode, when a pool connection is free, no fault latency is set and no other
batch is in flight, the pump commits the batch synchronously (the *fast path*: no task,
no thread); otherwise a batch runs as a task (pool waits, injected latency, thread
commits). The pump commits one batch per call and reschedules itself while sends are
queued, so other connections' frames get in between.

Up to ``max_in_flight_batches`` batches are in flight at once, each on its own pool
connection, so pool waits and injected latencies overlap as they would on a real
database. The commits themselves take turns in queue order: SQLite has one writer
anyway, and taking turns keeps a sender's messages in the order they were sent (two
batches racing for the write lock could otherwise swap them) and keeps this process's
connections out of SQLite's sleeping busy handler. (A fast-path commit only happens
with no other batch in flight, so it never overtakes one.)

A batch slot is taken *before* a batch is cut, so while every slot is busy the queue
grows and the next batch is bigger: batching adapts to load by itself.

The commit deadline ``store.call_timeout_s``: on a thread, a commit still running at the
deadline is answered as failed (the thread cannot be stopped and may still commit; a
retry then finds the row as a duplicate). On the loop nothing can interrupt the commit,
so one that *took* longer than the deadline is answered the same way, after the fact.

**Answers leave in one burst.** When a batch settles, its futures' callbacks (fan-out and
Acks, :meth:`server.session.Session.after_commit`) all run in the next loop turn; with a
``burst`` (the hub), the writer schedules ``burst.hold()`` just before them and
``burst.release()`` just after, so the frames they write go out with one socket write
per connection instead of one per frame (a batch of one skips it: one frame each).

**Stage times.** A queued item keeps the clock reading of its ``submit``; when its batch
commits, the writer observes each message's ``queue`` stage (submit → the batch cut) and,
once for the whole batch (``observe_many``), its ``commit`` stage (the cut → the futures
settled with their rows: pool wait, commit turn, injected latency, the commit) on the
recorders :meth:`Writer.time_stages` hands it (the server's
``chatcap_send_stage_seconds``, :mod:`server.metrics`). A batch that is refused or fails
observes neither; every reading is the writer's clock.

The rules of the answers (retry-after ms, the ``overloaded`` drain-rate hint,
``store_busy``'s waited ms) and of injected faults are ``chatcap.pipeline``'s, shared
with the model; this module carries them out on the event loop.

Every future is settled exactly once and is never left hanging. A sender that went away
(its future cancelled) does not disturb its batch: the send was accepted, so it is still
stored and delivered; only its answer is skipped (a retry finds it as a duplicate).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from chatcap import wiring
from chatcap.pipeline.answers import DRAIN_RETRY_AFTER_MS, protocol_ms, waited_ms
from chatcap.pipeline.drain import DrainRate, overload_retry_after_ms
from chatcap.policy.breaker import CircuitBreaker, Transition
from chatcap.policy.commit import CommitPlace, commit_place
from chatcap.protocol.messages import INTERNAL, OVERLOADED, STORE_BUSY, UNAVAILABLE
from chatcap.scenario import Scenario, StoreConfig
from server.clock import Clock, loop_deadline, now_s
from server.faults import FaultInjector
from server.metrics import Unrecorded
from server.store import PendingSend, StoreConnection, StoredMessage, StoreError
from server.storepool import PoolClosed, PoolTimeout, StorePool

__all__ = [
    "DRAIN_RETRY_AFTER_MS",
    "Overloaded",
    "StageRecorder",
    "StoreBusy",
    "StoreFailed",
    "Unavailable",
    "WritePath",
    "WriteRejected",
    "Writer",
    "start_write_path",
]

log = logging.getLogger(__name__)

Item = tuple[PendingSend, "asyncio.Future[StoredMessage]", float]
"""A queued send, its future, and the writer's clock at its ``submit`` (the queue stage)."""


class StageRecorder(Protocol):
    """Where a stage's times go (a child of :class:`server.metrics.LoopHistogram`)."""

    def observe(self, amount: float) -> None: ...

    def observe_many(self, amount: float, n: int) -> None: ...


_UNRECORDED = Unrecorded()


# -- answers ------------------------------------------------------------------------


class WriteRejected(Exception):
    """A send was not stored; ``code`` is the protocol error code to answer with."""

    code = INTERNAL
    retry_after_ms = 0


class Overloaded(WriteRejected):
    """The write queue is full (peak shaving); raised by ``submit`` itself."""

    code = OVERLOADED

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"write queue full; retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class Unavailable(WriteRejected):
    """The breaker is open, or the server drains."""

    code = UNAVAILABLE

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"store unavailable; retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class StoreBusy(WriteRejected):
    """No pool connection within the acquire timeout."""

    code = STORE_BUSY

    def __init__(self, waited_ms: int) -> None:
        super().__init__(f"no store connection within {waited_ms} ms")
        self.waited_ms = waited_ms


class StoreFailed(WriteRejected):
    """The commit failed (a real store error or an injected one); nothing was stored."""

    code = INTERNAL

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _InjectedError(StoreError):
    """A store failure made up by the fault injector (the connection is fine)."""


# -- the writer ---------------------------------------------------------------------


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


class WriteBurst(Protocol):
    """Frames written between ``hold`` and ``release`` leave together (the hub)."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


class Writer:
    """Queues sends and commits them in batches; see the module docstring."""

    def __init__(
        self,
        store_cfg: StoreConfig,
        breaker: CircuitBreaker | None,
        pool: StorePool,
        faults: FaultInjector,
        *,
        clock: Clock | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        max_in_flight_batches: int | None = None,
        wall_clock_us: Callable[[], int] = _wall_clock_us,
        commit_on: CommitPlace = "thread",
        burst: WriteBurst | None = None,
    ) -> None:
        """``commit_on``: where commits run (:func:`chatcap.policy.commit.commit_place`
        decides it from the scenario in :func:`start_write_path`)."""
        self._batch_max = store_cfg.batch_max
        self._queue_max = store_cfg.write_queue_max
        self._call_timeout_s = store_cfg.call_timeout_s
        self._breaker = breaker
        self._pool = pool
        self._faults = faults
        self._clock = clock or now_s  # the server's one clock (server.clock)
        self._on_batch = on_batch
        self._wall_clock_us = wall_clock_us
        if commit_on not in ("loop", "thread"):
            raise ValueError(f"commit_on must be 'loop' or 'thread', got {commit_on!r}")
        self.commit_on: CommitPlace = commit_on
        self._burst = burst
        slots = max_in_flight_batches if max_in_flight_batches is not None else pool.rules.size
        if slots < 1:
            raise ValueError(f"max_in_flight_batches must be >= 1, got {slots!r}")
        self._free_slots = slots
        self._queue: deque[Item] = deque()
        self._progress = asyncio.Event()  # set whenever a batch finishes
        self._batches: set[asyncio.Task[None]] = set()
        self._last_turn: asyncio.Future[None] | None = None  # the newest batch's commit turn
        self._drain_rate = DrainRate()
        self._accepting = True
        self._running = False
        self._pump_due = False  # a pump callback is scheduled
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue_stage: StageRecorder = _UNRECORDED
        self._commit_stage: StageRecorder = _UNRECORDED

    def time_stages(self, queue: StageRecorder, commit: StageRecorder) -> None:
        """Record each committed message's ``queue`` and ``commit`` stage times here from
        now on (see the module docstring); the send path binds the server's
        ``chatcap_send_stage_seconds`` children once (:class:`server.session.SendPath`)."""
        self._queue_stage, self._commit_stage = queue, commit

    # -- reading ----------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Sends waiting for a batch."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Batches being committed (or rejected) right now as tasks (a fast-path batch
        is done before anything else can look)."""
        return len(self._batches)

    # -- the session's side -----------------------------------------------------------

    def submit(self, send: PendingSend) -> asyncio.Future[StoredMessage]:
        """Queue a send; its future settles after COMMIT, or with a ``WriteRejected``.

        Raises :class:`Overloaded` at once when the queue is full, and
        :class:`Unavailable` once the writer drains. Await the future through
        ``asyncio.shield`` if others (retries) may await it too.
        """
        if not self._accepting:
            raise Unavailable(DRAIN_RETRY_AFTER_MS)
        queue = self._queue
        if len(queue) >= self._queue_max:
            # about how long the queue takes to drain at the recent rate
            rate = self._drain_rate.per_s(self._clock())
            raise Overloaded(overload_retry_after_ms(len(queue), rate))
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[StoredMessage] = loop.create_future()
        queue.append((send, fut, self._clock()))
        if not self._pump_due and self._running:
            self._pump_due = True
            loop.call_soon(self._pump)
        return fut

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start committing (sends submitted earlier wait in the queue until then)."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._wake()

    async def drain(self, deadline_s: float) -> bool:
        """Refuse new sends, and wait until every queued send is committed or failed, at
        the latest until ``deadline_s`` — a time on the writer's clock (the server's one
        clock, :mod:`server.clock`), like the rest of shutdown. True if all were; if not,
        the sends still queued fail with :class:`Unavailable` (batches already running
        finish on their own).
        """
        self._accepting = False
        try:
            async with asyncio.timeout_at(loop_deadline(deadline_s, self._clock)):
                while self._queue or self._batches:
                    self._progress.clear()
                    await self._progress.wait()
            return True
        except TimeoutError:
            self._fail_queued()
            return False

    async def stop(self) -> None:
        """Stop cutting batches, fail what is still queued, wait for running batches."""
        self._accepting = False
        self._running = False
        self._fail_queued()
        if self._batches:
            await asyncio.wait(self._batches)

    # -- the pump ---------------------------------------------------------------------

    def _wake(self) -> None:
        """Schedule the pump unless it is scheduled already (or nothing is queued)."""
        if self._queue and not self._pump_due and self._running and self._loop is not None:
            self._pump_due = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        """Cut batches while a slot is free: the fast path commits one batch here and
        now; other batches start as tasks. Reschedules itself while sends wait."""
        self._pump_due = False
        queue = self._queue
        while queue and self._free_slots > 0 and self._running:
            batch = self._cut_batch()
            cut_at = self._clock()
            if self._commit_now(batch, cut_at):
                self._wake()  # one synchronous batch per call: let other frames in
                return
            self._free_slots -= 1
            self._start_batch(batch, cut_at)

    def _cut_batch(self) -> list[Item]:
        queue = self._queue
        n = len(queue)
        if n <= self._batch_max:
            batch = list(queue)
            queue.clear()
            return batch
        return [queue.popleft() for _ in range(self._batch_max)]

    def _start_batch(self, batch: list[Item], cut_at: float) -> None:
        # Commit turns are handed out here, in queue order: see the module docstring.
        loop = self._loop or asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        previous, self._last_turn = self._last_turn, turn
        task = loop.create_task(self._settle_batch(batch, previous, turn, cut_at))
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._free_slots += 1
        self._progress.set()
        self._wake()

    # -- the fast path ----------------------------------------------------------------

    def _commit_now(self, batch: list[Item], cut_at: float) -> bool:
        """Commit ``batch`` (cut at ``cut_at``) synchronously on the loop and settle it, if
        the fast path is open (see the module docstring); False, having done nothing, if
        it is not."""
        if self.commit_on != "loop" or self._batches or self._faults.has_latency:
            return False
        pool = self._pool
        if not pool.can_lend_now():
            return False
        breaker = self._breaker
        if breaker is not None:
            decision = breaker.try_acquire(self._clock())
            if not decision.allowed:
                never_s = breaker.config.open_duration_s
                retry_after_ms = protocol_ms(decision.retry_after_s, never_s)
                self._finish(batch, Unavailable(retry_after_ms), cut_at)
                return True
        conn = pool.lend_now()
        assert conn is not None  # can_lend_now said so, and nothing ran in between
        try:
            rows = self._commit_inline(conn, [send for send, _, _ in batch])
        except WriteRejected as exc:
            self._finish(batch, exc, cut_at)
        except Exception as exc:  # a bug: answer `internal` rather than hang the senders
            log.exception("write batch failed unexpectedly")
            self._finish(batch, StoreFailed(f"unexpected error: {exc!r}"), cut_at)
        else:
            self._finish(batch, rows, cut_at)
        return True

    def _commit_inline(
        self, conn: StoreConnection, sends: list[PendingSend]
    ) -> list[StoredMessage]:
        """The fast path's commit: injected errors, then :meth:`_commit_here`."""
        started = self._clock()
        if self._faults.has_errors and self._faults.store_fails(started):
            self._record(started, ok=False)
            self._pool.release(conn)  # an injected error leaves the connection fine
            raise StoreFailed("injected store error")
        return self._commit_here(conn, sends, started)

    def _commit_here(
        self, conn: StoreConnection, sends: list[PendingSend], started: float
    ) -> list[StoredMessage]:
        """Commit on the loop's thread, give ``conn`` back (a real store error discards
        it: it may be broken), apply the deadline after the fact, tell the breaker."""
        try:
            rows = conn.commit_batch(sends, self._wall_clock_us())
        except StoreError as exc:
            self._pool.discard(conn)
            self._record(started, ok=False)
            raise StoreFailed(str(exc)) from exc
        self._pool.release(conn)
        if self._clock() - started > self._call_timeout_s:
            # committed, but past the deadline: answered as on a thread (see docstring)
            self._record(started, ok=False)
            raise StoreFailed(f"store commit over its {self._call_timeout_s:g} s deadline")
        held_s = self._record(started, ok=True)
        if self._on_batch is not None:
            self._on_batch(len(sends), held_s)
        return rows

    def _finish(
        self, batch: list[Item], outcome: list[StoredMessage] | WriteRejected, cut_at: float
    ) -> None:
        """Settle a fast-path batch: every future, the drain rate, drain's wake-up."""
        self._settle(batch, outcome, cut_at)
        self._drain_rate.record(self._clock(), len(batch))
        self._progress.set()

    def _settle(
        self,
        batch: Sequence[Item],
        outcome: list[StoredMessage] | WriteRejected,
        cut_at: float,
    ) -> None:
        """Give each future its row (or its copy of the rejection), between the burst's
        hold and release so that the answers they trigger leave together; a committed
        batch (rows) observes its messages' ``queue`` and ``commit`` stage times."""
        burst, loop = self._burst, self._loop
        if len(batch) < 2:  # one message writes one frame per connection anyway
            burst = None
        if burst is not None and loop is not None:
            loop.call_soon(burst.hold)  # runs just before the futures' callbacks
        if isinstance(outcome, WriteRejected):
            _fail([fut for _, fut, _ in batch], outcome)
        else:
            queue_stage = self._queue_stage.observe
            for (_, fut, submitted_at), row in zip(batch, outcome, strict=True):
                if not fut.done():  # done = cancelled: that sender went away
                    fut.set_result(row)
                queue_stage(cut_at - submitted_at)
            self._commit_stage.observe_many(self._clock() - cut_at, len(batch))
        if burst is not None and loop is not None:
            loop.call_soon(burst.release)  # ... and just after them

    # -- one batch as a task ----------------------------------------------------------

    async def _settle_batch(
        self,
        batch: list[Item],
        previous: asyncio.Future[None] | None,
        turn: asyncio.Future[None],
        cut_at: float,
    ) -> None:
        """Store one batch (cut at ``cut_at``) and settle its futures, whatever happens."""
        try:
            rows = await self._store([send for send, _, _ in batch], previous)
        except WriteRejected as exc:
            self._settle(batch, exc, cut_at)
        except asyncio.CancelledError:
            _fail([fut for _, fut, _ in batch], Unavailable(DRAIN_RETRY_AFTER_MS))
            raise
        except Exception as exc:  # a bug: answer `internal` rather than hang the senders
            log.exception("write batch failed unexpectedly")
            self._settle(batch, StoreFailed(f"unexpected error: {exc!r}"), cut_at)
        else:
            self._settle(batch, rows, cut_at)
        finally:
            _pass_turn(previous, turn)
            self._drain_rate.record(self._clock(), len(batch))

    async def _store(
        self, sends: list[PendingSend], previous: asyncio.Future[None] | None
    ) -> list[StoredMessage]:
        """Breaker, pool, faults, commit; raises a ``WriteRejected`` on every failure."""
        breaker = self._breaker
        if breaker is not None:
            decision = breaker.try_acquire(self._clock())
            if not decision.allowed:
                never_s = breaker.config.open_duration_s
                raise Unavailable(protocol_ms(decision.retry_after_s, never_s))
        try:
            async with self._pool.connection() as conn:
                return await self._commit_on(conn, sends, previous)
        except PoolTimeout as exc:  # not the store's fault: no breaker outcome
            if breaker is not None:
                breaker.release_permission()
            raise StoreBusy(waited_ms(exc.waited_s)) from exc
        except PoolClosed as exc:
            if breaker is not None:
                breaker.release_permission()
            raise Unavailable(DRAIN_RETRY_AFTER_MS) from exc
        except StoreError as exc:  # could not even open a connection: the store is failing
            if breaker is not None:
                breaker.on_error(self._clock(), 0.0)
            raise StoreFailed(str(exc)) from exc

    async def _commit_on(
        self,
        conn: StoreConnection,
        sends: list[PendingSend],
        previous: asyncio.Future[None] | None,
    ) -> list[StoredMessage]:
        """Commit on a borrowed connection, recording the outcome with the breaker."""
        started = self._clock()
        try:
            await self._inject_faults(started)
            if previous is not None and not previous.done():
                # Our turn comes when every earlier batch has committed or failed.
                # (asyncio.wait: being cancelled here must not cancel the shared turn.)
                # The wait is queueing, not the store being slow: it does not count in
                # the call's duration (breaker slow calls, commit latency metric).
                waited_from = self._clock()
                await asyncio.wait([previous])
                started += self._clock() - waited_from
            # The deadline: a commit slower than store.call_timeout_s is answered as failed.
            # Its thread cannot be stopped and may still commit; then a retry finds the
            # row as a duplicate (members may miss that Deliver live; history has it).
            if self.commit_on == "loop":
                # gives conn back itself; leaving the pool's `async with` then does nothing
                return self._commit_here(conn, sends, started)
            async with asyncio.timeout(self._call_timeout_s):
                rows = await self._pool.run(conn, conn.commit_batch, sends, self._wall_clock_us())
        except TimeoutError as exc:
            self._record(started, ok=False)
            raise StoreFailed(f"store commit over its {self._call_timeout_s:g} s deadline") from exc
        except StoreError as exc:
            self._record(started, ok=False)
            if not isinstance(exc, _InjectedError):
                self._pool.discard(conn)  # a real error may have broken the connection
            raise StoreFailed(str(exc)) from exc
        except asyncio.CancelledError:
            if self._breaker is not None:
                self._breaker.release_permission()
            raise
        held_s = self._record(started, ok=True)
        if self._on_batch is not None:
            self._on_batch(len(sends), held_s)
        return rows

    async def _inject_faults(self, now: float) -> None:
        faults = self._faults
        if faults.has_latency:
            latency_s = faults.store_latency_s(now)
            if latency_s > 0:
                await asyncio.sleep(latency_s)
        if faults.has_errors and faults.store_fails(self._clock()):
            raise _InjectedError("injected store error")

    def _record(self, started: float, *, ok: bool) -> float:
        """Tell the breaker how the call went; returns its duration."""
        now = self._clock()
        duration_s = now - started
        if self._breaker is not None:
            if ok:
                self._breaker.on_success(now, duration_s)
            else:
                self._breaker.on_error(now, duration_s)
        return duration_s

    def _fail_queued(self) -> None:
        queued = [fut for _, fut, _ in self._queue]
        self._queue.clear()
        _fail(queued, Unavailable(DRAIN_RETRY_AFTER_MS))
        self._progress.set()


def _pass_turn(previous: asyncio.Future[None] | None, turn: asyncio.Future[None]) -> None:
    """End a batch's commit turn, but never before the turns of earlier batches: a batch
    that failed fast must not let a later one commit ahead of an earlier one."""
    if previous is None or previous.done():
        if not turn.done():
            turn.set_result(None)
    else:
        previous.add_done_callback(lambda _: _pass_turn(None, turn))


def _fail(futures: Sequence[asyncio.Future[StoredMessage]], exc: WriteRejected) -> None:
    """Fail each pending future with its own copy of ``exc`` (tracebacks are per raise)."""
    for fut in futures:
        if fut.done():  # cancelled: that sender went away
            continue
        fut.set_exception(_copy(exc))
        fut.exception()  # seen: a sender that left must not cause "never retrieved" logs


def _copy(exc: WriteRejected) -> WriteRejected:
    """A second instance of ``exc`` (same class, message and fields), without calling the
    subclass's ``__init__``, whose parameters differ from class to class."""
    clone = WriteRejected.__new__(type(exc))
    clone.args = exc.args
    clone.__dict__.update(exc.__dict__)
    clone.__cause__ = exc.__cause__
    return clone


# -- wiring -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WritePath:
    """The write path's parts, as the server runs them (and the differential test too)."""

    faults: FaultInjector
    breaker: CircuitBreaker | None
    pool: StorePool
    writer: Writer


async def start_write_path(
    scenario: Scenario,
    connect: Callable[[], StoreConnection],
    *,
    clock: Clock,
    log: logging.Logger,
    breaker_listeners: Sequence[Callable[[Transition], None]] = (),
    on_batch: Callable[[int, float], None] | None = None,
    executor: Executor | None = None,
    wall_clock_us: Callable[[], int] = _wall_clock_us,
    commit_on: str | None = None,
    burst: WriteBurst | None = None,
) -> WritePath:
    """Build and start the fault plan, breaker, pool and writer from ``scenario``, wired
    once: :class:`server.app.ChatServer` and the scripted test harness both call this.

    Where commits run is ``server.store.commit_on`` (``commit_on`` overrides it: the
    scripted harness, whose store takes virtual time on its executor, asks for
    ``thread``), decided by :func:`chatcap.policy.commit.commit_place`; a bad value is a
    ValueError naming the key, the value and the allowed ones."""
    cfg = scenario.server
    place = commit_place(
        commit_on if commit_on is not None else cfg.store.commit_on,
        cfg.store.synchronous,
        cfg.processes,
    )
    faults = FaultInjector(cfg.faults, started_at=clock(), seed=scenario.seed)
    breaker = wiring.make_breaker(cfg.breaker, listeners=breaker_listeners)
    pool = StorePool(wiring.pool_rules(cfg.pool), connect, log=log, clock=clock, executor=executor)
    await pool.start()
    writer = Writer(
        cfg.store,
        breaker,
        pool,
        faults,
        clock=clock,
        on_batch=on_batch,
        max_in_flight_batches=cfg.store.max_in_flight_batches,
        wall_clock_us=wall_clock_us,
        commit_on=place,
        burst=burst,
    )
    await writer.start()
    return WritePath(faults, breaker, pool, writer)
