"""chatcap.pipeline.faults: constants, runtime overrides and episodes combined."""

from __future__ import annotations

import random

import pytest

from chatcap.pipeline.faults import FaultPlan
from chatcap.scenario import FaultEpisode, FaultsConfig


def plan(cfg: FaultsConfig, seed: int = 1) -> FaultPlan:
    return FaultPlan(cfg, started_at=100.0, rng=random.Random(seed))


EPISODES = (
    FaultEpisode(start_s=10.0, duration_s=5.0, store_latency_ms=200.0, store_error_rate=0.5),
    FaultEpisode(start_s=12.0, duration_s=5.0, store_latency_ms=100.0, store_error_rate=0.5),
)


def test_nothing_configured_means_no_latency_no_errors_and_no_draws() -> None:
    rng = random.Random(3)
    p = FaultPlan(FaultsConfig(), 0.0, rng)
    state = rng.getstate()
    assert not p.has_latency and not p.has_errors
    assert p.store_latency_s(5.0) == 0.0 and not p.store_fails(5.0)
    assert rng.getstate() == state


def test_episodes_are_relative_to_the_start_and_half_open() -> None:
    p = plan(FaultsConfig(store_latency_ms=5.0, episodes=EPISODES))
    assert p.store_latency_s(109.999) == pytest.approx(0.005)
    assert p.store_latency_s(110.0) == pytest.approx(0.205)
    assert p.store_latency_s(113.0) == pytest.approx(0.305)  # both: latencies add
    assert p.store_latency_s(115.0) == pytest.approx(0.105)  # the first ended
    assert p.store_latency_s(117.0) == pytest.approx(0.005)


def test_error_rates_combine_as_independent_sources() -> None:
    p = plan(FaultsConfig(episodes=EPISODES))
    assert p.store_error_rate(113.0) == pytest.approx(0.75)
    assert p.has_errors and p.has_latency


def test_failures_are_seeded_draws_at_the_combined_rate() -> None:
    a, b = plan(FaultsConfig(store_error_rate=0.3), 7), plan(FaultsConfig(store_error_rate=0.3), 7)
    draws_a = [a.store_fails(101.0) for _ in range(2000)]
    assert draws_a == [b.store_fails(101.0) for _ in range(2000)]
    assert 0.25 < sum(draws_a) / len(draws_a) < 0.35


def test_runtime_values_replace_the_constants_until_cleared() -> None:
    p = plan(FaultsConfig(store_latency_ms=5.0))
    p.set_runtime(store_latency_ms=50.0, store_error_rate=0.2)
    assert p.store_latency_s(0.0) == pytest.approx(0.05) and p.has_errors
    assert p.snapshot(101.0)["runtime"] == {"store_latency_ms": 50.0, "store_error_rate": 0.2}
    p.clear_runtime()
    assert p.store_latency_s(0.0) == pytest.approx(0.005) and not p.has_errors


def test_runtime_value_out_of_range_names_it_and_applies_nothing() -> None:
    p = plan(FaultsConfig())
    with pytest.raises(ValueError, match=r"store_error_rate must be a number in \[0, 1\]"):
        p.set_runtime(store_latency_ms=10.0, store_error_rate=1.5)
    assert p.store_latency_s(0.0) == 0.0


def test_snapshot_lists_the_active_episodes() -> None:
    snap = plan(FaultsConfig(episodes=EPISODES)).snapshot(113.0)
    assert snap["active_episodes"] == [0, 1] and snap["elapsed_s"] == pytest.approx(13.0)
