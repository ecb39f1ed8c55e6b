"""The in-memory idempotency map: in-flight futures, settled messages, failures, LRU bound."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from server.dedup import Deduper
from server.store import StoredMessage
from tests.server.support_writepath import run

MSG = StoredMessage("room", 7, "ann", "c1", "hi", ts_us=10, sent_at_us=5)


def test_an_unknown_key_is_a_miss() -> None:
    dedup = Deduper()
    assert dedup.lookup("ann", "c1") is None
    assert dedup.hits == 0


def test_a_retry_in_flight_gets_the_first_attempts_future_then_its_message() -> None:
    async def main() -> None:
        dedup = Deduper()
        fut: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        dedup.remember("ann", "c1", fut)
        assert dedup.lookup("ann", "c1") is fut
        assert dedup.lookup("bob", "c1") is None  # keys are per user
        fut.set_result(MSG)
        slim = replace(MSG, body="")  # what an Ack needs; the body is not kept
        assert dedup.lookup("ann", "c1") == slim  # settled at once, even before callbacks run
        await asyncio.sleep(0)
        assert dedup.lookup("ann", "c1") == slim
        assert dedup.hits == 3

    run(main())


@pytest.mark.parametrize("outcome", ["error", "cancel"])
def test_a_failed_first_attempt_is_forgotten_so_the_retry_is_tried_again(outcome: str) -> None:
    async def main() -> None:
        dedup = Deduper()
        fut: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        dedup.remember("ann", "c1", fut)
        if outcome == "error":
            fut.set_exception(RuntimeError("store down"))
        else:
            fut.cancel()
        await asyncio.sleep(0)  # the done callback
        assert dedup.lookup("ann", "c1") is None
        assert len(dedup) == 0
        if outcome == "error":
            assert isinstance(fut.exception(), RuntimeError)

    run(main())


def test_a_failure_seen_before_its_callback_ran_is_a_miss_too() -> None:
    async def main() -> None:
        dedup = Deduper()
        fut: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        dedup.remember("ann", "c1", fut)
        fut.set_exception(RuntimeError("store down"))
        assert dedup.lookup("ann", "c1") is None
        await asyncio.sleep(0)  # the callback then finds nothing to do
        assert len(dedup) == 0 and dedup.hits == 0

    run(main())


def test_a_newer_attempt_is_not_dropped_by_the_older_ones_failure() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        dedup = Deduper()
        old: asyncio.Future[StoredMessage] = loop.create_future()
        new: asyncio.Future[StoredMessage] = loop.create_future()
        dedup.remember("ann", "c1", old)
        dedup.remember("ann", "c1", new)
        old.cancel()
        await asyncio.sleep(0)
        assert dedup.lookup("ann", "c1") is new
        new.cancel()

    run(main())


def test_the_map_keeps_the_most_recently_used_keys() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        dedup = Deduper(max_entries=2)
        futs = {cid: loop.create_future() for cid in ("a", "b", "c")}
        for fut in futs.values():
            fut.set_result(MSG)
        dedup.remember("ann", "a", futs["a"])
        dedup.remember("ann", "b", futs["b"])
        dedup.lookup("ann", "a")  # a is now more recent than b
        dedup.remember("ann", "c", futs["c"])
        await asyncio.sleep(0)
        assert [dedup.lookup("ann", cid) is not None for cid in "abc"] == [True, False, True]
        assert len(dedup) == 2

    run(main())


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        Deduper(max_entries=0)
