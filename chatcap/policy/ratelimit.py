"""Rate limiters, chosen by name, and a per-key wrapper with bounded memory.

Every limiter answers ``try_acquire(now, cost) -> Decision``. A refusal carries
``retry_after_s``: the wait after which the *same* request would pass if nothing else
happened, computed exactly (in floating point, ``now + retry_after_s`` passes) — the
server turns it into ``Error{rate_limited, retry_after_ms}``.

Registry ``LIMITERS`` (the scenario's ``algorithm`` key):

=========================  ============================================================
``token_bucket``           capacity ``burst``, refilled at ``rate_per_s``, starts full
``leaky_bucket``           a shaper: requests depart ``1/rate_per_s`` apart; admitted
                           requests are told to wait (``delay_s``) while at most
                           ``burst`` requests are held back; beyond that, refused
``fixed_window``           ``limit`` per aligned window ``[k*window_s, (k+1)*window_s)``
``sliding_window_log``     exact: at most ``limit`` admissions in any ``window_s``
``sliding_window_counter`` Cloudflare's estimate: previous window weighted by overlap
``none``                   always allows
=========================  ============================================================

For the window algorithms ``limit = max(1, round(rate_per_s * window_s))`` (Python's
round, half to even). Each limiter takes the same keyword arguments
``(rate_per_s, burst, window_s)`` and ignores those that do not apply.

Time going backwards (a clock step, or callers racing with stale ``now``) is clamped to
the latest time seen, so it never grants extra permits.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from chatcap.policy._checks import check_positive, check_whole
from chatcap.policy.decision import ALLOW, Decision, seconds_until

__all__ = [
    "LIMITERS",
    "FixedWindow",
    "KeyedLimiter",
    "LeakyBucket",
    "Limiter",
    "LimiterFactory",
    "SlidingWindowCounter",
    "SlidingWindowLog",
    "TokenBucket",
    "Unlimited",
    "make_limiter",
]

NEVER = Decision(False, retry_after_s=math.inf)
"""Refusal of a request that can never pass (its cost exceeds the limiter's capacity)."""


class Limiter(Protocol):
    """Anything that admits or refuses one request at a time."""

    def try_acquire(self, now: float, cost: float = 1.0) -> Decision: ...


class LimiterFactory(Protocol):
    """A limiter class as the registry holds it: built from the three common knobs."""

    def __call__(self, *, rate_per_s: float, burst: int, window_s: float) -> Limiter: ...


def _refuse(now: float, passes_at_s: float) -> Decision:
    return Decision(False, retry_after_s=seconds_until(now, passes_at_s))


def _bad_cost(cost: float) -> ValueError:
    return ValueError(f"cost must be > 0, got {cost!r}")


def _window_limit(rate_per_s: float, window_s: float) -> int:
    return max(1, round(rate_per_s * window_s))


def _first_time_passing(start_s: float, passes: Callable[[float], bool]) -> float:
    """Smallest float time at or after ``start_s`` (to within rounding) where ``passes``.

    ``start_s`` is the analytic answer; float rounding may leave it a few ulps short, so
    step forward with a doubling step until the limiter's own check agrees.
    """
    time_s = start_s
    step_s = math.ulp(time_s)
    while not passes(time_s):
        time_s += step_s
        step_s *= 2.0
    return time_s


class TokenBucket:
    """Token bucket: ``burst`` tokens, refilled at ``rate_per_s``, starting full.

    Kept as one number, the time the bucket will be full again (the GCRA form), so a
    decision is a comparison and an addition. It has room for ``cost`` at time ``t`` when
    ``full_at - t <= (burst - cost) / rate``; that bound is also the exact retry time.
    A cost larger than ``burst`` can never pass: refused with ``retry_after_s = inf``.
    """

    __slots__ = ("_burst", "_full_at_s", "_interval_s", "_now_s")

    def __init__(self, *, rate_per_s: float, burst: int, window_s: float = 1.0) -> None:
        check_positive("rate_per_s", rate_per_s)
        check_whole("burst", burst, 1)
        self._burst = float(burst)
        self._interval_s = 1.0 / rate_per_s
        self._full_at_s = -math.inf
        self._now_s = -math.inf

    def try_acquire(self, now: float, cost: float = 1.0) -> Decision:
        clock_s = now if now > self._now_s else self._now_s
        self._now_s = clock_s
        passes_at_s = self._full_at_s - (self._burst - cost) * self._interval_s
        if clock_s >= passes_at_s and 0.0 < cost <= self._burst:
            full_at_s = self._full_at_s if self._full_at_s > clock_s else clock_s
            self._full_at_s = full_at_s + cost * self._interval_s
            return ALLOW
        if cost <= 0.0:
            raise _bad_cost(cost)
        if cost > self._burst:
            return NEVER
        return _refuse(now, passes_at_s)


class LeakyBucket:
    """Leaky bucket as a queue (a shaper), like nginx ``limit_req`` with ``burst``.

    Requests leave the bucket ``cost / rate_per_s`` apart. An admitted request gets
    ``delay_s``: how long the caller holds it before it departs. The backlog ahead of a
    request is ``delay_s * rate_per_s`` requests; it is admitted while that backlog is at
    most ``burst`` (so ``burst + 1`` requests pass at one instant: one departs now, ``burst``
    wait), otherwise refused with the time the backlog has drained enough.
    """

    __slots__ = ("_backlog_s", "_free_at_s", "_interval_s", "_now_s")

    def __init__(self, *, rate_per_s: float, burst: int, window_s: float = 1.0) -> None:
        check_positive("rate_per_s", rate_per_s)
        check_whole("burst", burst, 1)
        self._interval_s = 1.0 / rate_per_s
        self._backlog_s = burst * self._interval_s
        self._free_at_s = -math.inf
        self._now_s = -math.inf

    def try_acquire(self, now: float, cost: float = 1.0) -> Decision:
        clock_s = now if now > self._now_s else self._now_s
        self._now_s = clock_s
        passes_at_s = self._free_at_s - self._backlog_s
        if clock_s >= passes_at_s and cost > 0.0:
            depart_s = self._free_at_s if self._free_at_s > clock_s else clock_s
            self._free_at_s = depart_s + cost * self._interval_s
            if depart_s <= now:
                return ALLOW
            return Decision(True, delay_s=depart_s - now)
        if cost <= 0.0:
            raise _bad_cost(cost)
        return _refuse(now, passes_at_s)


class FixedWindow:
    """At most ``limit`` (= max(1, round(rate_per_s * window_s))) per aligned window.

    Windows are ``[k*window_s, (k+1)*window_s)``; a refusal waits for the next one. Up to
    ``2 * limit`` can pass around a window edge — that is the algorithm, not a bug.
    """

    __slots__ = ("_count", "_limit", "_window_id", "_window_s")

    def __init__(self, *, rate_per_s: float, window_s: float, burst: int = 1) -> None:
        check_positive("rate_per_s", rate_per_s)
        check_positive("window_s", window_s)
        self._window_s = window_s
        self._limit = float(_window_limit(rate_per_s, window_s))
        self._window_id = -math.inf
        self._count = 0.0

    @property
    def limit(self) -> int:
        """Admissions allowed per window."""
        return int(self._limit)

    def try_acquire(self, now: float, cost: float = 1.0) -> Decision:
        window_id = now // self._window_s
        if window_id > self._window_id:
            self._window_id = window_id
            self._count = 0.0
        if cost > 0.0 and self._count + cost <= self._limit:
            self._count += cost
            return ALLOW
        if cost <= 0.0:
            raise _bad_cost(cost)
        if cost > self._limit:
            return NEVER
        current_id, window_s = self._window_id, self._window_s
        next_start_s = _first_time_passing(
            (current_id + 1.0) * window_s, lambda t: t // window_s > current_id
        )
        return _refuse(now, next_start_s)


class SlidingWindowLog:
    """Exact sliding window: at most ``limit`` admissions in any span of ``window_s``.

    Keeps the admitted timestamps (one per unit of cost, a fractional cost rounds up) in
    a deque bounded at ``limit`` entries; an entry stops counting at ``t + window_s``.
    Exactness costs memory: up to ``limit`` floats per key, against two numbers for the
    counter variants.
    """

    __slots__ = ("_limit", "_log", "_now_s", "_window_s")

    def __init__(self, *, rate_per_s: float, window_s: float, burst: int = 1) -> None:
        check_positive("rate_per_s", rate_per_s)
        check_positive("window_s", window_s)
        self._window_s = window_s
        self._limit = _window_limit(rate_per_s, window_s)
        self._log: deque[float] = deque(maxlen=self._limit)
        self._now_s = -math.inf

    @property
    def limit(self) -> int:
        """Admissions allowed in any window."""
        return self._limit

    def try_acquire(self, now: float, cost: float = 1.0) -> Decision:
        clock_s = now if now > self._now_s else self._now_s
        self._now_s = clock_s
        log, window_s = self._log, self._window_s
        while log and log[0] + window_s <= clock_s:
            log.popleft()
        units = 1 if cost == 1.0 else math.ceil(cost)
        if cost > 0.0 and len(log) + units <= self._limit:
            if units == 1:
                log.append(clock_s)
            else:
                log.extend([clock_s] * units)
            return ALLOW
        if cost <= 0.0:
            raise _bad_cost(cost)
        if units > self._limit:
            return NEVER
        # The oldest entries must expire until this request fits.
        blocking_s = log[len(log) + units - self._limit - 1]
        return _refuse(now, blocking_s + window_s)


class SlidingWindowCounter:
    """Cloudflare's sliding window counter: an estimate from two fixed windows.

    ``estimate = previous_count * overlap + current_count`` where ``overlap`` is the share
    of the previous aligned window still inside the sliding window ending now. Admits
    while ``estimate + cost <= limit``. Two counters per key, whatever the rate.
    """

    __slots__ = ("_count", "_limit", "_now_s", "_previous", "_window_id", "_window_s")

    def __init__(self, *, rate_per_s: float, window_s: float, burst: int = 1) -> None:
        check_positive("rate_per_s", rate_per_s)
        check_positive("window_s", window_s)
        self._window_s = window_s
        self._limit = float(_window_limit(rate_per_s, window_s))
        self._window_id = -math.inf
        self._previous = 0.0
        self._count = 0.0
        self._now_s = -math.inf

    @property
    def limit(self) -> int:
        """Admissions allowed per window (by the estimate)."""
        return int(self._limit)

    def try_acquire(self, now: float, cost: float = 1.0) -> Decision:
        clock_s = now if now > self._now_s else self._now_s
        self._now_s = clock_s
        window_id = clock_s // self._window_s
        if window_id != self._window_id:
            self._previous = self._count if window_id == self._window_id + 1.0 else 0.0
            self._count = 0.0
            self._window_id = window_id
        estimate = _estimate(self._previous, self._count, window_id, clock_s, self._window_s)
        if cost > 0.0 and estimate + cost <= self._limit:
            self._count += cost
            return ALLOW
        if cost <= 0.0:
            raise _bad_cost(cost)
        if cost > self._limit:
            return NEVER
        return _refuse(now, _first_time_passing(self._analytic_pass_s(cost), self._fits_at(cost)))

    def _fits_at(self, cost: float) -> Callable[[float], bool]:
        """The admission check at a later time ``t``, without changing any state."""
        current_id, window_s = self._window_id, self._window_s

        def fits(time_s: float) -> bool:
            window_id = time_s // window_s
            if window_id == current_id:
                previous, count = self._previous, self._count
            elif window_id == current_id + 1.0:
                previous, count = self._count, 0.0
            else:
                previous, count = 0.0, 0.0
            return _estimate(previous, count, window_id, time_s, window_s) + cost <= self._limit

        return fits

    def _analytic_pass_s(self, cost: float) -> float:
        """Solve ``estimate(t) + cost = limit`` for t, as real numbers."""
        room = self._limit - cost
        window_s = self._window_s
        next_start_s = (self._window_id + 1.0) * window_s
        if self._count <= room:
            if self._previous == 0.0:
                return next_start_s  # cannot happen in exact arithmetic: it would fit now
            # Still in this window: the previous window's weight must shrink enough.
            return next_start_s - window_s * (room - self._count) / self._previous
        # Only after the roll, when this window's count is the one being weighted.
        return next_start_s + window_s * (1.0 - room / self._count)


def _estimate(
    previous: float, count: float, window_id: float, time_s: float, window_s: float
) -> float:
    overlap = ((window_id + 1.0) * window_s - time_s) / window_s
    return previous * overlap + count


class Unlimited:
    """Always allows (the ``none`` algorithm); takes and ignores the common knobs."""

    __slots__ = ()

    def __init__(self, *, rate_per_s: float = 0.0, burst: int = 0, window_s: float = 0.0) -> None:
        pass

    def try_acquire(self, now: float, cost: float = 1.0) -> Decision:
        return ALLOW


LIMITERS: dict[str, LimiterFactory] = {
    "token_bucket": TokenBucket,
    "leaky_bucket": LeakyBucket,
    "fixed_window": FixedWindow,
    "sliding_window_log": SlidingWindowLog,
    "sliding_window_counter": SlidingWindowCounter,
    "none": Unlimited,
}
"""Limiter classes by the name a scenario file uses."""


def make_limiter(algorithm: str, *, rate_per_s: float, burst: int, window_s: float) -> Limiter:
    """Build the limiter registered as ``algorithm``; ValueError names the allowed ones."""
    try:
        factory = LIMITERS[algorithm]
    except KeyError:
        allowed = ", ".join(sorted(LIMITERS))
        raise ValueError(
            f"unknown rate limit algorithm {algorithm!r}; use one of: {allowed}"
        ) from None
    return factory(rate_per_s=rate_per_s, burst=burst, window_s=window_s)


class KeyedLimiter:
    """One limiter per key (per user), built on first use, memory bounded by ``max_keys``.

    Beyond ``max_keys`` the least recently used key is evicted. An evicted key restarts
    fresh when it comes back — for a token bucket that means *full* — so keep
    ``max_keys`` above the number of keys active within one refill time.
    """

    __slots__ = ("_factory", "_limiters", "_max_keys")

    def __init__(self, factory: Callable[[], Limiter], max_keys: int = 100_000) -> None:
        check_whole("max_keys", max_keys, 1)
        self._factory = factory
        self._max_keys = max_keys
        self._limiters: OrderedDict[str, Limiter] = OrderedDict()

    def try_acquire(self, key: str, now: float, cost: float = 1.0) -> Decision:
        limiters = self._limiters
        limiter = limiters.get(key)
        if limiter is None:
            limiter = limiters[key] = self._factory()
            if len(limiters) > self._max_keys:
                limiters.popitem(last=False)
        else:
            limiters.move_to_end(key)
        return limiter.try_acquire(now, cost)

    def __len__(self) -> int:
        return len(self._limiters)

    def __contains__(self, key: object) -> bool:
        return key in self._limiters
