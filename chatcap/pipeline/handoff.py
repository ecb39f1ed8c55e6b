"""The pool's wait line: who gets a connection that comes back.

HikariCP hands a returned connection *directly* to the oldest thread waiting for one
(its hand-off queue), so a borrower that arrives while others wait never overtakes them,
even when a connection happens to be idle at that instant. The rule, for any runtime:

* a borrower :meth:`WaitLine.must_wait` when no connection is free **or** someone is
  already waiting; otherwise it takes one at once;
* a waiter :meth:`joins <WaitLine.join>` the back of the line;
* a connection given back goes to :meth:`WaitLine.hand_off` — the oldest waiter — and
  only to the pool's free stock when nobody waits;
* a waiter whose acquire timeout passes (or who is cancelled) :meth:`leaves
  <WaitLine.leave>`; it answers ``store_busy`` with how long it waited
  (:func:`chatcap.pipeline.answers.waited_ms`). Leaving is not the store's fault: the
  breaker hears no outcome.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

__all__ = ["WaitLine"]

T = TypeVar("T")


class WaitLine(Generic[T]):
    """A FIFO of waiting borrowers: objects compared by identity (a future, a record
    without ``__eq__``) — :meth:`leave` finds a waiter with ``==``."""

    __slots__ = ("_line",)

    def __init__(self) -> None:
        self._line: deque[T] = deque()

    def __len__(self) -> int:
        return len(self._line)

    def __bool__(self) -> bool:
        return bool(self._line)

    def must_wait(self, free: int) -> bool:
        """Whether a newcomer must queue, given ``free`` idle or openable connections."""
        return not (free > 0 and not self._line)  # = free <= 0 or bool(line), no call

    def join(self, waiter: T) -> None:
        """``waiter`` waits at the back of the line."""
        self._line.append(waiter)

    def leave(self, waiter: T) -> bool:
        """``waiter`` gives up (timeout, cancellation); False if it was not waiting."""
        try:
            self._line.remove(waiter)
        except ValueError:
            return False
        return True

    def hand_off(self) -> T | None:
        """The oldest waiter, taken out of the line; None when nobody waits."""
        return self._line.popleft() if self._line else None
