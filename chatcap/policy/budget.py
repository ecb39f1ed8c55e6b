"""Retry budgets, chosen by name: how many retries a client may add on top of its load.

Registry ``BUDGETS`` (the scenario's client retry ``budget`` key):

=========  ================================================================================
``ratio``  ``RatioRetryBudget`` — Finagle's RetryBudget / gRPC-style ratio: within the last
           ``window_s``, retries <= ``min_retries_per_s * window_s + ratio * requests``
``token``  ``TokenRetryThrottle`` — gRPC's retry throttling (gRFC A6), exactly: tokens start
           at ``max_tokens``; a failure takes 1, a success gives back ``token_ratio``;
           retries only while tokens > ``max_tokens / 2``
``none``   ``NoBudget`` — every retry allowed
=========  ================================================================================

All share the ``RetryBudget`` protocol; each ignores the calls it does not need. Call
``on_request`` for original requests only (retries funding retries would defeat the
ratio) and ``on_success`` / ``on_failure`` for the outcome of every attempt.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, Protocol

from chatcap.policy._checks import check_non_negative, check_positive

__all__ = [
    "BUDGETS",
    "NoBudget",
    "RatioRetryBudget",
    "RetryBudget",
    "TokenRetryThrottle",
    "make_budget",
]

_MAX_BUCKETS = 600


class RetryBudget(Protocol):
    """What a client asks before it retries, and tells after each attempt."""

    def on_request(self, now: float) -> None: ...

    def on_success(self, now: float) -> None: ...

    def on_failure(self, now: float) -> None: ...

    def try_retry(self, now: float) -> bool: ...


class RatioRetryBudget:
    """Retries within the window <= ``min_retries_per_s * window_s + ratio * requests``.

    Defaults are Finagle's (20 % of requests, 10 retries/s reserve, 10 s window). Counts
    live in ``ceil(window_s)`` buckets (at most 600) of ``window_s / buckets`` each, so the
    window slides a bucket at a time and memory does not grow with traffic. The window
    at ``now`` is the bucket holding ``now`` and the ones before it, ``window_s`` in all.
    """

    __slots__ = (
        "_head",
        "_requests",
        "_reserve",
        "_retries",
        "_width_s",
        "ratio",
        "requests_in_window",
        "retries_in_window",
    )

    def __init__(
        self, ratio: float = 0.2, min_retries_per_s: float = 10.0, window_s: float = 10.0
    ) -> None:
        check_non_negative("ratio", ratio)
        check_non_negative("min_retries_per_s", min_retries_per_s)
        check_positive("window_s", window_s)
        buckets = min(_MAX_BUCKETS, max(1, math.ceil(window_s)))
        self.ratio = ratio
        self._reserve = min_retries_per_s * window_s
        self._width_s = window_s / buckets
        self._requests = [0] * buckets
        self._retries = [0] * buckets
        self._head = -(2**62)  # newest bucket id seen; far past means all empty
        self.requests_in_window = 0
        self.retries_in_window = 0

    def allowance(self, now: float) -> float:
        """Retries the window may hold at ``now``."""
        self._advance(now)
        return self._reserve + self.ratio * self.requests_in_window

    def on_request(self, now: float) -> None:
        self._requests[self._advance(now)] += 1
        self.requests_in_window += 1

    def on_success(self, now: float) -> None:
        """Outcomes do not matter to a ratio budget."""

    def on_failure(self, now: float) -> None:
        """Outcomes do not matter to a ratio budget."""

    def try_retry(self, now: float) -> bool:
        """Allow and record one retry if the window has room for it."""
        index = self._advance(now)
        if self.retries_in_window + 1 > self._reserve + self.ratio * self.requests_in_window:
            return False
        self._retries[index] += 1
        self.retries_in_window += 1
        return True

    def _advance(self, now: float) -> int:
        """Age out buckets older than the window; return the index to count into."""
        bucket = math.floor(now / self._width_s)
        size = len(self._requests)
        if bucket > self._head:
            for stale in range(max(self._head + 1, bucket - size + 1), bucket + 1):
                index = stale % size
                self.requests_in_window -= self._requests[index]
                self.retries_in_window -= self._retries[index]
                self._requests[index] = self._retries[index] = 0
            self._head = bucket
        return self._head % size  # an earlier (stale) time counts in the newest bucket


class TokenRetryThrottle:
    """gRPC retry throttling (gRFC A6), kept in integer milli-tokens as gRPC does.

    ``max_tokens`` in (0, 1000] and ``token_ratio`` > 0 are read to three decimals, as
    gRPC reads them from the service config. Defaults (10, 0.1) are gRFC A6's example.
    Every failed attempt takes one token (not below 0), every success adds
    ``token_ratio`` (not above ``max_tokens``); retries are allowed while tokens are
    strictly above ``max_tokens / 2``. ``try_retry`` only reads; it spends nothing.
    """

    __slots__ = ("_max_milli", "_milli", "_ratio_milli")

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        if not (isinstance(max_tokens, int | float) and 0 < max_tokens <= 1000):
            raise ValueError(f"max_tokens must be in (0, 1000], got {max_tokens!r}")
        check_positive("token_ratio", token_ratio)
        if round(token_ratio * 1000) < 1:
            raise ValueError(f"token_ratio must be >= 0.001, got {token_ratio!r}")
        self._max_milli = round(max_tokens * 1000)
        self._ratio_milli = round(token_ratio * 1000)
        self._milli = self._max_milli

    @property
    def tokens(self) -> float:
        """Tokens left."""
        return self._milli / 1000

    def on_request(self, now: float = 0.0) -> None:
        """Requests alone do not matter to the throttle."""

    def on_success(self, now: float = 0.0) -> None:
        self._milli = min(self._max_milli, self._milli + self._ratio_milli)

    def on_failure(self, now: float = 0.0) -> None:
        self._milli = max(0, self._milli - 1000)

    def try_retry(self, now: float = 0.0) -> bool:
        return 2 * self._milli > self._max_milli


class NoBudget:
    """Every retry allowed (the ``none`` budget)."""

    __slots__ = ()

    def on_request(self, now: float) -> None:
        pass

    def on_success(self, now: float) -> None:
        pass

    def on_failure(self, now: float) -> None:
        pass

    def try_retry(self, now: float) -> bool:
        return True


BUDGETS: dict[str, Callable[..., RetryBudget]] = {
    "ratio": RatioRetryBudget,
    "token": TokenRetryThrottle,
    "none": NoBudget,
}
"""Retry budget classes by the name a scenario file uses."""


def make_budget(kind: str, **params: Any) -> RetryBudget:
    """Build the budget registered as ``kind`` from its keyword parameters."""
    try:
        factory = BUDGETS[kind]
    except KeyError:
        raise ValueError(
            f"unknown retry budget {kind!r}; use one of: {', '.join(BUDGETS)}"
        ) from None
    accepted = set(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(
            f"retry budget {kind!r} does not take {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(accepted)) or 'nothing'}"
        )
    return factory(**params)
