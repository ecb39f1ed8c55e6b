"""The writer: batching, queue bound, breaker, pool timeouts, faults, ordering and drain.

Every test that builds its writer with :func:`rig` runs twice, with commits on the loop
and on a pool thread (``commit_on``): the answers must not depend on where COMMIT runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chatcap.policy.breaker import BreakerConfig, BreakerState, CircuitBreaker, Transition
from chatcap.policy.pool import PoolRules
from chatcap.scenario import FaultsConfig, StoreConfig
from server.clock import now_s
from server.faults import FaultInjector
from server.store import PendingSend, StoreConnection, StoredMessage
from server.storepool import StorePool
from server.writer import (
    Overloaded,
    StoreBusy,
    StoreFailed,
    Unavailable,
    WriteBurst,
    Writer,
    WriteRejected,
)
from tests.server.support_writepath import FakeClock, run, scaled, send, until

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class CountingConnection(StoreConnection):
    """A store connection that counts the commits reaching SQLite."""

    def __init__(self, path: Path, commits: list[int]) -> None:
        super().__init__(path)
        self._commits = commits

    def commit_batch(self, batch: Any, ts_us: int) -> list[StoredMessage]:
        self._commits[0] += 1
        return super().commit_batch(batch, ts_us)


@dataclass
class Rig:
    writer: Writer
    pool: StorePool
    faults: FaultInjector
    breaker: CircuitBreaker | None
    batches: list[int] = field(default_factory=list)  # sizes, from on_batch
    commits: list[int] = field(default_factory=lambda: [0])
    acquires: int = 0


COMMIT_ON = {"mode": "thread"}  # the rig's default, set per test by the fixture below


@pytest.fixture(params=["loop", "thread"], autouse=True)
def commit_on(request: pytest.FixtureRequest) -> Iterator[str]:
    COMMIT_ON["mode"] = request.param
    yield request.param
    COMMIT_ON["mode"] = "thread"


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path,
    *,
    batch_max: int = 64,
    write_queue_max: int = 10_000,
    pool: PoolRules | None = None,
    breaker: BreakerConfig | None = None,
    clock: Callable[[], float] | None = None,
    max_in_flight: int | None = None,
    start: bool = True,
    listeners: tuple[Callable[[Transition], None], ...] = (),
    burst: WriteBurst | None = None,
) -> AsyncIterator[Rig]:
    """A started pool + writer on a fresh database; stopped and closed afterwards."""
    commits = [0]
    store_pool = StorePool(
        pool or PoolRules(size=2),
        lambda: CountingConnection(tmp_path / "s.db", commits),
        clock=clock,
    )
    the_breaker = CircuitBreaker(breaker, listeners) if breaker is not None else None
    faults = FaultInjector(FaultsConfig(), started_at=0.0, seed=1)
    store_cfg = StoreConfig(batch_max=batch_max, write_queue_max=write_queue_max)
    r = Rig(None, store_pool, faults, the_breaker, commits=commits)  # type: ignore[arg-type]
    r.writer = Writer(
        store_cfg,
        the_breaker,
        store_pool,
        faults,
        clock=clock,
        on_batch=lambda size, _s: r.batches.append(size),
        max_in_flight_batches=max_in_flight,
        commit_on="loop" if COMMIT_ON["mode"] == "loop" else "thread",
        burst=burst,
    )
    real_acquire = store_pool.acquire

    async def counting_acquire(timeout_s: float | None = None) -> StoreConnection:
        r.acquires += 1
        return await real_acquire(timeout_s)

    store_pool.acquire = counting_acquire  # type: ignore[method-assign]
    await store_pool.start()
    if start:
        await r.writer.start()
    try:
        yield r
    finally:
        await r.writer.stop()
        await store_pool.close()


async def outcome(fut: asyncio.Future[StoredMessage]) -> StoredMessage | WriteRejected:
    """The stored row, or the rejection, of one send."""
    try:
        return await fut
    except WriteRejected as exc:
        return exc


def test_a_send_is_answered_with_its_row_after_commit(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            row = await r.writer.submit(send("a", "ann", "c1", "hello", sent_at_us=5))
            assert (row.room, row.seq, row.body, row.sent_at_us, row.duplicate) == (
                "a",
                1,
                "hello",
                5,
                False,
            )
            assert row.ts_us > 0
            await until(lambda: r.writer.in_flight == 0)  # the batch task ends after answering
            assert r.writer.queue_depth == 0

    run(main())


def test_concurrent_sends_share_commits_of_at_most_batch_max(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, batch_max=8, max_in_flight=1) as r:
            futures = [r.writer.submit(send("a", f"u{i}", "c")) for i in range(50)]
            rows = await asyncio.gather(*futures)
            assert [row.seq for row in rows] == list(range(1, 51))
            assert r.batches == [8, 8, 8, 8, 8, 8, 2]
            assert r.commits == [7]

    run(main())


def test_batches_in_flight_together_still_commit_in_queue_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, batch_max=2, pool=PoolRules(size=4), max_in_flight=4) as r:
            futures = [r.writer.submit(send("a", "ann", f"c{i}")) for i in range(40)]
            rows = await asyncio.gather(*futures)
            assert [row.seq for row in rows] == list(range(1, 41))
            assert max(r.batches) <= 2

    run(main())


def test_retries_in_one_batch_and_across_batches_get_the_first_seq(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            first, retry = (
                r.writer.submit(send("a", "ann", "x")),
                r.writer.submit(send("a", "ann", "x")),
            )
            later = await r.writer.submit(send("a", "ann", "x"))
            rows = [await first, await retry, later]
            assert [(row.seq, row.duplicate) for row in rows] == [(1, False), (1, True), (1, True)]

    run(main())


def test_a_full_queue_refuses_sends_at_once_with_overloaded(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, write_queue_max=3, start=False) as r:
            futures = [r.writer.submit(send("a", "ann", f"c{i}")) for i in range(3)]
            with pytest.raises(Overloaded) as caught:
                r.writer.submit(send("a", "ann", "c3"))
            assert caught.value.code == "overloaded"
            assert caught.value.retry_after_ms >= 1
            assert r.writer.queue_depth == 3
            await r.writer.start()
            assert [row.seq for row in await asyncio.gather(*futures)] == [1, 2, 3]

    run(main())


def test_overloaded_hints_how_long_the_queue_takes_to_drain(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(0.0)
        pool = PoolRules(size=1, acquire_timeout_s=0.0)  # wait forever
        async with rig(
            tmp_path, batch_max=2, write_queue_max=4, max_in_flight=1, pool=pool, clock=clock
        ) as r:
            await asyncio.gather(*(r.writer.submit(send("a", "u", f"w{i}")) for i in range(2)))
            clock.advance(1.0)
            await asyncio.gather(*(r.writer.submit(send("a", "u", f"x{i}")) for i in range(2)))
            # 4 sends drained in the last second: 4 queued sends take about 1 s
            held = await r.pool.acquire()
            stuck = r.writer.submit(send("a", "u", "stuck"))
            await until(lambda: r.writer.in_flight == 1)
            queued = [r.writer.submit(send("a", "u", f"q{i}")) for i in range(4)]
            with pytest.raises(Overloaded) as caught:
                r.writer.submit(send("a", "u", "one too many"))
            assert caught.value.retry_after_ms == 1000
            r.pool.release(held)
            await asyncio.gather(stuck, *queued)

    run(main())


def test_the_breaker_opens_on_injected_errors_fails_fast_then_recovers(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(100.0)
        trace: list[tuple[BreakerState, BreakerState, float, str]] = []
        config = BreakerConfig(
            window_size=2, minimum_calls=2, open_duration_s=10.0, half_open_calls=1
        )
        listeners = (lambda t: trace.append((t.from_state, t.to_state, t.at_s, t.reason)),)
        async with rig(tmp_path, breaker=config, clock=clock, listeners=listeners) as r:
            r.faults.set_runtime(store_error_rate=1.0)
            failed = [await outcome(r.writer.submit(send("a", "u", f"f{i}"))) for i in range(2)]
            assert [type(x) for x in failed] == [StoreFailed, StoreFailed]
            assert failed[0].code == "internal"
            acquires = r.acquires

            fast = await outcome(r.writer.submit(send("a", "u", "fast")))
            clock.advance(4.0)
            later = await outcome(r.writer.submit(send("a", "u", "later")))
            assert isinstance(fast, Unavailable) and isinstance(later, Unavailable)
            assert (fast.code, fast.retry_after_ms, later.retry_after_ms) == (
                "unavailable",
                10_000,
                6_000,
            )
            assert (r.acquires, r.commits) == (acquires, [0])  # the store was not touched

            r.faults.clear_runtime()
            clock.advance(6.0)
            trial = await r.writer.submit(send("a", "u", "trial"))
            after = await r.writer.submit(send("a", "u", "after"))
            assert (trial.seq, after.seq) == (1, 2)
            assert trace == [
                (CLOSED, OPEN, 100.0, "failure_threshold_exceeded"),
                (OPEN, HALF_OPEN, 110.0, "open_duration_elapsed"),
                (HALF_OPEN, CLOSED, 110.0, "half_open_calls_passed"),
            ]

    run(main())


def test_a_held_pool_answers_store_busy_and_the_breaker_does_not_count_it(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        config = BreakerConfig(window_size=1, minimum_calls=1)  # one error would open it
        pool = PoolRules(size=1, acquire_timeout_s=scaled(0.02))
        async with rig(tmp_path, pool=pool, breaker=config) as r:
            async with r.pool.connection():
                busy = await outcome(r.writer.submit(send("a", "u", "c")))
            assert isinstance(busy, StoreBusy)
            assert busy.code == "store_busy" and busy.waited_ms >= 1
            assert r.breaker is not None and r.breaker.state is CLOSED
            assert (await r.writer.submit(send("a", "u", "c"))).seq == 1

    run(main())


def test_a_real_store_error_fails_the_batch_and_replaces_the_connection(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, pool=PoolRules(size=1)) as r:
            broken = PendingSend("a", "u", "bad", None, 1)  # type: ignore[arg-type]
            failed = await outcome(r.writer.submit(broken))
            assert isinstance(failed, StoreFailed) and "NOT NULL" in failed.reason
            assert r.pool.stats().retired == 1
            assert (await r.writer.submit(send("a", "u", "good"))).seq == 1

    run(main())


def test_a_sender_that_went_away_does_not_break_its_batch(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, start=False) as r:
            futures = [r.writer.submit(send("a", "u", f"c{i}")) for i in range(3)]
            futures[1].cancel()  # that client disconnected
            await r.writer.start()
            first, third = await futures[0], await futures[2]
            assert (first.seq, third.seq) == (1, 3)  # the accepted send was still stored
            assert r.batches == [3]

    run(main())


def test_drain_commits_everything_queued_then_refuses_new_sends(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, batch_max=4, max_in_flight=1) as r:
            futures = [r.writer.submit(send("a", f"u{i}", "c")) for i in range(30)]
            assert await r.writer.drain(now_s() + scaled(5.0))
            assert all(f.done() and not f.exception() for f in futures)
            assert (r.writer.queue_depth, r.writer.in_flight) == (0, 0)
            with pytest.raises(Unavailable) as caught:
                r.writer.submit(send("a", "u", "late"))
            assert caught.value.retry_after_ms == 1000

    run(main())


def test_drain_past_its_deadline_fails_what_is_still_queued(tmp_path: Path) -> None:
    async def main() -> None:
        pool = PoolRules(size=1, acquire_timeout_s=0.0)  # wait forever
        async with rig(tmp_path, batch_max=2, max_in_flight=1, pool=pool) as r:
            held = await r.pool.acquire()
            futures = [r.writer.submit(send("a", "u", f"c{i}")) for i in range(5)]
            await until(lambda: r.writer.in_flight == 1)
            assert not await r.writer.drain(now_s() + scaled(0.02))
            left = [await outcome(f) for f in futures[2:]]
            assert all(isinstance(x, Unavailable) for x in left)
            r.pool.release(held)  # the batch already running still commits
            assert [(await f).seq for f in futures[:2]] == [1, 2]

    run(main())


def test_stop_fails_queued_sends_with_unavailable(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, start=False) as r:
            fut = r.writer.submit(send("a", "u", "c"))
            await r.writer.stop()
            assert isinstance(await outcome(fut), Unavailable)

    run(main())


def test_injected_latency_is_spent_holding_the_connection(tmp_path: Path) -> None:
    async def main() -> None:
        held: list[float] = []
        async with rig(tmp_path) as r:
            r.writer._on_batch = lambda _size, seconds: held.append(seconds)
            r.faults.set_runtime(store_latency_ms=scaled(20.0))
            await r.writer.submit(send("a", "u", "c"))
            assert held and held[0] >= scaled(0.015)

    run(main())


def test_two_writers_on_one_file_keep_rooms_gap_free(tmp_path: Path) -> None:
    """Two pools + writers sharing the file, as two server processes would."""

    async def main() -> None:
        async with rig(tmp_path, batch_max=4) as one, rig(tmp_path, batch_max=4) as two:
            futures = [
                (one if i % 2 else two).writer.submit(send("ab"[i % 3 % 2], f"u{i}", "c"))
                for i in range(200)
            ]
            rows = await asyncio.gather(*futures)
        for room in "ab":
            got = sorted(row.seq for row in rows if row.room == room)
            assert got == list(range(1, len(got) + 1))

    run(main())


class StuckConnection(StoreConnection):
    """A connection whose commit blocks until the test lets it go."""

    def __init__(self, path: Path, gate: Any) -> None:
        super().__init__(path)
        self._gate = gate

    def commit_batch(self, batch: Any, ts_us: int) -> list[StoredMessage]:
        self._gate.wait(scaled(10))
        return super().commit_batch(batch, ts_us)


def test_a_commit_over_its_deadline_is_answered_as_failed_and_counts_for_the_breaker(
    tmp_path: Path,
) -> None:
    import threading

    gate = threading.Event()

    async def main() -> None:
        pool = StorePool(PoolRules(size=1), lambda: StuckConnection(tmp_path / "s.db", gate))
        breaker = CircuitBreaker(BreakerConfig(window_size=2, minimum_calls=1))
        faults = FaultInjector(FaultsConfig(), started_at=0.0, seed=1)
        writer = Writer(StoreConfig(call_timeout_s=0.05), breaker, pool, faults)
        await pool.start()
        await writer.start()
        try:
            result = await outcome(writer.submit(send("a", "ann", "c1")))
            assert isinstance(result, StoreFailed)
            assert "deadline" in str(result)
            assert breaker.state is OPEN  # one failed call of one: 100 % ≥ 50 %
        finally:
            gate.set()  # let the stuck thread finish before the pool closes
            await writer.stop()
            await pool.close()

    run(main())


# -- where and when a batch commits ---------------------------------------------------


def test_a_lone_send_commits_in_the_next_loop_turn_with_no_timer(
    tmp_path: Path, commit_on: str
) -> None:
    """No batch window: the send is committed as soon as the frames of this turn are
    handled — on the loop (fast path) in the very next turn, with no task at all."""

    async def main() -> None:
        async with rig(tmp_path) as r:
            await asyncio.sleep(0)  # let the pool's warm-up settle
            fut = r.writer.submit(send("a", "ann", "lone"))
            assert not fut.done() and r.writer.queue_depth == 1  # not inside submit
            await asyncio.sleep(0)  # one loop turn: the pump has run
            if commit_on == "loop":
                assert fut.done() and fut.result().seq == 1
                assert r.writer.in_flight == 0 and r.commits == [1]
            else:
                assert r.writer.in_flight == 1  # a task, waiting for its thread
                assert (await fut).seq == 1
            assert r.batches == [1]

    run(main())


def test_sends_of_one_loop_turn_share_a_batch_and_later_ones_the_next(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with rig(tmp_path, batch_max=64, max_in_flight=1) as r:
            first = [r.writer.submit(send("a", f"u{i}", "c")) for i in range(10)]
            await asyncio.gather(*first)
            second = [r.writer.submit(send("a", f"v{i}", "c")) for i in range(3)]
            await asyncio.gather(*second)
            assert r.batches == [10, 3]

    run(main())


def test_a_failing_commit_answers_no_row_and_the_future_says_why(tmp_path: Path) -> None:
    """The promise, both modes: a future resolves with a row only after COMMIT returned;
    a commit that fails gives every send of its batch a StoreFailed instead."""

    async def main() -> None:
        async with rig(tmp_path, pool=PoolRules(size=1)) as r:
            r.faults.set_runtime(store_error_rate=1.0)
            futures = [r.writer.submit(send("a", "u", f"c{i}")) for i in range(3)]
            results = [await outcome(f) for f in futures]
            assert all(isinstance(x, StoreFailed) for x in results), results
            r.faults.clear_runtime()
            assert (await r.writer.submit(send("a", "u", "c0"))).seq == 1  # nothing stored

    run(main())


class GatedConnection(StoreConnection):
    """A connection whose commit waits for the test's gate (a threading.Event)."""

    def __init__(self, path: Path, gate: Any, entered: Any) -> None:
        super().__init__(path)
        self._gate, self._entered = gate, entered

    def commit_batch(self, batch: Any, ts_us: int) -> list[StoredMessage]:
        self._entered.set()
        self._gate.wait(scaled(10))
        return super().commit_batch(batch, ts_us)


def test_while_a_thread_commit_hangs_the_send_has_no_answer(tmp_path: Path) -> None:
    import threading

    gate, entered = threading.Event(), threading.Event()

    async def main() -> None:
        pool = StorePool(
            PoolRules(size=1), lambda: GatedConnection(tmp_path / "s.db", gate, entered)
        )
        faults = FaultInjector(FaultsConfig(), started_at=0.0, seed=1)
        writer = Writer(StoreConfig(), None, pool, faults, commit_on="thread")
        await pool.start()
        await writer.start()
        try:
            fut = writer.submit(send("a", "ann", "c1"))
            await until(entered.is_set)
            for _ in range(20):  # loop turns pass; COMMIT has not returned
                await asyncio.sleep(0)
            assert not fut.done()
            gate.set()
            assert (await fut).seq == 1
        finally:
            gate.set()
            await writer.stop()
            await pool.close()

    run(main())


class SlowOnTheClock(StoreConnection):
    """A loop commit that takes ``seconds`` on a FakeClock (the loop is blocked meanwhile)."""

    def __init__(self, path: Path, clock: FakeClock, seconds: float) -> None:
        super().__init__(path)
        self._clock, self._seconds = clock, seconds

    def commit_batch(self, batch: Any, ts_us: int) -> list[StoredMessage]:
        self._clock.advance(self._seconds)
        return super().commit_batch(batch, ts_us)


def test_a_loop_commit_that_took_longer_than_its_deadline_is_answered_as_failed(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = FakeClock(0.0)
        pool = StorePool(
            PoolRules(size=1), lambda: SlowOnTheClock(tmp_path / "s.db", clock, 1.0), clock=clock
        )
        breaker = CircuitBreaker(BreakerConfig(window_size=2, minimum_calls=1))
        faults = FaultInjector(FaultsConfig(), started_at=0.0, seed=1)
        writer = Writer(
            StoreConfig(call_timeout_s=0.05), breaker, pool, faults, clock=clock, commit_on="loop"
        )
        await pool.start()
        await writer.start()
        try:
            late = await outcome(writer.submit(send("a", "ann", "c1")))
            assert isinstance(late, StoreFailed) and "deadline" in str(late)
            assert breaker.state is OPEN  # counted as a failed call, as on a thread
        finally:
            await writer.stop()
            await pool.close()
        with StoreConnection(tmp_path / "s.db") as conn:  # committed all the same
            assert conn.last_seq("a") == 1

    run(main())


def test_the_fast_path_steps_aside_for_injected_latency_and_a_busy_pool(
    tmp_path: Path, commit_on: str
) -> None:
    async def main() -> None:
        async with rig(tmp_path, pool=PoolRules(size=1)) as r:
            r.faults.set_runtime(store_latency_ms=scaled(5.0))
            slow = r.writer.submit(send("a", "u", "slow"))
            await asyncio.sleep(0)
            assert r.writer.in_flight == 1  # a task: it sleeps holding the connection
            assert (await slow).seq == 1
            r.faults.clear_runtime()
            held = await r.pool.acquire()
            waiting = r.writer.submit(send("a", "u", "waits"))
            await asyncio.sleep(0)
            assert r.writer.in_flight == 1 and not waiting.done()  # waits for the pool
            r.pool.release(held)
            assert (await waiting).seq == 2

    run(main())


def test_a_batch_s_answers_run_between_the_burst_s_hold_and_release(tmp_path: Path) -> None:
    trace: list[str] = []

    class Burst:
        def hold(self) -> None:
            trace.append("hold")

        def release(self) -> None:
            trace.append("release")

    def answered(i: int, _fut: asyncio.Future[StoredMessage]) -> None:
        trace.append(f"answer {i}")

    async def main() -> None:
        async with rig(tmp_path, burst=Burst()) as r:
            futures = [r.writer.submit(send("a", f"u{i}", "c")) for i in range(3)]
            for i, fut in enumerate(futures):
                fut.add_done_callback(functools.partial(answered, i))
            await asyncio.gather(*futures)
            await asyncio.sleep(0)
        assert trace == ["hold", "answer 0", "answer 1", "answer 2", "release"]

    run(main())
