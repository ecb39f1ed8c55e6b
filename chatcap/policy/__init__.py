"""Resilience policies as pure state machines: time (``now``, seconds) and randomness
(``SupportsRandom``) are passed in, decisions come back. No I/O, no clock.

Registries (the names scenario files use):

* ``LIMITERS`` — rate limiters: ``token_bucket``, ``leaky_bucket``, ``fixed_window``,
  ``sliding_window_log``, ``sliding_window_counter``, ``none``; built by ``make_limiter``.
* ``JITTERS`` — backoff jitter: ``none``, ``full``, ``equal``, ``decorrelated``.
* ``BUDGETS`` — retry budgets: ``ratio``, ``token``, ``none``; built by ``make_budget``.

The client's ``RetryPolicy`` (attempts, backoff, budget) decides whether to retry.

Also the circuit breaker (``CircuitBreaker``, Resilience4j semantics, transition table
``TRANSITIONS``) and HikariCP's pool rules (``PoolRules``, ``PoolLedger``).
"""

from chatcap.policy.backoff import JITTERS, Backoff
from chatcap.policy.breaker import (
    TRANSITIONS,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    IllegalTransition,
    Transition,
    next_state,
)
from chatcap.policy.budget import (
    BUDGETS,
    NoBudget,
    RatioRetryBudget,
    RetryBudget,
    TokenRetryThrottle,
    make_budget,
)
from chatcap.policy.decision import ALLOW, Decision, SupportsRandom, seconds_until
from chatcap.policy.pool import Checkout, Housekeeping, PoolLedger, PoolRules
from chatcap.policy.ratelimit import (
    LIMITERS,
    FixedWindow,
    KeyedLimiter,
    LeakyBucket,
    Limiter,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
    Unlimited,
    make_limiter,
)
from chatcap.policy.retry import RETRYABLE, RetryDecision, RetryPolicy

__all__ = [
    "ALLOW",
    "BUDGETS",
    "JITTERS",
    "LIMITERS",
    "RETRYABLE",
    "TRANSITIONS",
    "Backoff",
    "BreakerConfig",
    "BreakerState",
    "Checkout",
    "CircuitBreaker",
    "Decision",
    "FixedWindow",
    "Housekeeping",
    "IllegalTransition",
    "KeyedLimiter",
    "LeakyBucket",
    "Limiter",
    "NoBudget",
    "PoolLedger",
    "PoolRules",
    "RatioRetryBudget",
    "RetryBudget",
    "RetryDecision",
    "RetryPolicy",
    "SlidingWindowCounter",
    "SlidingWindowLog",
    "SupportsRandom",
    "TokenBucket",
    "TokenRetryThrottle",
    "Transition",
    "Unlimited",
    "make_budget",
    "make_limiter",
    "next_state",
    "seconds_until",
]
