"""The model's clock: a SimPy ``Environment`` that calls plain functions at absolute times.

SimPy's own way to change how time advances is an ``Environment`` subclass —
``simpy.rt.RealtimeEnvironment`` overrides ``step()`` alone. :class:`ModelEnvironment`
does the same for speed: it keeps SimPy's event queue, ``run()``, ``peek()`` and every
SimPy event, and adds one kind of entry, a :class:`Call`, that ``step()`` processes
itself: ``fn(now, payload)``, no callback list, no generator, no ``Timeout``.

* :meth:`ModelEnvironment.call_at` schedules ``fn(now, payload)`` at an *absolute*
  time, kept exactly (``schedule()`` takes a delay, and ``now + (at - now)`` can differ
  from ``at`` in the last bit, so policies would see other times than the model
  computed);
* calls at the same time run in the order they were scheduled, among SimPy's own
  ``NORMAL`` events (SimPy's ``run(until=…)`` stop event is ``URGENT``: it still comes
  first);
* :attr:`ModelEnvironment.scheduled` counts every event scheduled so far (the model's
  own cost).

This module is the only one in ``sim/`` that touches SimPy's private attributes
(``_queue``, ``_now``, ``_eid``); they are SimPy 4's, read in ``simpy/core.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.events import NORMAL, Event

__all__ = ["Call", "ModelEnvironment"]


class Call(Event):
    """A queue entry that :meth:`ModelEnvironment.step` runs as ``fn(now, payload)``.

    It is born triggered (``ok``, value ``None``) and never goes through SimPy's callback
    machinery; make one with :meth:`ModelEnvironment.call_at`, not directly. (No
    ``__slots__`` of its own: ``Event`` has a ``__dict__``, and slots beside it make a
    Call slower to build.)"""

    __slots__ = ()
    fn: Callable[[float, Any], None]
    payload: Any
    _ok = True
    _value = None

    def __init__(self, fn: Callable[[float, Any], None], payload: Any) -> None:
        # Event.__init__ is skipped on purpose: a Call has no callback list.
        self.fn = fn
        self.payload = payload


class ModelEnvironment(simpy.Environment):
    """``simpy.Environment`` plus absolute-time function calls (see the module docstring).

    ``now_s`` is ``now`` as a plain attribute, for the model's hot paths."""

    def __init__(self, initial_time: float = 0.0) -> None:
        super().__init__(initial_time)
        self.now_s = float(initial_time)

    def call_at(self, at: float, fn: Callable[[float, Any], None], payload: Any = None) -> None:
        """Run ``fn(at, payload)`` when the clock reaches ``at`` (not before now)."""
        heappush(self._queue, (at, NORMAL, next(self._eid), Call(fn, payload)))

    def step(self) -> None:
        """Process the next event: a :class:`Call` here, anything else as SimPy does."""
        queue = self._queue
        if queue:
            entry = queue[0]
            call = entry[3]
            if call.__class__ is Call:
                heappop(queue)
                self._now = self.now_s = at = entry[0]
                call.fn(at, call.payload)
                return
        super().step()
        self.now_s = self._now

    @property
    def scheduled(self) -> int:
        """Events scheduled so far, SimPy's and :meth:`call_at`'s (reading uses one id)."""
        return next(self._eid)
