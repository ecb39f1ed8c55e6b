"""The write path behind the session: bounded queue, batches, breaker, pool, commit.

Stages 4 and 5 of the pipeline in docs/design.md, as one asyncio component::

    submit(send) ──► queue (≤ write_queue_max, else Overloaded at once)
                       │  the run loop takes up to batch_max sends when a batch slot is free
                       ▼
                 breaker.try_acquire ── refused ──► Unavailable(retry_after_ms)
                       ▼
                 pool.connection()   ── timeout ──► StoreBusy(waited_ms)
                       ▼
                 injected latency (asyncio.sleep, holding the connection),
                 injected error ──────────────────► StoreFailed
                       ▼
                 commit_batch on the pool's thread ── StoreError ──► StoreFailed
                       ▼
                 each send's future gets its StoredMessage, only after COMMIT returned

Up to ``max_in_flight_batches`` batches are in flight at once, each on its own pool
connection, so pool waits and injected latencies overlap as they would on a real
database. The commits themselves take turns in queue order: SQLite has one writer
anyway, and taking turns keeps a sender's messages in the order they were sent (two
batches racing for the write lock could otherwise swap them) and keeps this process's
connections out of SQLite's sleeping busy handler.

A batch slot is taken *before* a batch is cut, so while every slot is busy the queue
grows and the next batch is bigger: batching adapts to load by itself.

The rules of the answers (retry-after ms, the ``overloaded`` drain-rate hint,
``store_busy``'s waited ms) and of injected faults are ``chatcap.pipeline``'s, shared
with the model; this module carries them out on the event loop.

Every future is settled exactly once and is never left hanging. A sender that went away
(its future cancelled) does not disturb its batch: the send was accepted, so it is still
stored and delivered; only its answer is skipped (a retry finds it as a duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from chatcap import wiring
from chatcap.pipeline.answers import DRAIN_RETRY_AFTER_MS, protocol_ms, waited_ms
from chatcap.pipeline.drain import DrainRate, overload_retry_after_ms
from chatcap.policy.breaker import CircuitBreaker, Transition
from chatcap.protocol.messages import INTERNAL, OVERLOADED, STORE_BUSY, UNAVAILABLE
from chatcap.scenario import Scenario, StoreConfig
from server.clock import Clock, loop_deadline, now_s
from server.faults import FaultInjector
from server.store import PendingSend, StoreConnection, StoredMessage, StoreError
from server.storepool import PoolClosed, PoolTimeout, StorePool

__all__ = [
    "DRAIN_RETRY_AFTER_MS",
    "Overloaded",
    "StoreBusy",
    "StoreFailed",
    "Unavailable",
    "WritePath",
    "WriteRejected",
    "Writer",
    "start_write_path",
]

log = logging.getLogger(__name__)

Item = tuple[PendingSend, "asyncio.Future[StoredMessage]"]


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
    ) -> None:
        self._batch_max = store_cfg.batch_max
        self._queue_max = store_cfg.write_queue_max
        self._call_timeout_s = store_cfg.call_timeout_s
        self._breaker = breaker
        self._pool = pool
        self._faults = faults
        self._clock = clock or now_s  # the server's one clock (server.clock)
        self._on_batch = on_batch
        self._wall_clock_us = wall_clock_us
        slots = max_in_flight_batches if max_in_flight_batches is not None else pool.rules.size
        if slots < 1:
            raise ValueError(f"max_in_flight_batches must be >= 1, got {slots!r}")
        self._slots = asyncio.Semaphore(slots)
        self._queue: deque[Item] = deque()
        self._queued = asyncio.Event()  # set while the queue is not empty
        self._progress = asyncio.Event()  # set whenever a batch finishes
        self._batches: set[asyncio.Task[None]] = set()
        self._last_turn: asyncio.Future[None] | None = None  # the newest batch's commit turn
        self._drain_rate = DrainRate()
        self._accepting = True
        self._runner: asyncio.Task[None] | None = None

    # -- reading ----------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Sends waiting for a batch."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Batches being committed (or rejected) right now."""
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
        if len(self._queue) >= self._queue_max:
            # about how long the queue takes to drain at the recent rate
            rate = self._drain_rate.per_s(self._clock())
            raise Overloaded(overload_retry_after_ms(len(self._queue), rate))
        fut: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self._queue.append((send, fut))
        self._queued.set()
        return fut

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the run loop (sends submitted earlier wait in the queue until then)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="store-writer")

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
        """Stop the run loop, fail what is still queued, wait for running batches."""
        self._accepting = False
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self._fail_queued()
        if self._batches:
            await asyncio.wait(self._batches)

    # -- the run loop -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._queued.wait()
            await self._slots.acquire()  # while all slots are busy, the next batch grows
            batch = self._cut_batch()
            if not batch:  # emptied meanwhile (drain deadline)
                self._slots.release()
                continue
            self._start_batch(batch)

    def _cut_batch(self) -> list[Item]:
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(self._batch_max, len(queue)))]
        if not queue:
            self._queued.clear()
        return batch

    def _start_batch(self, batch: list[Item]) -> None:
        # Commit turns are handed out here, in queue order: see the module docstring.
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        previous, self._last_turn = self._last_turn, turn
        task = asyncio.create_task(self._settle_batch(batch, previous, turn))
        self._batches.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._slots.release()
        self._progress.set()

    # -- one batch --------------------------------------------------------------------

    async def _settle_batch(
        self, batch: list[Item], previous: asyncio.Future[None] | None, turn: asyncio.Future[None]
    ) -> None:
        """Store one batch and settle its futures, whatever happens."""
        futures = [fut for _, fut in batch]
        try:
            rows = await self._store([send for send, _ in batch], previous)
        except WriteRejected as exc:
            _fail(futures, exc)
        except asyncio.CancelledError:
            _fail(futures, Unavailable(DRAIN_RETRY_AFTER_MS))
            raise
        except Exception as exc:  # a bug: answer `internal` rather than hang the senders
            log.exception("write batch failed unexpectedly")
            _fail(futures, StoreFailed(f"unexpected error: {exc!r}"))
        else:
            for fut, row in zip(futures, rows, strict=True):
                if not fut.done():  # done = cancelled: that sender went away
                    fut.set_result(row)
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
        queued = [fut for _, fut in self._queue]
        self._queue.clear()
        self._queued.clear()
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
) -> WritePath:
    """Build and start the fault plan, breaker, pool and writer from ``scenario``, wired
    once: :class:`server.app.ChatServer` and the scripted test harness both call this."""
    cfg = scenario.server
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
    )
    await writer.start()
    return WritePath(faults, breaker, pool, writer)
