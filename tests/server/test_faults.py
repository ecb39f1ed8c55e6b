"""Fault injection: constant values, runtime overrides, timed episodes, seeded failures."""

from __future__ import annotations

import time

import pytest

from chatcap.scenario import FaultEpisode, FaultsConfig
from server.faults import FaultInjector, burn_cpu

EPISODES = (
    FaultEpisode(start_s=10.0, duration_s=5.0, store_latency_ms=200.0, store_error_rate=0.5),
    FaultEpisode(start_s=12.0, duration_s=10.0, store_latency_ms=50.0),
)


def test_everything_is_off_by_default() -> None:
    faults = FaultInjector(FaultsConfig(), started_at=100.0, seed=1)
    assert faults.store_latency_s(150.0) == 0.0
    assert not any(faults.store_fails(100.0 + i) for i in range(100))
    assert faults.cpu_burn_us == 0.0


def test_episodes_add_to_constant_latency_only_while_active() -> None:
    cfg = FaultsConfig(store_latency_ms=10.0, episodes=EPISODES)
    faults = FaultInjector(cfg, started_at=100.0, seed=1)
    trace = [(t, round(faults.store_latency_s(100.0 + t) * 1000, 6)) for t in (0, 10, 12, 15, 22)]
    assert trace == [(0, 10.0), (10, 210.0), (12, 260.0), (15, 60.0), (22, 10.0)]


def test_error_rates_combine_as_independent_sources() -> None:
    cfg = FaultsConfig(store_error_rate=0.5, episodes=EPISODES)
    faults = FaultInjector(cfg, started_at=0.0, seed=1)
    assert faults.store_error_rate(5.0) == 0.5
    assert faults.store_error_rate(11.0) == 0.75
    faults.set_runtime(store_error_rate=1.0)
    assert faults.store_error_rate(11.0) == 1.0
    assert all(faults.store_fails(11.0) for _ in range(50))


def test_failures_are_seeded_and_near_the_configured_rate() -> None:
    cfg = FaultsConfig(store_error_rate=0.3)
    one, two = FaultInjector(cfg, 0.0, seed=7), FaultInjector(cfg, 0.0, seed=7)
    draws = [one.store_fails(1.0) for _ in range(2000)]
    assert draws == [two.store_fails(1.0) for _ in range(2000)]
    assert draws != [FaultInjector(cfg, 0.0, seed=8).store_fails(1.0) for _ in range(2000)]
    assert 0.25 < sum(draws) / len(draws) < 0.35


def test_runtime_values_replace_constant_ones_until_cleared() -> None:
    cfg = FaultsConfig(store_latency_ms=10.0, cpu_burn_us_per_msg=5.0, episodes=EPISODES[:1])
    faults = FaultInjector(cfg, started_at=0.0, seed=1)
    faults.set_runtime(store_latency_ms=0.0, cpu_burn_us_per_msg=40.0)
    assert faults.store_latency_s(1.0) == 0.0
    assert faults.store_latency_s(11.0) == 0.2  # episodes still add on top
    assert faults.cpu_burn_us == 40.0
    faults.set_runtime(store_error_rate=0.1)  # None leaves the others as they are
    assert faults.cpu_burn_us == 40.0
    faults.clear_runtime()
    assert (faults.store_latency_s(1.0), faults.cpu_burn_us) == (0.01, 5.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"store_latency_ms": -1.0}, "store_latency_ms must be a number in"),
        ({"store_latency_ms": float("inf")}, "store_latency_ms"),
        ({"store_error_rate": 1.5}, r"store_error_rate must be a number in \[0, 1\]"),
        ({"cpu_burn_us_per_msg": float("nan")}, "cpu_burn_us_per_msg"),
    ],
)
def test_runtime_values_out_of_range_are_refused_and_change_nothing(
    kwargs: dict[str, float], message: str
) -> None:
    faults = FaultInjector(FaultsConfig(), started_at=0.0, seed=1)
    with pytest.raises(ValueError, match=message):
        faults.set_runtime(**{"store_latency_ms": 5.0, **kwargs})  # type: ignore[arg-type]
    assert faults.store_latency_s(0.0) == 0.0


def test_snapshot_says_what_is_in_force_and_why() -> None:
    cfg = FaultsConfig(store_latency_ms=10.0, episodes=EPISODES)
    faults = FaultInjector(cfg, started_at=100.0, seed=1)
    faults.set_runtime(store_error_rate=0.2)
    assert faults.snapshot(111.0) == {
        "store_latency_ms": 210.0,
        "store_error_rate": pytest.approx(0.6),
        "cpu_burn_us_per_msg": 0.0,
        "runtime": {"store_error_rate": 0.2},
        "configured": {
            "store_latency_ms": 10.0,
            "store_error_rate": 0.0,
            "cpu_burn_us_per_msg": 0.0,
        },
        "active_episodes": [0],
        "elapsed_s": 11.0,
    }


def test_burn_cpu_spends_at_least_the_asked_time() -> None:
    started = time.perf_counter()
    burn_cpu(2000.0)
    assert time.perf_counter() - started >= 0.002
    burn_cpu(0.0)  # no-op
