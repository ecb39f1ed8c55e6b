"""Queueing formulas against published and hand-computed values, and scenario recognition."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcap.scenario import load_scenario
from sim.theory import (
    TheoryPrediction,
    erlang_b,
    erlang_c,
    littles_law_check,
    littles_law_l,
    md1,
    mg1,
    mm1,
    mm1k,
    mmc,
    mmcc,
    theory_for_scenario,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

servers_st = st.integers(min_value=1, max_value=200)
load_st = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)


# ---------------------------------------------------------------------------- Erlang B and C


@pytest.mark.parametrize("load", [0.1, 0.5, 1.0, 7.0])
def test_erlang_b_with_one_server_is_a_over_one_plus_a(load: float) -> None:
    assert erlang_b(1, load) == pytest.approx(load / (1 + load))


def test_erlang_b_matches_the_published_table() -> None:
    # Erlang B tables (e.g. GSTH, Table of B(c, a)): B(10, 5) = 0.018385, B(8, 6) = 0.12188.
    assert erlang_b(10, 5.0) == pytest.approx(0.018385, abs=5e-7)
    assert erlang_b(8, 6.0) == pytest.approx(0.12188, abs=5e-6)


def test_erlang_b_matches_the_direct_formula_for_small_c() -> None:
    c, a = 5, 3.0
    terms = [a**k / math.factorial(k) for k in range(c + 1)]
    assert erlang_b(c, a) == pytest.approx(terms[-1] / sum(terms))


def test_erlang_b_with_no_servers_blocks_everything_and_with_no_load_nothing() -> None:
    assert erlang_b(0, 3.0) == 1.0
    assert erlang_b(4, 0.0) == 0.0


def test_erlang_c_with_two_servers_at_one_erlang_is_one_third() -> None:
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)


def test_erlang_c_with_one_server_is_rho() -> None:
    assert erlang_c(1, 0.7) == pytest.approx(0.7)


@pytest.mark.parametrize(("servers", "load"), [(1, 1.0), (4, 4.0), (4, 5.5)])
def test_erlang_c_refuses_an_unstable_system(servers: int, load: float) -> None:
    with pytest.raises(ValueError, match="unstable: ρ = "):
        erlang_c(servers, load)


@pytest.mark.parametrize(("servers", "load"), [(-1, 1.0), (2, -0.5), (2, math.inf), (2, math.nan)])
def test_erlang_b_refuses_nonsense_arguments(servers: int, load: float) -> None:
    with pytest.raises(ValueError):
        erlang_b(servers, load)


@given(servers_st, load_st)
def test_erlang_b_is_a_probability(servers: int, load: float) -> None:
    assert 0.0 <= erlang_b(servers, load) <= 1.0


@given(servers_st, st.floats(min_value=0.01, max_value=500.0))
def test_erlang_b_decreases_as_servers_are_added(servers: int, load: float) -> None:
    assert erlang_b(servers + 1, load) <= erlang_b(servers, load)


@given(servers_st, st.floats(min_value=0.0, max_value=400.0), st.floats(0.001, 100.0))
def test_erlang_b_increases_with_load(servers: int, load: float, more: float) -> None:
    assert erlang_b(servers, load + more) >= erlang_b(servers, load)


@given(servers_st, st.floats(min_value=0.0, max_value=0.999))
def test_erlang_c_is_at_least_erlang_b(servers: int, rho: float) -> None:
    load = rho * servers
    assert erlang_b(servers, load) <= erlang_c(servers, load) <= 1.0 + 1e-12


def test_erlang_b_and_c_are_stable_for_a_thousand_servers() -> None:
    blocking = erlang_b(1000, 950.0)
    waiting = erlang_c(1000, 950.0)
    assert 0.0 < blocking < waiting < 1.0
    assert math.isfinite(blocking) and math.isfinite(waiting)
    assert erlang_b(1000, 5000.0) == pytest.approx(1 - 1000 / 5000, abs=0.01)


# ---------------------------------------------------------------------------- delay systems


def test_mm1_follows_the_textbook_formulas() -> None:
    lam, mu = 800.0, 1000.0
    m = mm1(lam, mu)
    rho = lam / mu
    assert m.rho == pytest.approx(rho)
    assert m.p_wait == pytest.approx(rho)
    assert m.mean_wait_s == pytest.approx(rho / (mu - lam))
    assert m.mean_response_s == pytest.approx(1 / (mu - lam))
    assert m.mean_queue_len == pytest.approx(rho**2 / (1 - rho))
    assert m.mean_in_system == pytest.approx(rho / (1 - rho))
    assert m.throughput_per_s == lam and m.p_block == 0.0


def test_mmc_with_four_servers_at_rho_point_eight_matches_hand_computation() -> None:
    # a = 3.2: B(4, 3.2) by the recursion, C = 4B / (4 − 3.2(1 − B)) = 0.596432.
    m = mmc(3200.0, 1000.0, 4)
    assert m.rho == pytest.approx(0.8)
    assert m.p_wait == pytest.approx(0.596432, abs=1e-6)
    assert m.mean_wait_s == pytest.approx(m.p_wait / (4000.0 - 3200.0))
    assert m.mean_response_s == pytest.approx(m.mean_wait_s + 0.001)


def test_mmc_with_one_server_is_mm1() -> None:
    assert mmc(30.0, 50.0, 1) == mm1(30.0, 50.0)


def test_mmc_refuses_an_unstable_system() -> None:
    with pytest.raises(ValueError, match="unstable"):
        mmc(5000.0, 1000.0, 4)


def test_md1_waits_half_as_long_as_mm1() -> None:
    assert md1(800.0, 0.001).mean_wait_s == pytest.approx(mm1(800.0, 1000.0).mean_wait_s / 2)
    assert md1(800.0, 0.001).mean_wait_s == pytest.approx(0.002)


def test_mg1_with_cv_one_is_mm1() -> None:
    got, want = mg1(600.0, 0.001, 1.0), mm1(600.0, 1000.0)
    assert got.mean_wait_s == pytest.approx(want.mean_wait_s)
    assert got.mean_in_system == pytest.approx(want.mean_in_system)
    assert got.p_wait == pytest.approx(want.p_wait)


def test_mg1_wait_grows_with_service_variability() -> None:
    waits = [mg1(500.0, 0.001, cv).mean_wait_s for cv in (0.0, 0.5, 1.0, 2.0)]
    assert waits == sorted(waits)
    assert waits[-1] == pytest.approx(5 * waits[0])  # (1 + 2²) / (1 + 0²)


def test_mg1_refuses_an_unstable_system() -> None:
    with pytest.raises(ValueError, match="unstable: ρ = 1"):
        mg1(1000.0, 0.001, 1.0)


@given(
    st.floats(min_value=0.0, max_value=0.99),
    st.floats(min_value=0.1, max_value=1e4),
    st.integers(min_value=1, max_value=64),
)
def test_delay_systems_obey_littles_law(rho: float, mu: float, servers: int) -> None:
    lam = rho * servers * mu
    m = mmc(lam, mu, servers)
    assert m.mean_in_system == pytest.approx(littles_law_l(lam, m.mean_response_s))
    assert m.mean_queue_len == pytest.approx(littles_law_l(lam, m.mean_wait_s))
    assert m.mean_in_system == pytest.approx(m.mean_queue_len + lam / mu)


# ---------------------------------------------------------------------------- loss systems


def test_mmcc_metrics_follow_erlang_b() -> None:
    m = mmcc(6000.0, 1000.0, 8)
    blocking = erlang_b(8, 6.0)
    assert m.p_block == pytest.approx(blocking)
    assert m.throughput_per_s == pytest.approx(6000.0 * (1 - blocking))
    assert m.mean_in_system == pytest.approx(6.0 * (1 - blocking))
    assert (m.mean_wait_s, m.mean_queue_len, m.mean_response_s) == (0.0, 0.0, 0.001)


def test_mm1k_with_room_for_one_is_erlang_b_with_one_server() -> None:
    assert mm1k(3.0, 2.0, 1).p_block == pytest.approx(erlang_b(1, 1.5))


def test_mm1k_with_a_large_capacity_approaches_mm1() -> None:
    big, open_ended = mm1k(800.0, 1000.0, 400), mm1(800.0, 1000.0)
    assert big.p_block < 1e-30
    assert big.mean_wait_s == pytest.approx(open_ended.mean_wait_s)
    assert big.mean_in_system == pytest.approx(open_ended.mean_in_system)
    assert big.p_wait == pytest.approx(open_ended.p_wait)


def test_mm1k_at_rho_one_is_uniform_over_the_states() -> None:
    m = mm1k(5.0, 5.0, 4)
    assert m.p_block == pytest.approx(1 / 5)
    assert m.mean_in_system == pytest.approx(2.0)
    assert m.rho == pytest.approx(4 / 5)


def test_mm1k_matches_the_closed_form_for_rho_below_and_above_one() -> None:
    for rho in (0.5, 2.0):
        k = 6
        p_full = rho**k * (1 - rho) / (1 - rho ** (k + 1))
        in_system = rho / (1 - rho) - (k + 1) * rho ** (k + 1) / (1 - rho ** (k + 1))
        m = mm1k(rho, 1.0, k)
        assert m.p_block == pytest.approx(p_full)
        assert m.mean_in_system == pytest.approx(in_system)


def test_mm1k_survives_heavy_overload_with_a_large_capacity() -> None:
    m = mm1k(5000.0, 1000.0, 100_000)
    assert m.p_block == pytest.approx(0.8)  # throughput pinned at μ
    assert m.throughput_per_s == pytest.approx(1000.0)


@given(
    st.floats(min_value=0.0, max_value=50.0),
    st.floats(min_value=0.1, max_value=50.0),
    st.integers(min_value=1, max_value=200),
)
def test_mm1k_obeys_littles_law_with_the_admitted_rate(lam: float, mu: float, k: int) -> None:
    m = mm1k(lam, mu, k)
    assert 0.0 <= m.p_block <= 1.0 and 0.0 <= m.p_wait <= 1.0
    assert m.rho == pytest.approx(m.throughput_per_s / mu)
    if m.throughput_per_s > 0:
        assert littles_law_check(m.mean_in_system, m.throughput_per_s, m.mean_response_s, 1e-9)


# ---------------------------------------------------------------------------- Little's law


def test_littles_law_gives_l_from_rate_and_time() -> None:
    assert littles_law_l(800.0, 0.005) == pytest.approx(4.0)


def test_littles_law_check_accepts_within_and_rejects_beyond_the_tolerance() -> None:
    assert littles_law_check(4.1, 800.0, 0.005, rel_tol=0.05)
    assert not littles_law_check(4.5, 800.0, 0.005, rel_tol=0.05)
    assert littles_law_check(0.0, 0.0, 0.005, rel_tol=0.0)


# ---------------------------------------------------------------------------- scenarios


def _predict(stem: str, **overrides: object) -> TheoryPrediction:
    scenario = load_scenario(SCENARIOS / f"{stem}.toml")
    return theory_for_scenario(scenario.with_overrides(overrides) if overrides else scenario)


def test_theory_recognises_the_mm1_scenario() -> None:
    p = _predict("theory-mm1")
    assert p.applies, p.reason
    assert (p.model, p.servers, p.arrival_per_s, p.mean_service_s) == ("M/M/1", 1, 800.0, 0.001)
    assert p.metrics is not None
    assert p.metrics.rho == pytest.approx(0.8)
    assert p.metrics.mean_wait_s == pytest.approx(0.004)
    assert p.metrics.mean_response_s == pytest.approx(0.005)
    assert p.summary_fields()["ack_mean_ms"] == pytest.approx(5.0)


def test_theory_recognises_the_mmc_scenario() -> None:
    p = _predict("theory-mmc")
    assert p.applies, p.reason
    assert (p.model, p.servers, p.arrival_per_s) == ("M/M/c", 4, 3200.0)
    assert p.metrics == mmc(3200.0, 1000.0, 4)
    assert p.metrics.rho == pytest.approx(0.8)


def test_theory_recognises_the_md1_scenario() -> None:
    p = _predict("theory-md1")
    assert p.applies, p.reason
    assert (p.model, p.servers) == ("M/D/1", 1)
    assert p.metrics is not None
    assert p.metrics.mean_wait_s == pytest.approx(0.002)
    assert p.metrics.mean_response_s == pytest.approx(0.003)


def test_theory_recognises_the_erlang_b_scenario() -> None:
    p = _predict("theory-erlang-b")
    assert p.applies, p.reason
    assert (p.model, p.servers, p.capacity) == ("Erlang B", 8, 8)
    assert p.arrival_per_s * p.mean_service_s == pytest.approx(6.0)
    assert p.metrics is not None
    assert p.metrics.p_block == pytest.approx(erlang_b(8, 6.0))
    assert p.summary_fields()["error_rate"] == pytest.approx(0.12188, abs=5e-6)


def test_theory_refuses_the_baseline_and_says_why() -> None:
    p = theory_for_scenario(load_scenario(SCENARIOS / "baseline.toml"))
    assert not p.applies
    assert p.metrics is None and p.model == ""
    for word in ("sim.cpu", "rate_limit", "breaker", "batch_max", "max_attempts"):
        assert word in p.reason
    with pytest.raises(ValueError, match="no theory"):
        p.summary_fields()


def test_a_lognormal_store_with_one_server_is_mg1() -> None:
    p = _predict("theory-mm1", **{"sim.store_service": "lognormal", "sim.store_service_cv": 2.0})
    assert p.model == "M/G/1"
    assert p.metrics == mg1(800.0, 0.001, 2.0)


def test_a_deterministic_store_with_several_servers_is_not_classic() -> None:
    p = _predict("theory-mmc", **{"sim.store_service": "deterministic"})
    assert not p.applies
    assert "deterministic service with c = 4" in p.reason


def test_a_store_running_one_commit_at_a_time_is_one_server_behind_the_pool() -> None:
    p = _predict("theory-mmc", **{"sim.store_concurrency": 1, "workload.users": 200})
    assert (p.model, p.servers) == ("M/M/1", 1)
    assert "one server" in p.notes[0]


def test_a_loss_system_with_one_store_server_behind_the_pool_is_mm1k() -> None:
    p = _predict("theory-erlang-b", **{"sim.store_concurrency": 1})
    assert (p.model, p.servers, p.capacity) == ("M/M/1/K", 1, 8)
    assert p.metrics == mm1k(6000.0, 1000.0, 8)


def test_erlang_b_applies_to_any_service_distribution_with_a_note() -> None:
    p = _predict("theory-erlang-b", **{"sim.store_service": "deterministic"})
    assert p.model == "Erlang B"
    assert p.metrics is not None
    assert p.metrics.p_block == pytest.approx(erlang_b(8, 6.0))
    assert "only through its mean" in p.notes[0]


def test_an_overloaded_delay_scenario_is_refused_as_unstable() -> None:
    p = _predict("theory-mm1", **{"workload.send_rate_per_user_per_s": 1.5})
    assert not p.applies
    assert "unstable: ρ = 1.2" in p.reason


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("server.pool.acquire_timeout_ms", 1000.0, "neither a delay system"),
        ("workload.arrival", "constant", "workload.arrival"),
        ("client.ack_timeout_ms", 2000.0, "sends can time out"),
        ("server.store.write_queue_max", 10_000, "write queue can fill"),
        ("server.store.call_timeout_s", 5.0, "commits can time out"),
        ("server.faults.store_latency_ms", 1.0, "server.faults"),
        ("server.processes", 2, "server.processes"),
        ("sim.store_service", "empirical", "empirical"),
    ],
)
def test_theory_refuses_a_scenario_that_is_not_a_classic_case(
    key: str, value: object, words: str
) -> None:
    p = _predict("theory-mm1", **{key: value})
    assert not p.applies
    assert words in p.reason


def test_a_loss_system_needs_more_batches_in_flight_than_connections() -> None:
    from chatcap.scenario import load_scenario
    from sim.theory import theory_for_scenario

    base = load_scenario(SCENARIOS / "theory-erlang-b.toml")
    assert theory_for_scenario(base).applies
    few = base.with_overrides({"server.store.max_in_flight_batches": base.server.pool.size})
    verdict = theory_for_scenario(few)
    assert not verdict.applies
    assert "max_in_flight_batches" in verdict.reason


def test_batches_in_flight_cap_the_servers_of_a_delay_system() -> None:
    from chatcap.scenario import load_scenario
    from sim.theory import theory_for_scenario

    base = load_scenario(SCENARIOS / "theory-mmc.toml")
    assert theory_for_scenario(base).servers == 4
    capped = base.with_overrides(
        {"server.store.max_in_flight_batches": 2, "workload.send_rate_per_user_per_s": 2.0}
    )
    assert theory_for_scenario(capped).servers == 2
