"""The asyncio store pool: HikariCP behaviour on top of PoolLedger, with cancellation safety."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from chatcap.policy.pool import PoolRules
from chatcap.scenario import PoolConfig
from server.store import StoreConnection, StoreError
from server.storepool import (
    PoolClosed,
    PoolTimeout,
    StorePool,
    housekeeping_period_s,
    pool_rules,
)
from tests.server.support_writepath import FakeClock, run, scaled, until


def connector(tmp_path: Path) -> Callable[[], StoreConnection]:
    return lambda: StoreConnection(tmp_path / "s.db")


def test_pool_rules_from_the_scenario_convert_units_and_infinite_timeout() -> None:
    rules = pool_rules(
        PoolConfig(size=4, min_idle=1, acquire_timeout_ms=250, leak_detection_ms=2500)
    )
    assert (rules.size, rules.min_idle, rules.acquire_timeout_s, rules.leak_detection_s) == (
        4,
        1,
        0.25,
        2.5,
    )
    assert pool_rules(PoolConfig(acquire_timeout_ms=math.inf)).acquire_timeout_s == 0.0


def test_housekeeping_runs_at_half_the_shortest_active_rule_and_at_most_every_30_s() -> None:
    assert housekeeping_period_s(PoolRules()) == 30.0  # fixed size: idle timeout inactive
    assert housekeeping_period_s(PoolRules(min_idle=0, idle_timeout_s=20)) == 10.0
    assert housekeeping_period_s(PoolRules(leak_detection_s=4, max_lifetime_s=0)) == 2.0
    assert housekeeping_period_s(PoolRules(max_lifetime_s=0)) == 30.0


def test_pool_never_lends_more_than_size_connections(tmp_path: Path) -> None:
    async def main() -> None:
        pool = StorePool(PoolRules(size=3), connector(tmp_path))
        holding, most = 0, 0
        full = asyncio.Event()  # three connections lent at once

        async def borrower() -> None:
            nonlocal holding, most
            async with pool.connection() as conn:
                holding += 1
                most = max(most, holding)
                if holding == 3:
                    full.set()
                # the first three wait for each other (a pool lending fewer times out),
                # so the count cannot depend on how fast the first ones finish
                await asyncio.wait_for(full.wait(), 10)
                await pool.run(conn, StoreConnection.last_seq, "a")
                holding -= 1

        await asyncio.gather(*(borrower() for _ in range(20)))
        stats = pool.stats()
        await pool.close()
        assert most == 3
        assert (stats.total, stats.created, stats.in_use, stats.idle) == (3, 3, 0, 3)

    run(main())


def test_waiters_are_served_first_come_first_served_and_newcomers_queue_behind(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        pool = StorePool(PoolRules(size=1), connector(tmp_path))
        order: list[str] = []

        async def borrower(name: str) -> None:
            async with pool.connection():
                order.append(name)

        held = await pool.acquire()
        tasks = []
        for name in ("w1", "w2", "w3"):
            tasks.append(asyncio.create_task(borrower(name)))
            await until(lambda: pool.stats().waiting == len(tasks))
        pool.release(held)
        tasks.append(asyncio.create_task(borrower("newcomer")))  # arrives after the release
        await asyncio.gather(*tasks)
        await pool.close()
        assert order == ["w1", "w2", "w3", "newcomer"]

    run(main())


def test_acquire_times_out_with_pool_timeout_and_counts_it(tmp_path: Path) -> None:
    async def main() -> None:
        pool = StorePool(PoolRules(size=1, acquire_timeout_s=scaled(0.02)), connector(tmp_path))
        async with pool.connection():
            with pytest.raises(PoolTimeout) as caught:
                await pool.acquire()  # the rules' default timeout
            with pytest.raises(PoolTimeout):
                await pool.acquire(timeout_s=scaled(0.01))
        stats = pool.stats()
        await pool.close()
        assert caught.value.waited_s > 0
        assert not isinstance(caught.value, asyncio.TimeoutError)
        assert (stats.acquire_timeouts, stats.waiting, stats.in_use, stats.idle) == (2, 0, 0, 1)

    run(main())


@pytest.mark.parametrize("timeout_s", [0.0, math.inf])
def test_zero_or_infinite_timeout_waits_until_a_connection_comes_back(
    tmp_path: Path, timeout_s: float
) -> None:
    async def main() -> None:
        pool = StorePool(PoolRules(size=1, acquire_timeout_s=scaled(0.01)), connector(tmp_path))
        held = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire(timeout_s=timeout_s))
        await until(lambda: pool.stats().waiting == 1)
        await asyncio.sleep(scaled(0.03))  # longer than the rules' timeout: it must not fire
        pool.release(held)
        pool.release(await waiter)
        stats = pool.stats()
        await pool.close()
        assert stats.acquire_timeouts == 0

    run(main())


def test_a_cancelled_waiter_takes_nothing_with_it(tmp_path: Path) -> None:
    async def main() -> None:
        pool = StorePool(PoolRules(size=1), connector(tmp_path))
        held = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await until(lambda: pool.stats().waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        pool.release(held)
        stats = pool.stats()
        async with pool.connection(timeout_s=scaled(1.0)):
            pass
        await pool.close()
        assert (stats.in_use, stats.idle, stats.waiting) == (0, 1, 0)

    run(main())


def test_a_waiter_cancelled_after_being_handed_a_connection_gives_it_back(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        pool = StorePool(PoolRules(size=1), connector(tmp_path))
        held = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await until(lambda: pool.stats().waiting == 1)
        pool.release(held)  # handed to the waiter, which has not run yet...
        waiter.cancel()  # ...and is cancelled before it does
        with pytest.raises(asyncio.CancelledError):
            await waiter
        stats = pool.stats()
        await pool.close()
        assert (stats.in_use, stats.idle, stats.total) == (0, 1, 1)

    run(main())


def test_a_connection_opened_for_a_cancelled_borrower_joins_the_pool(tmp_path: Path) -> None:
    async def main() -> None:
        opening = threading.Event()
        proceed = threading.Event()

        def slow_connect() -> StoreConnection:
            opening.set()
            proceed.wait()
            return StoreConnection(tmp_path / "s.db")

        pool = StorePool(PoolRules(size=1), slow_connect)
        borrower = asyncio.create_task(pool.acquire())
        await until(opening.is_set)
        borrower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await borrower
        proceed.set()
        await until(lambda: pool.stats().idle == 1)
        stats = pool.stats()
        await pool.close()
        assert (stats.in_use, stats.total, stats.created) == (0, 1, 1)

    run(main())


def test_run_accepts_an_unbound_function_or_a_method_bound_to_the_connection(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        pool = StorePool(PoolRules(size=1), connector(tmp_path))
        async with pool.connection() as conn:
            assert await pool.run(conn, StoreConnection.last_seq, "a") == 0
            assert await pool.run(conn, conn.last_seq, "a") == 0
            thread = await pool.run(conn, lambda _conn: threading.current_thread().name)
        with pytest.raises(RuntimeError, match="currently borrowed"):
            await pool.run(conn, conn.last_seq, "a")
        await pool.close()
        assert thread.startswith("chatcap-store")

    run(main())


def test_a_cancelled_call_keeps_its_connection_until_the_thread_is_done(tmp_path: Path) -> None:
    async def main() -> None:
        started, proceed = threading.Event(), threading.Event()

        def blocking(conn: StoreConnection) -> int:
            started.set()
            proceed.wait()
            return conn.last_seq("a")

        pool = StorePool(PoolRules(size=1), connector(tmp_path))

        async def caller() -> None:
            async with pool.connection() as conn:
                await pool.run(conn, blocking)

        task = asyncio.create_task(caller())
        await until(started.is_set)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        next_borrower = asyncio.create_task(pool.acquire())
        await until(lambda: pool.stats().waiting == 1)
        assert pool.stats().in_use == 1  # still out: its thread is running
        proceed.set()
        pool.release(await next_borrower)
        await pool.close()

    run(main())


def test_a_discarded_connection_is_closed_and_replaced_on_demand(tmp_path: Path) -> None:
    async def main() -> None:
        pool = StorePool(PoolRules(size=1, min_idle=0), connector(tmp_path))
        async with pool.connection() as first:
            pool.discard(first)
        after_discard = pool.stats()
        async with pool.connection() as second:
            assert second is not first
        stats = pool.stats()
        await pool.close()
        assert (after_discard.total, after_discard.retired) == (0, 1)
        assert (stats.total, stats.created) == (1, 2)

    run(main())


def test_a_failed_open_frees_its_slot_and_raises_store_error(tmp_path: Path) -> None:
    async def main() -> None:
        attempts = 0

        def flaky_connect() -> StoreConnection:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise StoreError("disk on fire")
            return StoreConnection(tmp_path / "s.db")

        pool = StorePool(PoolRules(size=1), flaky_connect)
        with pytest.raises(StoreError, match="disk on fire"):
            await pool.acquire()
        assert pool.stats().total == 0
        async with pool.connection():
            pass
        await pool.close()

    run(main())


def test_start_opens_min_idle_and_close_closes_everything(tmp_path: Path) -> None:
    async def main() -> None:
        pool = StorePool(PoolRules(size=4, min_idle=2), connector(tmp_path))
        await pool.start()
        started = pool.stats()
        waiter_pool = StorePool(PoolRules(size=1), connector(tmp_path))
        held = await waiter_pool.acquire()
        waiter = asyncio.create_task(waiter_pool.acquire())
        await until(lambda: waiter_pool.stats().waiting == 1)
        await pool.close()
        await waiter_pool.close()
        with pytest.raises(PoolClosed):
            await waiter
        waiter_pool.release(held)  # returned after close: closed, not kept
        with pytest.raises(PoolClosed):
            await pool.acquire()
        assert (started.idle, started.created) == (2, 2)
        assert pool.stats().total == 0
        assert waiter_pool.stats().total == 0

    run(main())


def test_housekeeping_retires_long_idle_connections_above_min_idle(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        rules = PoolRules(size=3, min_idle=1, idle_timeout_s=10.0)
        pool = StorePool(rules, connector(tmp_path), clock=clock)
        conns = [await pool.acquire() for _ in range(3)]
        for conn in conns:
            pool.release(conn)
        clock.advance(5.0)
        await pool.housekeep()
        before = pool.stats()
        clock.advance(6.0)
        await pool.housekeep()
        after = pool.stats()
        await pool.close()
        assert (before.idle, before.retired) == (3, 0)
        assert (after.idle, after.retired, after.total) == (1, 2, 1)

    run(main())


def test_max_lifetime_retires_on_return_and_in_housekeeping_then_refills(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        rules = PoolRules(size=2, min_idle=2, max_lifetime_s=100.0)
        pool = StorePool(rules, connector(tmp_path), clock=clock)
        await pool.start()  # opens 2
        borrowed = await pool.acquire()
        clock.advance(101.0)
        pool.release(borrowed)  # too old: closed on return
        on_return = pool.stats()
        await pool.housekeep()  # the idle one is too old too; both are replaced
        refilled = pool.stats()
        await pool.close()
        assert (on_return.retired, on_return.total) == (1, 1)
        assert (refilled.retired, refilled.created, refilled.idle) == (2, 4, 2)

    run(main())


def test_a_leak_is_logged_once_per_borrow(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        clock = FakeClock()
        rules = PoolRules(size=1, leak_detection_s=5.0)
        pool = StorePool(rules, connector(tmp_path), clock=clock)
        async with pool.connection():
            clock.advance(6.0)
            await pool.housekeep()
            clock.advance(6.0)
            await pool.housekeep()
        stats = pool.stats()
        await pool.close()
        assert stats.leaks == 1

    with caplog.at_level(logging.WARNING, logger="server.storepool"):
        run(main())
    assert [r.getMessage() for r in caplog.records] == [
        "connection 1 held for 6 s (leak detection threshold 5 s)"
    ]


def test_the_background_housekeeper_reports_a_leak_on_its_own(tmp_path: Path) -> None:
    class Signal(logging.Handler):
        def __init__(self, event: asyncio.Event) -> None:
            super().__init__()
            self.event = event

        def emit(self, record: logging.LogRecord) -> None:
            self.event.set()

    async def main() -> None:
        leaked = asyncio.Event()
        log = logging.getLogger("test.storepool.leaks")
        handler = Signal(leaked)
        log.addHandler(handler)
        rules = PoolRules(size=1, leak_detection_s=scaled(0.02))
        pool = StorePool(rules, connector(tmp_path), log=log)
        await pool.start()
        try:
            async with pool.connection():
                await asyncio.wait_for(leaked.wait(), scaled(5.0))
        finally:
            log.removeHandler(handler)
            await pool.close()
        assert pool.stats().leaks == 1

    run(main())


def test_a_zero_acquire_timeout_in_the_scenario_means_never_wait() -> None:
    from chatcap.scenario import PoolConfig
    from server.storepool import NO_WAIT_S, pool_rules

    assert pool_rules(PoolConfig(acquire_timeout_ms=0.0)).acquire_timeout_s == NO_WAIT_S
    assert pool_rules(PoolConfig(acquire_timeout_ms=float("inf"))).acquire_timeout_s == 0.0
