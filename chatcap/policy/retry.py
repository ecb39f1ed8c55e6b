"""The client's retry policy: whether and when to retry an unacked send.

Shared by the SimPy model and the load generator, so that both clients retry alike.
Like the other policies it is pure: the caller passes ``now`` and a random source and
carries the decision out (sleeps, re-sends with the same ``client_msg_id``).

How a client drives it, per message:

1. before each attempt, ``on_send(attempt, now)`` (attempt 1 counts as a request in the
   retry budget; retries do not fund further retries);
2. when the attempt's outcome is known, ``decide(outcome, attempt, now, rng, ...)``:

   * ``acked`` → ``RetryDecision(False, 0, "acked")`` (the budget hears a success);
   * anything else is a failure for the budget; then, in this order,
     an outcome not in :data:`RETRYABLE` → ``"not_retryable"`` (a bad request stays bad);
     ``attempt >= max_attempts`` → ``"max_attempts"``;
     a ``retry_after_s`` of ``inf`` (the server says "never") → ``"never"``;
     the budget refuses → ``"budget"``;
     else retry after ``max(backoff, retry_after_s)`` → ``"retry"``.

The backoff delay before retry number ``k`` (attempt ``k + 1``) is
``backoff.delay_s(k - 1, rng, previous_delay_s)``; pass the previous decision's
``delay_s`` as ``previous_delay_s`` (only the decorrelated jitter reads it).

Answers are matched to the attempt the client waits for: an answer that arrives after
that attempt timed out is ignored (the server did the work for nothing; the retry,
deduplicated by ``client_msg_id``, gets its own answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatcap.policy._checks import check_whole
from chatcap.policy.backoff import Backoff
from chatcap.policy.budget import RetryBudget
from chatcap.policy.decision import SupportsRandom

__all__ = ["ACKED", "RETRYABLE", "RetryDecision", "RetryPolicy"]

RETRYABLE = frozenset(
    {"timeout", "overloaded", "store_busy", "unavailable", "rate_limited", "error", "internal"}
)
"""Outcomes worth another attempt: the server was busy, failing or too slow, not the
request wrong. ``error`` is the results schema's word for the protocol's ``internal``."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Retry after ``delay_s`` seconds, or stop; ``reason`` says which rule decided."""

    retry: bool
    delay_s: float
    reason: str


ACKED = RetryDecision(False, 0.0, "acked")
_NOT_RETRYABLE = RetryDecision(False, 0.0, "not_retryable")
_MAX_ATTEMPTS = RetryDecision(False, 0.0, "max_attempts")
_NEVER = RetryDecision(False, 0.0, "never")
_BUDGET = RetryDecision(False, 0.0, "budget")


class RetryPolicy:
    """At most ``max_attempts`` attempts, spaced by ``backoff``, within ``budget``."""

    __slots__ = ("backoff", "budget", "max_attempts")

    def __init__(self, max_attempts: int, backoff: Backoff, budget: RetryBudget) -> None:
        check_whole("max_attempts", max_attempts, 1)
        self.max_attempts = int(max_attempts)
        self.backoff = backoff
        self.budget = budget

    def on_send(self, attempt: int, now: float) -> None:
        """Tell the budget about an attempt about to be sent (only first ones count)."""
        if attempt == 1:
            self.budget.on_request(now)

    def decide(
        self,
        outcome: str,
        attempt: int,
        now: float,
        rng: SupportsRandom,
        retry_after_s: float = 0.0,
        previous_delay_s: float | None = None,
    ) -> RetryDecision:
        """What to do after attempt number ``attempt`` (1 = first) ended in ``outcome``."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt!r}")
        budget = self.budget
        if outcome == "acked":
            budget.on_success(now)
            return ACKED
        budget.on_failure(now)
        if outcome not in RETRYABLE:
            return _NOT_RETRYABLE
        if attempt >= self.max_attempts:
            return _MAX_ATTEMPTS
        if not retry_after_s < math.inf:  # inf (or nan): the server says it never passes
            return _NEVER
        if not budget.try_retry(now):
            return _BUDGET
        delay_s = self.backoff.delay_s(attempt - 1, rng, previous_delay_s)
        return RetryDecision(True, max(delay_s, retry_after_s), "retry")
