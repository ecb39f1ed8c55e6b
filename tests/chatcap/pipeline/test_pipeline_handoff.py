"""chatcap.pipeline.handoff: the pool's FIFO hand-off."""

from __future__ import annotations

from chatcap.pipeline.handoff import WaitLine


class Waiter:
    """A waiter compared by identity, as futures and batch records are."""


def test_newcomer_takes_a_free_connection_when_nobody_waits() -> None:
    line: WaitLine[Waiter] = WaitLine()
    assert not line.must_wait(free=1)
    assert line.must_wait(free=0)


def test_newcomer_never_overtakes_a_waiter_even_with_a_free_connection() -> None:
    line: WaitLine[Waiter] = WaitLine()
    line.join(Waiter())
    assert line.must_wait(free=3)


def test_returned_connection_goes_to_the_oldest_waiter() -> None:
    line: WaitLine[Waiter] = WaitLine()
    first, second = Waiter(), Waiter()
    line.join(first)
    line.join(second)
    assert line.hand_off() is first
    assert line.hand_off() is second
    assert line.hand_off() is None and not line


def test_a_waiter_that_left_is_skipped_and_leaving_twice_is_false() -> None:
    line: WaitLine[Waiter] = WaitLine()
    first, second = Waiter(), Waiter()
    line.join(first)
    line.join(second)
    assert line.leave(first) is True
    assert line.leave(first) is False
    assert len(line) == 1 and line.hand_off() is second
