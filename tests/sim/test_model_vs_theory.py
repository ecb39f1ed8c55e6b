"""The model against queueing theory: its classic special cases give the closed forms.

Each case is a ``scenarios/theory-*.toml`` file with a few overrides, run for several
replications on the common-random-number seeds ``sim.replication_seed(file seed, r)``,
the warm-up cut (50 relaxation times of the queue, at least 1,000 sends). The checks:

* **M/M/c** for c ∈ {1, 2, 4, 8} at ρ ∈ {0.5, 0.8, 0.9} and **M/D/1** at ρ = 0.8: the
  mean wait ``Wq`` (arrival → start of the commit) is within 3 % of Erlang C's
  (Pollaczek–Khinchine's), and theory lies inside the model's confidence interval;
* **Erlang B**: the error rate of a pool that never waits is the blocking probability;
* a **token bucket** overdriven by one user admits ``rate_per_s`` sends a second;
* **Little's law** ``L = λ·W`` on every run: the time series' ``in_system_mean`` against
  the acked rate × the mean ack latency.

How the wait is measured. The model reports the ack latency ``W = Wq + S`` (with
``sim.cpu = false`` nothing else takes time), and ``W − E[S]`` is hopeless where waits
are short: at c = 8, ρ = 0.5 the wait is 15 µs, 1.5 % of the 1 ms service, so the noise
of the service times swamps it. Instead each customer's wait is recovered exactly from
its send and ack times: the pool hands connections out first come first served, so
customer k (in arrival order) starts service at ``max(a_k, d_(k−c))``, where
``d_(m)`` is the m-th earliest departure of all (no later customer can leave before k
starts) — a sample-path identity of the FIFO c-server queue; ``S_k = d_k − start_k``
comes out ≥ 0 with mean ``E[S]``, which the test checks as a sanity guard.

The estimator: per replication the mean wait over the measured window; across
replications a **control-variate** mean (Law & Kelton, *Simulation Modeling and
Analysis*, §11.4) with the two inputs whose expectations are known — the realised mean
service time (against ``E[S]``) and the realised number of arrivals (against ``λ·T``).
The wait rises steeply with the realised load, and these controls explain 35–60 % of
its variance between replications (measured with 40 replications per case); the
estimate is the intercept of the least-squares fit at zero deviation, its confidence
interval from the intercept's standard error with ``R − 3`` degrees of freedom.

The confidence level: the file checks 14 intervals (12 M/M/c cases, M/D/1, Erlang B).
At 95 % each, a correct model would leave theory outside one of them half the time, so
each interval is widened to the family-wise 95 % (Bonferroni: 1 − 0.05/14 ≈ 99.6 % each).

Sizes: the relative variance of a replication's mean wait, times its customers, is
about ``K`` (after the controls, measured with 40 replications: 14, 28, 77, 330 at
ρ = 0.5 for c = 1, 2, 4, 8; 64, 77, 106, 166 at ρ = 0.8; 230, 250, 290, 350 at ρ = 0.9).
The default cases get ``N ≈ K / 0.012²`` customers in all (a standard error of about
1.2 %, so 3 % is 2.5 of them). c = 8 at ρ = 0.5 (a 15 µs wait, 6 % of sends wait at
all) and the ρ = 0.9 cases need 2.5–3.5 M customers each for 1 %, more than the default
run's budget (≈ 90 s for the file on two cores), so they are marked ``slow``. Seeds are
the scenario files' own.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats  # type: ignore[import-untyped]

import sim
from chatcap.scenario import Scenario, load_scenario, load_scenario_data
from sim.theory import erlang_b, theory_for_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
TOLERANCE = 0.03  # relative, against theory
LITTLE_TOLERANCE = 0.01  # relative: L against λ·W on every run
INTERVAL_S = 0.1  # time-series bucket; warm-up and duration are whole buckets
WARMUP_RELAXATIONS = 50
MIN_WARMUP_SENDS = 1000
WAIT_REPLICATIONS = 20  # the control-variate fit spends 2 of them; 17 degrees of freedom
SIMPLE_REPLICATIONS = 10

INTERVALS = 14  # confidence intervals checked in this file (see the docstring)
CONFIDENCE = 1 - 0.05 / INTERVALS  # each; family-wise 95 %

# Customers measured per M/M/c case (all replications together): K / 0.012² by default,
# K / 0.010² for the slow cases.
MMC_CUSTOMERS = {
    (1, 0.5): 200_000,
    (2, 0.5): 300_000,
    (4, 0.5): 600_000,
    (8, 0.5): 3_300_000,  # slow
    (1, 0.8): 500_000,
    (2, 0.8): 600_000,
    (4, 0.8): 800_000,
    (8, 0.8): 1_200_000,
    (1, 0.9): 2_400_000,  # slow
    (2, 0.9): 2_600_000,  # slow
    (4, 0.9): 3_000_000,  # slow
    (8, 0.9): 3_600_000,  # slow
}
SLOW_CASES = {(8, 0.5), (1, 0.9), (2, 0.9), (4, 0.9), (8, 0.9)}


# ---------------------------------------------------------------------------- one replication


def fifo_waits(sent_s: np.ndarray, done_s: np.ndarray, servers: int) -> np.ndarray:
    """Each customer's wait in a FIFO queue with ``servers`` servers, from its arrival
    and departure times alone (arrival order): service starts at ``max(a_k, d_(k−c))``
    with ``d_(m)`` the m-th earliest departure overall."""
    start = sent_s.copy()
    departures = np.sort(done_s)
    start[servers:] = np.maximum(sent_s[servers:], departures[:-servers])
    waits: np.ndarray = start - sent_s
    return waits


def replicate(scenario_data: dict[str, Any], seed: int, servers: int) -> dict[str, Any]:
    """One replication → its summary row (``mix``), the measured window's mean wait and
    service time (``servers`` > 0: a FIFO delay system) and Little's ``L``.

    A top-level function of plain data, so a process pool can run it."""
    s = load_scenario_data(scenario_data, source="<theory case>")
    result = sim.run(s, seed)
    w = s.workload
    row = result.summary()[0]
    req = result.requests
    sent = req["sent_s"].to_numpy()
    done = req["done_s"].to_numpy()
    window = (sent >= w.warmup_s) & (sent < w.duration_s)
    row["arrivals"] = int(window.sum())
    if servers:
        wait = fifo_waits(sent, done, servers)
        service = done - sent - wait
        row["wait_s"] = float(wait[window].mean())
        row["service_s"] = float(service[window].mean())
        row["service_min_s"] = float(service.min())
    ts = result.timeseries
    measured = ts["t_s"] > w.warmup_s + INTERVAL_S / 2
    row["littles_l"] = float(ts.loc[measured, "in_system_mean"].mean())
    return row


def replications(scenario: Scenario, count: int, servers: int = 0) -> pd.DataFrame:
    """``count`` replications on the seeds of the scenario's common random numbers, on a
    process pool over every CPU: one row per replication."""
    data = scenario.to_dict()
    seeds = [sim.replication_seed(scenario.seed, r) for r in range(count)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        rows = list(pool.map(replicate, [data] * count, seeds, [servers] * count))
    return pd.DataFrame.from_records(rows)


# ---------------------------------------------------------------------------- estimators


@dataclass(frozen=True)
class Estimate:
    """A mean and the half-width of its confidence interval."""

    mean: float
    half_width: float

    def relative_error(self, truth: float) -> float:
        return self.mean / truth - 1.0

    def covers(self, truth: float) -> bool:
        return abs(self.mean - truth) <= self.half_width


def plain_mean(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean of the replications and its Student-t half-width at ``confidence``."""
    y = np.asarray(values, dtype=float)
    t = float(scipy_stats.t.ppf(0.5 + confidence / 2, len(y) - 1))
    return Estimate(float(y.mean()), t * float(y.std(ddof=1)) / math.sqrt(len(y)))


def control_variate_mean(
    values: Sequence[float], controls: Sequence[Sequence[float]], confidence: float = CONFIDENCE
) -> Estimate:
    """The control-variate estimate of ``E[values]``: the intercept of the least-squares
    fit ``values ≈ b0 + Σ b_j · control_j``, each control a per-replication deviation
    with known expectation 0; half-width from the intercept's standard error."""
    y = np.asarray(values, dtype=float)
    x = np.column_stack([np.ones(len(y)), *(np.asarray(c, dtype=float) for c in controls)])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    dof = len(y) - x.shape[1]
    sigma2 = float(np.sum((y - x @ coef) ** 2)) / dof
    se = math.sqrt(sigma2 * np.linalg.inv(x.T @ x)[0, 0])
    return Estimate(float(coef[0]), float(scipy_stats.t.ppf(0.5 + confidence / 2, dof)) * se)


def wait_estimate(
    runs: pd.DataFrame,
    scenario: Scenario,
    with_service_control: bool,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """The mean wait, controlled by the realised arrivals (and service times)."""
    w = scenario.workload
    expected_arrivals = scenario.offered_per_s * (w.duration_s - w.warmup_s)
    controls = [runs["arrivals"] / expected_arrivals - 1.0]
    if with_service_control:
        controls.append(runs["service_s"] / (scenario.sim.store_service_ms / 1000.0) - 1.0)
    return control_variate_mean(runs["wait_s"], controls, confidence)


# ---------------------------------------------------------------------------- scenarios


def measured_scenario(
    path: str, arrival_per_s: float, customers: int, **overrides: Any
) -> Scenario:
    """A theory file at ``arrival_per_s``, long enough to measure ``customers`` sends
    after a warm-up of 50 relaxation times (at least 1,000 sends), in whole buckets."""
    base = load_scenario(SCENARIOS / path).with_overrides(
        {k.replace("__", "."): v for k, v in overrides.items()}
    )
    w = base.workload
    users_rate = arrival_per_s / w.users
    prediction = theory_for_scenario(
        base.with_overrides({"workload.send_rate_per_user_per_s": users_rate})
    )
    warmup_s = MIN_WARMUP_SENDS / arrival_per_s
    if prediction.applies and prediction.metrics is not None:
        m = prediction.metrics
        capacity_per_s = prediction.servers / prediction.mean_service_s
        relaxation_s = 1.0 / (capacity_per_s * (1.0 - math.sqrt(m.rho)) ** 2)
        warmup_s = max(warmup_s, WARMUP_RELAXATIONS * relaxation_s)
    warm_buckets = math.ceil(warmup_s / INTERVAL_S)
    run_buckets = warm_buckets + math.ceil(customers / arrival_per_s / INTERVAL_S)
    return base.with_overrides(
        {
            "workload.send_rate_per_user_per_s": users_rate,
            "workload.warmup_s": warm_buckets * INTERVAL_S,
            "workload.duration_s": run_buckets * INTERVAL_S,
            "sim.timeseries_interval_s": INTERVAL_S,
        }
    )


def mmc_scenario(servers: int, rho: float) -> Scenario:
    """theory-mm1.toml (c = 1) or theory-mmc.toml with ``servers`` connections at ``rho``."""
    path = "theory-mm1.toml" if servers == 1 else "theory-mmc.toml"
    customers = MMC_CUSTOMERS[(servers, rho)] // WAIT_REPLICATIONS
    arrival_per_s = rho * servers * 1000.0  # E[S] = 1 ms in both files
    return measured_scenario(path, arrival_per_s, customers, server__pool__size=servers)


# ---------------------------------------------------------------------------- checks


@pytest.mark.parametrize("servers", [1, 2, 3, 8])
def test_the_wait_reconstruction_agrees_with_a_direct_fifo_simulation(servers: int) -> None:
    """Differential: the waits recovered from arrival and departure times equal those of
    the FIFO c-server recursion (Kiefer–Wolfowitz: start at the earliest free server)."""
    rng = np.random.default_rng(servers)
    sent = np.cumsum(rng.exponential(1.0 / (0.9 * servers), 20_000))
    service = rng.exponential(1.0, len(sent))
    free = [0.0] * servers
    waits = np.empty(len(sent))
    for k, (arrival, duration) in enumerate(zip(sent, service, strict=True)):
        start = max(arrival, heapq.heappop(free))
        heapq.heappush(free, start + duration)
        waits[k] = start - arrival
    assert waits.max() > 0
    np.testing.assert_allclose(fifo_waits(sent, sent + waits + service, servers), waits, atol=1e-9)


def assert_littles_law(runs: pd.DataFrame) -> None:
    """``L = λ·W`` on every replication: the time-average number of attempts in the
    system against the acked rate × the mean ack latency (rejections take no time)."""
    little = runs["acked_per_s"] * runs["ack_mean_ms"] / 1000.0
    errors = (runs["littles_l"] / little - 1.0).abs()
    assert errors.max() < LITTLE_TOLERANCE, errors.to_list()


def assert_wait_matches(runs: pd.DataFrame, scenario: Scenario, service_varies: bool) -> None:
    prediction = theory_for_scenario(scenario)
    assert prediction.applies, prediction.reason
    assert prediction.metrics is not None
    mean_service_s = prediction.mean_service_s
    # The reconstruction's guard: service times are never negative and average E[S].
    assert runs["service_min_s"].min() > -1e-9
    assert plain_mean(runs["service_s"]).mean == pytest.approx(mean_service_s, rel=0.01)
    theory_wait_s = prediction.metrics.mean_wait_s
    estimate = wait_estimate(runs, scenario, with_service_control=service_varies)
    assert abs(estimate.relative_error(theory_wait_s)) <= TOLERANCE, (estimate, theory_wait_s)
    assert estimate.covers(theory_wait_s), (estimate, theory_wait_s)
    assert_littles_law(runs)


MMC_CASES = [
    pytest.param(
        c, rho, marks=[pytest.mark.slow] if (c, rho) in SLOW_CASES else [], id=f"c{c}-rho{rho}"
    )
    for rho in (0.5, 0.8, 0.9)
    for c in (1, 2, 4, 8)
]


@pytest.mark.parametrize(("servers", "rho"), MMC_CASES)
def test_mmc_mean_wait_matches_erlang_c(servers: int, rho: float) -> None:
    scenario = mmc_scenario(servers, rho)
    runs = replications(scenario, WAIT_REPLICATIONS, servers)
    assert_wait_matches(runs, scenario, service_varies=True)


def test_md1_mean_wait_is_pollaczek_khinchine() -> None:
    scenario = measured_scenario("theory-md1.toml", 800.0, 15_000)
    runs = replications(scenario, WAIT_REPLICATIONS, servers=1)
    assert (runs["service_s"] - 0.001).abs().max() < 1e-12  # every commit takes 1 ms
    assert_wait_matches(runs, scenario, service_varies=False)


def test_a_pool_that_never_waits_blocks_as_erlang_b() -> None:
    scenario = measured_scenario("theory-erlang-b.toml", 6000.0, 30_000)
    runs = replications(scenario, SIMPLE_REPLICATIONS)
    blocking = erlang_b(8, 6.0)
    prediction = theory_for_scenario(scenario)
    assert prediction.model == "Erlang B"
    assert prediction.metrics is not None
    assert prediction.metrics.p_block == pytest.approx(blocking)
    estimate = plain_mean(runs["error_rate"])
    assert abs(estimate.relative_error(blocking)) <= TOLERANCE, (estimate, blocking)
    assert estimate.covers(blocking), (estimate, blocking)
    assert_littles_law(runs)


def test_an_overdriven_token_bucket_admits_its_rate() -> None:
    """One user offers 5× the bucket's rate; in the long run exactly ``rate_per_s`` get
    through (the burst is spent once, within the warm-up). Read throttling holds the
    connection's next frame until a refusal's retry_after, when the bucket has a token
    again: refusals alternate with admissions, the rest of the offer waits unread."""
    rate_per_s = 100.0
    scenario = measured_scenario(
        "theory-mm1.toml",
        5 * rate_per_s,
        25_000,
        workload__users=1,
        workload__rooms=1,
        workload__room_size__size=1,
        server__rate_limit__algorithm="token_bucket",
        server__rate_limit__rate_per_s=rate_per_s,
        server__rate_limit__burst=20,
    )
    runs = replications(scenario, SIMPLE_REPLICATIONS)
    assert runs["error_rate"].between(0.45, 0.55).all()  # one refused per one admitted
    admitted = plain_mean(runs["acked_per_s"])
    assert abs(admitted.relative_error(rate_per_s)) <= 0.01, admitted
    # no Little's law here: the unread backlog grows all run long (not stationary)
