"""chatcap.wiring: scenario sections become the policy objects they describe."""

import math

from chatcap import wiring
from chatcap.policy import (
    Backoff,
    CircuitBreaker,
    KeyedLimiter,
    NoBudget,
    RatioRetryBudget,
    TokenRetryThrottle,
)
from chatcap.scenario import load_scenario_data


def test_each_section_builds_its_policy() -> None:
    s = load_scenario_data({"client": {"retry": {"base_ms": 50.0, "cap_ms": 800.0}}})
    assert isinstance(wiring.keyed_limiter(s.server.rate_limit), KeyedLimiter)
    assert isinstance(wiring.make_breaker(s.server.breaker), CircuitBreaker)
    assert wiring.backoff(s.client.retry) == Backoff(0.05, 0.8, 2.0, "full")
    policy = wiring.retry_policy(s.client)
    assert policy.max_attempts == 4 and isinstance(policy.budget, RatioRetryBudget)


def test_a_disabled_breaker_is_none() -> None:
    s = load_scenario_data({"server": {"breaker": {"enabled": False}}})
    assert wiring.breaker_config(s.server.breaker) is None
    assert wiring.make_breaker(s.server.breaker) is None


def test_budgets_follow_their_kind() -> None:
    for kind, cls in (("token", TokenRetryThrottle), ("none", NoBudget)):
        s = load_scenario_data({"client": {"retry_budget": {"kind": kind}}})
        assert isinstance(wiring.retry_budget(s.client.retry_budget), cls)


def test_pool_timeouts_map_inf_to_forever_and_zero_to_never() -> None:
    def rules(ms: float) -> float:
        s = load_scenario_data({"server": {"pool": {"acquire_timeout_ms": ms}}})
        return wiring.pool_rules(s.server.pool).acquire_timeout_s

    assert rules(math.inf) == 0.0  # PoolRules: 0 = wait forever
    assert rules(0.0) == wiring.NO_WAIT_S
    assert rules(250.0) == 0.25
