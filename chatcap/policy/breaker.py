"""Circuit breaker with Resilience4j's semantics, its state machine written as data.

Theory of operation
-------------------
Three states, one transition table (``TRANSITIONS``); any (state, event) pair missing
from it raises ``IllegalTransition``. Times are the caller's ``now`` in seconds.

CLOSED
    Every call is permitted. Each recorded outcome goes into a sliding window: the last
    ``window_size`` calls (count window) or the calls of the last ``window_size`` seconds
    (time window, per-second buckets keyed by ``floor(now)``). Once the window holds at
    least ``minimum_calls`` outcomes (for a count window, ``min(minimum_calls,
    window_size)``), every record is followed by an evaluation:

    * ``failure_threshold_exceeded`` fires (-> OPEN) when the failure rate
      ``100 * errors / calls >= failure_rate_pct``;
    * otherwise ``slow_call_threshold_exceeded`` fires (-> OPEN) when the slow call rate
      ``100 * slow / calls >= slow_call_rate_pct``. A call is slow when its duration is
      strictly greater than ``slow_call_duration_s``; successes and errors can both be
      slow.

OPEN
    Calls are refused with ``retry_after_s`` = the rest of ``open_duration_s``. There is
    no timer: the first ``try_acquire`` at or after ``opened_at + open_duration_s`` fires
    ``open_duration_elapsed`` (-> HALF_OPEN, at that ``now``) and is answered as
    half-open — Resilience4j without automatic transition. Outcomes recorded while open
    (calls admitted earlier) are ignored; the rates that opened the breaker stay readable.

HALF_OPEN
    At most ``half_open_calls`` permits are handed out in the episode
    (``release_permission`` returns an unused one). Refused calls get ``retry_after_s =
    open_duration_s``: if the trial fails the breaker is open for that long, and a
    caller that waits that long never adds load during recovery. Outcomes go into a
    fresh count window of ``half_open_calls``; when it is full it is evaluated alone:
    above either threshold fires ``half_open_calls_failed`` (-> OPEN), else
    ``half_open_calls_passed`` (-> CLOSED). If ``max_half_open_wait_s > 0`` and the
    episode lasts that long without a verdict, ``max_half_open_wait_elapsed`` fires
    (-> OPEN); it is noticed on the next call or record but dated at the due time
    (``half_opened_at + max_half_open_wait_s``), as Resilience4j's timer would.

Manual controls (any state unless noted), as Resilience4j's: ``transition_to_closed``,
``transition_to_open`` (restarts the open period), ``transition_to_half_open`` (from OPEN
or HALF_OPEN only; from CLOSED it is illegal, as in Resilience4j) and ``reset`` (->
CLOSED). Entering CLOSED or HALF_OPEN starts a fresh window. Every transition, even
CLOSED -> CLOSED by ``reset``, is passed to each listener as a ``Transition``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chatcap.policy._checks import check_positive, check_whole
from chatcap.policy.decision import ALLOW, Decision, seconds_until

__all__ = [
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "IllegalTransition",
    "Transition",
    "next_state",
]


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN

TRANSITIONS: dict[tuple[BreakerState, str], BreakerState] = {
    (_CLOSED, "failure_threshold_exceeded"): _OPEN,
    (_CLOSED, "slow_call_threshold_exceeded"): _OPEN,
    (_OPEN, "open_duration_elapsed"): _HALF_OPEN,
    (_HALF_OPEN, "half_open_calls_passed"): _CLOSED,
    (_HALF_OPEN, "half_open_calls_failed"): _OPEN,
    (_HALF_OPEN, "max_half_open_wait_elapsed"): _OPEN,
    **{(state, "transition_to_closed"): _CLOSED for state in BreakerState},
    **{(state, "transition_to_open"): _OPEN for state in BreakerState},
    (_OPEN, "transition_to_half_open"): _HALF_OPEN,
    (_HALF_OPEN, "transition_to_half_open"): _HALF_OPEN,
    **{(state, "reset"): _CLOSED for state in BreakerState},
}
"""(state, event) -> new state. The module docstring says when each event fires."""


class IllegalTransition(RuntimeError):
    """An event that the transition table does not allow in the current state."""


def next_state(state: BreakerState, event: str) -> BreakerState:
    """Look up the transition table; raise ``IllegalTransition`` for a missing pair."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        legal = sorted(ev for (st, ev) in TRANSITIONS if st is state)
        raise IllegalTransition(
            f"event {event!r} is not allowed in state {state.name}; "
            f"allowed there: {', '.join(legal)}"
        ) from None


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, as passed to listeners (the metrics hook)."""

    from_state: BreakerState
    to_state: BreakerState
    at_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Breaker settings; the defaults are Resilience4j's ``CircuitBreakerConfig`` defaults.

    ``window_size`` counts calls for ``window_type="count"`` and seconds for ``"time"``.
    ``max_half_open_wait_s = 0`` means wait in HALF_OPEN until the trial calls finish.
    """

    window_type: str = "count"
    window_size: int = 100
    minimum_calls: int = 100
    failure_rate_pct: float = 50.0
    slow_call_duration_s: float = 60.0
    slow_call_rate_pct: float = 100.0
    open_duration_s: float = 60.0
    half_open_calls: int = 10
    max_half_open_wait_s: float = 0.0

    def __post_init__(self) -> None:
        if self.window_type not in ("count", "time"):
            raise ValueError(f"window_type must be 'count' or 'time', got {self.window_type!r}")
        for name in ("window_size", "minimum_calls", "half_open_calls"):
            check_whole(name, getattr(self, name), 1)
            object.__setattr__(self, name, int(getattr(self, name)))  # 10.0 from TOML -> 10
        _check_pct("failure_rate_pct", self.failure_rate_pct)
        _check_pct("slow_call_rate_pct", self.slow_call_rate_pct)
        check_positive("slow_call_duration_s", self.slow_call_duration_s)
        check_positive("open_duration_s", self.open_duration_s)
        if not (math.isfinite(self.max_half_open_wait_s) and self.max_half_open_wait_s >= 0):
            raise ValueError(
                "max_half_open_wait_s must be a finite number >= 0 (0 = wait forever), "
                f"got {self.max_half_open_wait_s!r}"
            )


def _check_pct(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0 < value <= 100):
        raise ValueError(f"{name} must be in (0, 100], got {value!r}")


# Outcome codes: bit 0 = error, bit 1 = slow.
_SUCCESS, _ERROR, _SLOW_SUCCESS, _SLOW_ERROR = 0, 1, 2, 3


class _CountWindow:
    """The last ``size`` outcomes, as a ring of codes with running totals."""

    __slots__ = ("_next", "_ring", "calls", "errors", "slow_calls")

    def __init__(self, size: int) -> None:
        self._ring = [-1] * size  # -1: never written
        self._next = 0
        self.calls = self.errors = self.slow_calls = 0

    def record(self, now: float, code: int) -> None:
        ring, index = self._ring, self._next
        old = ring[index]
        if old < 0:
            self.calls += 1
        else:
            self.errors -= old & 1
            self.slow_calls -= old >> 1
        ring[index] = code
        self.errors += code & 1
        self.slow_calls += code >> 1
        self._next = index + 1 if index + 1 < len(ring) else 0

    def age(self, now: float) -> None:
        """Count windows do not age."""


class _TimeWindow:
    """Outcomes of the last ``size_s`` whole seconds, one bucket per second in a ring."""

    __slots__ = ("_calls", "_errors", "_head_s", "_slow", "calls", "errors", "slow_calls")

    def __init__(self, size_s: int) -> None:
        self._calls = [0] * size_s
        self._errors = [0] * size_s
        self._slow = [0] * size_s
        self._head_s = -(2**62)  # the newest second seen; far past means all buckets empty
        self.calls = self.errors = self.slow_calls = 0

    def record(self, now: float, code: int) -> None:
        second = math.floor(now)
        if second > self._head_s:
            self._advance(second)
        index = self._head_s % len(self._calls)  # a late (earlier) time lands in the newest
        self._calls[index] += 1
        self.calls += 1
        if code & 1:
            self._errors[index] += 1
            self.errors += 1
        if code & 2:
            self._slow[index] += 1
            self.slow_calls += 1

    def age(self, now: float) -> None:
        """Drop the seconds that fell out of the window by ``now``."""
        second = math.floor(now)
        if second > self._head_s:
            self._advance(second)

    def _advance(self, second: int) -> None:
        size = len(self._calls)
        first = max(self._head_s + 1, second - size + 1)
        for stale in range(first, second + 1):
            index = stale % size
            self.calls -= self._calls[index]
            self.errors -= self._errors[index]
            self.slow_calls -= self._slow[index]
            self._calls[index] = self._errors[index] = self._slow[index] = 0
        self._head_s = second


_Window = _CountWindow | _TimeWindow
Listener = Callable[[Transition], None]


class CircuitBreaker:
    """A circuit breaker driven by the caller's clock; see the module docstring."""

    __slots__ = (
        "_half_opened_at_s",
        "_listeners",
        "_min_calls",
        "_not_permitted",
        "_open_until_s",
        "_permits",
        "_slow_call_s",
        "_state",
        "_window",
        "config",
    )

    def __init__(self, config: BreakerConfig | None = None, listeners: Iterable[Listener] = ()):
        self.config = config if config is not None else BreakerConfig()
        self._listeners = tuple(listeners)
        self._slow_call_s = self.config.slow_call_duration_s
        self._state = _CLOSED
        self._window: _Window = self._closed_window()
        self._min_calls = self._closed_min_calls()
        self._open_until_s = -math.inf
        self._half_opened_at_s = -math.inf
        self._permits = 0
        self._not_permitted = 0

    # -- asking and telling ---------------------------------------------------------

    def try_acquire(self, now: float) -> Decision:
        """Permit a call now, or refuse it with ``retry_after_s``."""
        state = self._state
        if state is _CLOSED:
            return ALLOW
        if state is _OPEN:
            if now < self._open_until_s:
                self._not_permitted += 1
                return Decision(False, retry_after_s=seconds_until(now, self._open_until_s))
            self._fire("open_duration_elapsed", now)
        return self._acquire_half_open(now)

    def on_success(self, now: float, duration_s: float) -> None:
        """Record a permitted call that succeeded after ``duration_s``."""
        self._record(now, _SLOW_SUCCESS if duration_s > self._slow_call_s else _SUCCESS)

    def on_error(self, now: float, duration_s: float) -> None:
        """Record a permitted call that failed after ``duration_s``."""
        self._record(now, _SLOW_ERROR if duration_s > self._slow_call_s else _ERROR)

    def release_permission(self) -> None:
        """Give back a half-open permit that was not used (the call never started)."""
        if self._state is _HALF_OPEN and self._permits < self.config.half_open_calls:
            self._permits += 1

    # -- reading ----------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN turns HALF_OPEN only on the next ``try_acquire``)."""
        return self._state

    @property
    def not_permitted_calls(self) -> int:
        """Calls refused since the breaker was built."""
        return self._not_permitted

    def failure_rate_pct(self, now: float) -> float:
        """Errors per 100 calls in the current window; -1.0 below the minimum calls."""
        return self._rate_pct(now, errors=True)

    def slow_call_rate_pct(self, now: float) -> float:
        """Slow calls per 100 calls in the current window; -1.0 below the minimum calls."""
        return self._rate_pct(now, errors=False)

    # -- manual controls --------------------------------------------------------------

    def transition_to_closed(self, now: float) -> None:
        """Force CLOSED with a fresh window."""
        self._fire("transition_to_closed", now)

    def transition_to_open(self, now: float) -> None:
        """Force OPEN for ``open_duration_s`` from ``now``."""
        self._fire("transition_to_open", now)

    def transition_to_half_open(self, now: float) -> None:
        """Start a half-open episode now (illegal from CLOSED)."""
        self._fire("transition_to_half_open", now)

    def reset(self, now: float) -> None:
        """Back to CLOSED with a fresh window, whatever the state."""
        self._fire("reset", now)

    # -- internals --------------------------------------------------------------------

    def _acquire_half_open(self, now: float) -> Decision:
        if self._half_open_expired(now):
            return self.try_acquire(now)
        if self._permits > 0:
            self._permits -= 1
            return ALLOW
        self._not_permitted += 1
        return Decision(False, retry_after_s=self.config.open_duration_s)

    def _half_open_expired(self, now: float) -> bool:
        """Fire ``max_half_open_wait_elapsed`` if the episode outlived its limit."""
        max_wait_s = self.config.max_half_open_wait_s
        if max_wait_s > 0.0 and now >= self._half_opened_at_s + max_wait_s:
            self._fire("max_half_open_wait_elapsed", self._half_opened_at_s + max_wait_s)
            return True
        return False

    def _record(self, now: float, code: int) -> None:
        state = self._state
        if state is _OPEN or (state is _HALF_OPEN and self._half_open_expired(now)):
            return
        window = self._window
        window.record(now, code)
        if window.calls < self._min_calls:
            return
        event = self._verdict(window)
        if state is _HALF_OPEN:
            self._fire(event or "half_open_calls_passed", now)
        elif event is not None:
            self._fire(event, now)

    def _verdict(self, window: _Window) -> str | None:
        """The event the window's rates call for, or None when below both thresholds."""
        calls = window.calls
        config = self.config
        opening = self._state is _CLOSED
        if window.errors * 100.0 / calls >= config.failure_rate_pct:
            return "failure_threshold_exceeded" if opening else "half_open_calls_failed"
        if window.slow_calls * 100.0 / calls >= config.slow_call_rate_pct:
            return "slow_call_threshold_exceeded" if opening else "half_open_calls_failed"
        return None

    def _rate_pct(self, now: float, *, errors: bool) -> float:
        window = self._window
        window.age(now)
        if window.calls == 0 or window.calls < self._min_calls:
            return -1.0
        return (window.errors if errors else window.slow_calls) * 100.0 / window.calls

    def _fire(self, event: str, at_s: float) -> None:
        old = self._state
        new = next_state(old, event)
        self._state = new
        if new is _OPEN:
            self._open_until_s = at_s + self.config.open_duration_s
        elif new is _HALF_OPEN:
            self._half_opened_at_s = at_s
            self._permits = self.config.half_open_calls
            self._window = _CountWindow(self.config.half_open_calls)
            self._min_calls = self.config.half_open_calls
        else:
            self._window = self._closed_window()
            self._min_calls = self._closed_min_calls()
        if self._listeners:
            transition = Transition(old, new, at_s, event)
            for listener in self._listeners:
                listener(transition)

    def _closed_window(self) -> _Window:
        if self.config.window_type == "count":
            return _CountWindow(self.config.window_size)
        return _TimeWindow(self.config.window_size)

    def _closed_min_calls(self) -> int:
        config = self.config
        if config.window_type == "count":
            return min(config.minimum_calls, config.window_size)
        return config.minimum_calls
