"""An asyncio pool of store connections that behaves like HikariCP.

The rules live in ``chatcap.policy.pool.PoolLedger`` (which connection to hand out, when
to open, retire or report one); the model drives the same ledger. This module only
carries the decisions out on an event loop:

* waiting: a borrower that must wait parks an asyncio future in the wait line
  (:class:`chatcap.pipeline.handoff.WaitLine`, the rule shared with the model). A
  returned connection is handed *directly* to the oldest waiter (as HikariCP's hand-off
  queue does), so a newcomer never overtakes someone already waiting;
* timeouts: a waiter gives up after ``acquire_timeout_s`` with :class:`PoolTimeout`
  (``0``, like HikariCP's ``connectionTimeout=0``, or ``inf`` mean wait forever);
* blocking work: opening, closing and every call on a connection (:meth:`StorePool.run`)
  run on a dedicated thread pool with one thread per connection, never on the loop;
* housekeeping: a task retires idle or old connections, refills to ``min_idle`` and
  logs one WARNING per leaked borrow.

Cancellation is safe at every await: a waiter cancelled after being handed a connection
gives it back, a connection opened for a cancelled borrower joins the pool, and a call
whose caller was cancelled keeps its connection out of the pool until the thread is done
with it (SQLite work cannot be interrupted, and the connection must not be lent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from chatcap import wiring
from chatcap.pipeline.handoff import WaitLine
from chatcap.policy.pool import Housekeeping, PoolLedger, PoolRules
from server.clock import Clock, now_s
from server.store import StoreConnection, StoreError

__all__ = [
    "PoolClosed",
    "PoolStats",
    "PoolTimeout",
    "StorePool",
    "housekeeping_period_s",
    "pool_rules",
]

T = TypeVar("T")
Grant = tuple[Literal["reuse", "create"], int]

HOUSEKEEPING_MAX_PERIOD_S = 30.0  # HikariCP's housekeeper runs every 30 s
HOUSEKEEPING_MIN_PERIOD_S = 0.01  # tiny thresholds (scaled-time runs) must not spin the loop


class PoolTimeout(Exception):
    """No connection became free within the acquire timeout (answered as ``store_busy``)."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"no store connection within {waited_s * 1000:.0f} ms")
        self.waited_s = waited_s


class PoolClosed(StoreError):
    """The pool was closed while waiting for, or before asking for, a connection."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool for metrics; counters count since the pool was built."""

    in_use: int
    idle: int
    waiting: int
    total: int
    acquire_timeouts: int
    created: int
    retired: int
    leaks: int


# The scenario → PoolRules mapping lives with the rest of the wiring (the model uses it too).
NO_WAIT_S = wiring.NO_WAIT_S
pool_rules = wiring.pool_rules


def housekeeping_period_s(rules: PoolRules) -> float:
    """Half the shortest active time rule, at most 30 s, so none is noticed very late."""
    limits = [rules.max_lifetime_s, rules.leak_detection_s]
    if rules.idle_eviction_active:
        limits.append(rules.idle_timeout_s)
    period_s = min([HOUSEKEEPING_MAX_PERIOD_S * 2, *(x for x in limits if x > 0)]) / 2
    return max(period_s, HOUSEKEEPING_MIN_PERIOD_S)


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as seen, so an abandoned one logs nothing at GC."""
    if not fut.cancelled():
        fut.exception()


class StorePool:
    """Lends :class:`StoreConnection` objects to tasks; see the module docstring."""

    def __init__(
        self,
        rules: PoolRules,
        connect: Callable[[], StoreConnection],
        *,
        executor_threads: int | None = None,
        log: logging.Logger | None = None,
        clock: Clock | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``executor`` runs the blocking calls (default: a thread per connection; tests
        pass one of their own)."""
        self.rules = rules
        self._ledger = PoolLedger(rules)
        self._connect = connect
        self._executor = executor or ThreadPoolExecutor(
            max_workers=executor_threads or rules.size, thread_name_prefix="chatcap-store"
        )
        self._log = log if log is not None else logging.getLogger(__name__)
        self._clock = clock or now_s  # the server's one clock (server.clock)
        self._conns: dict[int, StoreConnection] = {}  # every open connection, by ledger id
        self._out: set[int] = set()  # ids the ledger counts as borrowed (handed or granted)
        self._borrowed: dict[StoreConnection, int] = {}  # handed to a caller
        self._borrowed_at: dict[int, float] = {}
        self._calls: dict[int, asyncio.Future[Any]] = {}  # a thread is using this connection
        self._line: WaitLine[asyncio.Future[Grant]] = WaitLine()
        self._closing: set[asyncio.Future[None]] = set()
        self._housekeeper: asyncio.Task[None] | None = None
        self._closed = False
        self._acquire_timeouts = self._created = self._retired = self._leaks = 0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open ``min_idle`` connections and start housekeeping; raises StoreError if the
        store cannot be opened (better not to start at all)."""
        await self.housekeep()
        self._housekeeper = asyncio.create_task(
            self._housekeep_forever(housekeeping_period_s(self.rules)), name="store-pool"
        )

    async def close(self) -> None:
        """Close idle connections now, borrowed ones as they come back; stop housekeeping.
        Waiters fail with :class:`PoolClosed`."""
        if self._closed:
            return
        self._closed = True
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        while (fut := self._line.hand_off()) is not None:
            if not fut.done():
                fut.set_exception(PoolClosed("the store pool is closed"))
        idle = [conn_id for conn_id in self._conns if conn_id not in self._out]
        for conn_id in idle:
            self._ledger.discard(conn_id)
        self._retire(idle)
        if self._closing:
            await asyncio.wait(self._closing)
        # Threads still busy belong to borrowed connections; they finish on their own.
        self._executor.shutdown(wait=False)

    # -- borrowing --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection(self, timeout_s: float | None = None) -> AsyncIterator[StoreConnection]:
        """Borrow a connection for the ``async with`` block.

        ``timeout_s`` None = the rules' ``acquire_timeout_s``; ``0`` or ``inf`` = forever.
        Raises :class:`PoolTimeout`, :class:`PoolClosed`, or StoreError if opening failed.
        """
        conn = await self.acquire(timeout_s)
        try:
            yield conn
        finally:
            self.release(conn)

    async def acquire(self, timeout_s: float | None = None) -> StoreConnection:
        """Borrow a connection (prefer ``connection()``); give it back with ``release``."""
        if self._closed:
            raise PoolClosed("the store pool is closed")
        wait_s = self._timeout(timeout_s)
        started_at = self._clock()
        if not self._line.must_wait(self._free()):
            checkout = self._ledger.checkout(started_at)
            self._retire(checkout.retire)
            if checkout.action != "wait":
                assert checkout.conn_id is not None
                self._out.add(checkout.conn_id)
                return await self._take((checkout.action, checkout.conn_id))
        grant = await self._wait(started_at, wait_s)
        return await self._take(grant)

    def can_lend_now(self) -> bool:
        """True when :meth:`lend_now` would hand out an open idle connection: the pool is
        open, nobody waits, and the ledger has an idle one."""
        return not self._closed and not self._line and self._ledger.idle > 0

    def lend_now(self) -> StoreConnection | None:
        """Borrow an idle connection at once, without waiting or opening one (the
        writer's fast path commits on the loop with it); None when that is not possible.
        Give it back with :meth:`release` (or :meth:`discard`)."""
        if not self.can_lend_now():
            return None
        checkout = self._ledger.checkout(self._clock())
        self._retire(checkout.retire)
        if checkout.action != "reuse":  # the idle one had expired: opening is for acquire
            if checkout.action == "create":
                assert checkout.conn_id is not None
                self._forget(checkout.conn_id)
                self._dispatch()
            return None
        assert checkout.conn_id is not None
        conn_id = checkout.conn_id
        self._out.add(conn_id)
        conn = self._conns[conn_id]
        self._borrowed[conn] = conn_id
        self._borrowed_at[conn_id] = self._clock()
        return conn

    def release(self, conn: StoreConnection) -> None:
        """Give a borrowed connection back (a discarded one is ignored)."""
        conn_id = self._borrowed.pop(conn, None)
        if conn_id is None:
            return
        del self._borrowed_at[conn_id]
        call = self._calls.get(conn_id)
        if call is not None:  # a cancelled caller's thread still uses it: wait for that
            call.add_done_callback(lambda _: self._check_in(conn_id))
        else:
            self._check_in(conn_id)

    def discard(self, conn: StoreConnection) -> None:
        """Drop a borrowed connection that looks broken; the pool opens a fresh one when
        needed. Leaving the ``async with`` block afterwards returns nothing."""
        conn_id = self._borrowed.pop(conn)
        del self._borrowed_at[conn_id]
        self._forget(conn_id)
        call = self._calls.get(conn_id)
        if call is not None:
            call.add_done_callback(lambda _: self._retire([conn_id]))
        else:
            self._retire([conn_id])
        self._dispatch()

    async def run(self, conn: StoreConnection, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call on the pool's threads: ``fn(conn, *args)``, or
        ``fn(*args)`` when ``fn`` is a method bound to ``conn`` (``conn.history``)."""
        conn_id = self._borrowed.get(conn)
        if conn_id is None:
            raise RuntimeError("run() needs a connection currently borrowed from this pool")
        if getattr(fn, "__self__", None) is not conn:
            fn = functools.partial(fn, conn)
        earlier = self._calls.get(conn_id)
        if earlier is not None:  # a call abandoned by a cancelled caller is still running
            await asyncio.wait([earlier])
        call = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        self._calls[conn_id] = call
        call.add_done_callback(functools.partial(self._call_done, conn_id))
        try:
            # shield: a cancelled caller must not make us forget that the thread is busy
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(_consume)
            raise

    def _call_done(self, conn_id: int, call: asyncio.Future[Any]) -> None:
        if self._calls.get(conn_id) is call:
            del self._calls[conn_id]

    # -- reading ----------------------------------------------------------------------

    def stats(self) -> PoolStats:
        """Counts right now (gauges) and since start (counters)."""
        ledger = self._ledger
        return PoolStats(
            in_use=ledger.in_use,
            idle=ledger.idle,
            waiting=len(self._line),
            total=ledger.total,
            acquire_timeouts=self._acquire_timeouts,
            created=self._created,
            retired=self._retired,
            leaks=self._leaks,
        )

    # -- housekeeping -----------------------------------------------------------------

    async def housekeep(self) -> Housekeeping:
        """One housekeeping round (the background task calls it every period)."""
        now = self._clock()
        round_ = self._ledger.housekeep(now)
        self._retire(round_.retire)
        for conn_id in round_.leaks:
            self._leaks += 1
            self._log.warning(
                "connection %d held for %.3g s (leak detection threshold %.3g s)",
                conn_id,
                now - self._borrowed_at.get(conn_id, now),
                self.rules.leak_detection_s,
            )
        for _ in range(round_.create):
            new_id = self._ledger.add_idle(self._clock())
            if new_id is None:
                break
            await self._open(new_id, for_borrower=False)
        self._dispatch()
        return round_

    async def _housekeep_forever(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.housekeep()
            except StoreError as exc:  # the next round tries again
                self._log.warning("store pool could not refill: %s", exc)

    # -- internals --------------------------------------------------------------------

    def _timeout(self, timeout_s: float | None) -> float | None:
        """Seconds to wait, or None for forever (0 and inf, as in PoolRules)."""
        if timeout_s is None:
            timeout_s = self.rules.acquire_timeout_s
        if timeout_s < 0 or math.isnan(timeout_s):
            raise ValueError(f"timeout_s must be >= 0 (0 or inf = forever), got {timeout_s!r}")
        return timeout_s if 0 < timeout_s < math.inf else None

    def _free(self) -> int:
        """Connections a checkout can have now: idle ones, plus room to open new ones.
        (An expired idle one is replaced by a new one, so ``> 0`` means no wait.)"""
        ledger = self._ledger
        return ledger.idle + self.rules.size - ledger.total

    async def _wait(self, started_at: float, timeout_s: float | None) -> Grant:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Grant] = loop.create_future()
        self._line.join(fut)
        # Ahead in the line there may be only waiters that just left (cancelled, their
        # task not yet resumed): hand free capacity on now rather than at the next return.
        self._dispatch()
        timer = None
        if timeout_s is not None:
            timer = loop.call_later(timeout_s, self._expire, fut, started_at)
        try:
            return await fut
        except BaseException:
            self._abandon(fut)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, fut: asyncio.Future[Grant], started_at: float) -> None:
        if fut.done():
            return
        self._line.leave(fut)
        self._acquire_timeouts += 1
        fut.set_exception(PoolTimeout(self._clock() - started_at))

    def _abandon(self, fut: asyncio.Future[Grant]) -> None:
        """A waiter left (timeout, cancellation): give back whatever it was handed."""
        self._line.leave(fut)
        if not fut.done() or fut.cancelled() or fut.exception() is not None:
            return
        action, conn_id = fut.result()
        if action == "reuse":
            self._check_in(conn_id)
        else:  # a slot reserved for opening a connection: free it for the next waiter
            self._forget(conn_id)
            self._dispatch()

    async def _take(self, grant: Grant) -> StoreConnection:
        action, conn_id = grant
        if self._closed:  # granted just before close(): give it back, closing it
            if action == "reuse":
                self._check_in(conn_id)
            else:
                self._forget(conn_id)
            raise PoolClosed("the store pool is closed")
        if action == "create":
            conn = await self._open(conn_id, for_borrower=True)
        else:
            conn = self._conns[conn_id]
        self._borrowed[conn] = conn_id
        self._borrowed_at[conn_id] = self._clock()
        return conn

    async def _open(self, conn_id: int, *, for_borrower: bool) -> StoreConnection:
        """Open the connection the ledger reserved as ``conn_id``."""
        opening = asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        try:
            conn = await asyncio.shield(opening)  # a cancelled opener must not lose it
        except asyncio.CancelledError:
            opening.add_done_callback(lambda f: self._adopt(conn_id, f, for_borrower))
            raise
        except Exception as exc:
            self._forget(conn_id)
            self._dispatch()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open a store connection: {exc}") from exc
        self._register(conn_id, conn)
        return conn

    def _adopt(
        self, conn_id: int, opening: asyncio.Future[StoreConnection], borrowed: bool
    ) -> None:
        """A connection finished opening after its opener was cancelled: keep it."""
        if opening.cancelled() or opening.exception() is not None or self._closed:
            self._forget(conn_id)
            if not opening.cancelled() and opening.exception() is None:
                self._close_soon(opening.result())
            self._dispatch()
            return
        self._register(conn_id, opening.result())
        if borrowed:
            self._check_in(conn_id)
        else:
            self._dispatch()

    def _register(self, conn_id: int, conn: StoreConnection) -> None:
        self._conns[conn_id] = conn
        self._ledger.created(conn_id, self._clock())
        self._created += 1

    def _forget(self, conn_id: int) -> None:
        """The ledger drops ``conn_id`` (broken, never opened, or the pool is closing)."""
        self._out.discard(conn_id)
        self._ledger.discard(conn_id)

    def _check_in(self, conn_id: int) -> None:
        if self._closed:
            self._forget(conn_id)
            self._retire([conn_id])
            return
        self._out.discard(conn_id)
        if self._ledger.checkin(conn_id, self._clock()) == "retire":
            self._retire([conn_id])
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free capacity to the oldest waiters, in order."""
        while self._line and not self._closed and self._free() > 0:
            fut = self._line.hand_off()
            assert fut is not None
            if fut.done():  # cancelled, its task not yet resumed: it is leaving
                continue
            checkout = self._ledger.checkout(self._clock())
            self._retire(checkout.retire)
            assert checkout.action != "wait" and checkout.conn_id is not None
            self._out.add(checkout.conn_id)
            fut.set_result((checkout.action, checkout.conn_id))

    def _retire(self, conn_ids: Iterable[int]) -> None:
        """Close connections the ledger has already forgotten."""
        for conn_id in conn_ids:
            conn = self._conns.pop(conn_id, None)
            if conn is not None:
                self._retired += 1
                self._close_soon(conn)

    def _close_soon(self, conn: StoreConnection) -> None:
        try:
            closing = asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        except RuntimeError:  # executor shut down: closing is quick enough to do here
            conn.close()
            return
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
