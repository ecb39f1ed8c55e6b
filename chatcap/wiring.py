"""Scenario sections → policy objects: the one place where the two meet.

``chatcap.policy`` knows nothing of scenario files, and ``chatcap.scenario`` nothing of
policy objects; the drivers (the model now, the server and the load generator as they
adopt it) build their policies here, so that all of them read a key the same way.

==========================  ===========================  ===============================
scenario section            builder                      gives
==========================  ===========================  ===============================
``[server.rate_limit]``     :func:`limiter_factory`      a limiter factory (one per key)
                            :func:`keyed_limiter`        a per-user ``KeyedLimiter``
``[server.breaker]``        :func:`breaker_config`       ``BreakerConfig`` or None
                            :func:`make_breaker`         ``CircuitBreaker`` or None
``[server.pool]``           :func:`pool_rules`           ``PoolRules`` (ms → s)
``[client.retry]``          :func:`backoff`              ``Backoff`` (ms → s)
``[client.retry_budget]``   :func:`retry_budget`         a ``RetryBudget``
``[client]``                :func:`retry_policy`         ``RetryPolicy``
==========================  ===========================  ===============================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from chatcap.pipeline.answers import acquire_timeout_s
from chatcap.policy.backoff import Backoff
from chatcap.policy.breaker import BreakerConfig, CircuitBreaker, Transition
from chatcap.policy.budget import RetryBudget, make_budget
from chatcap.policy.pool import PoolRules
from chatcap.policy.ratelimit import KeyedLimiter, Limiter, make_limiter
from chatcap.policy.retry import RetryPolicy
from chatcap.scenario import (
    BreakerSection,
    BudgetConfig,
    ClientConfig,
    PoolConfig,
    RateLimitConfig,
    RetryConfig,
)

__all__ = [
    "NO_WAIT_S",
    "backoff",
    "breaker_config",
    "keyed_limiter",
    "limiter_factory",
    "make_breaker",
    "pool_rules",
    "retry_budget",
    "retry_policy",
]

NO_WAIT_S = 1e-9
"""``acquire_timeout_ms = 0`` ("never wait") as ``PoolRules`` holds it: ``PoolRules``
reads 0 as *forever* (HikariCP), so "never" becomes this 1 ns timeout."""


def limiter_factory(cfg: RateLimitConfig) -> Callable[[], Limiter]:
    """A factory of fresh limiters as ``[server.rate_limit]`` says (one per user)."""

    def build() -> Limiter:
        return make_limiter(
            cfg.algorithm, rate_per_s=cfg.rate_per_s, burst=cfg.burst, window_s=cfg.window_s
        )

    return build


def keyed_limiter(cfg: RateLimitConfig) -> KeyedLimiter:
    """The per-user send limiter of one server process."""
    return KeyedLimiter(limiter_factory(cfg))


def breaker_config(cfg: BreakerSection) -> BreakerConfig | None:
    """The breaker's settings; None when ``enabled = false`` (every call goes through)."""
    if not cfg.enabled:
        return None
    return BreakerConfig(
        window_type=cfg.window_type,
        window_size=cfg.window_size,
        minimum_calls=cfg.minimum_calls,
        failure_rate_pct=cfg.failure_rate_pct,
        slow_call_duration_s=cfg.slow_call_duration_s,
        slow_call_rate_pct=cfg.slow_call_rate_pct,
        open_duration_s=cfg.open_duration_s,
        half_open_calls=cfg.half_open_calls,
        max_half_open_wait_s=cfg.max_half_open_wait_s,
    )


def make_breaker(
    cfg: BreakerSection, listeners: Iterable[Callable[[Transition], None]] = ()
) -> CircuitBreaker | None:
    """One process's breaker around the store, or None when disabled."""
    config = breaker_config(cfg)
    return None if config is None else CircuitBreaker(config, listeners)


def pool_rules(cfg: PoolConfig) -> PoolRules:
    """The pool's rules from ``[server.pool]``.

    The scenario says ``inf`` for "wait forever" (``PoolRules``' 0) and ``0`` for "never
    wait" (the Erlang-B loss system), which becomes :data:`NO_WAIT_S`.
    """
    timeout_s = acquire_timeout_s(cfg.acquire_timeout_ms)
    if timeout_s == 0:
        timeout_s = NO_WAIT_S
    return PoolRules(
        size=cfg.size,
        min_idle=cfg.min_idle,
        acquire_timeout_s=timeout_s if math.isfinite(timeout_s) else 0.0,
        idle_timeout_s=cfg.idle_timeout_s,
        max_lifetime_s=cfg.max_lifetime_s,
        leak_detection_s=cfg.leak_detection_ms / 1000.0,
    )


def backoff(cfg: RetryConfig) -> Backoff:
    """The client's backoff from ``[client.retry]``."""
    return Backoff(
        base_s=cfg.base_ms / 1000.0,
        cap_s=cfg.cap_ms / 1000.0,
        multiplier=cfg.multiplier,
        jitter=cfg.jitter,
    )


def retry_budget(cfg: BudgetConfig) -> RetryBudget:
    """The client's retry budget from ``[client.retry_budget]``, by its ``kind``."""
    if cfg.kind == "ratio":
        return make_budget(
            "ratio",
            ratio=cfg.ratio,
            min_retries_per_s=cfg.min_retries_per_s,
            window_s=cfg.window_s,
        )
    if cfg.kind == "token":
        return make_budget("token", max_tokens=cfg.max_tokens, token_ratio=cfg.token_ratio)
    return make_budget(cfg.kind)


def retry_policy(cfg: ClientConfig) -> RetryPolicy:
    """The client's whole retry policy from ``[client]`` (a fresh budget each call)."""
    return RetryPolicy(cfg.retry.max_attempts, backoff(cfg.retry), retry_budget(cfg.retry_budget))
