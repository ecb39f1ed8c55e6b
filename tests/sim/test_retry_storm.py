"""The retry storm as a test: a short store latency spike leaves impatient clients that
retry hard (no jitter, no budget) in a metastable failure, and the same spike with
backoff, full jitter and a retry budget recovers at once.

The mechanism (``scenarios/retry-storm.toml`` has the numbers). The server's loop has
headroom for the offered load (30 % busy) but not for that load times eight. A 3 s
spike of store latency makes acks arrive after the 300 ms ack timeout, so clients
retry. The server still does the work of every attempt — decoding it, joining it to
the write already queued, acking it — whether or not its client is still listening,
and a message whose attempts all time out sends eight of them. At that rate the loop
needs ~2.5 s of work per second: its backlog grows past the ack timeout, so every ack
comes too late, every message is retried to the end, and the load stays multiplied.
When the spike ends the store is fast again, but nothing changes: the retries alone
sustain the overload (Bronson et al., "Metastable Failures in Distributed Systems",
HotOS 2021). Backoff and jitter spread the retries out but do not make them fewer;
the budget (retries ≤ 20 % of requests + 10/s) caps the amplification at ~1.2×, the
loop never builds a backlog, and the first commits after the spike are acked in time.

Goodput: messages acked per second, counted when the client gets the ack. A client
stops at its first ack, so each message is acked once at most, and this is the model's
time series ``acked_per_s``; the offered load is ``offered_per_s`` (first attempts).
Measured over t ∈ (25 s, 40 s], from 12 s after the spike ended to the end of the run.
Observed (seed 3): the storm's goodput is 0 % of the offered load there, with
the loop saturated and ~8 attempts per message; the fixed clients get 100 %, with
~1.0 attempt per message; both served 100 % before the spike. The thresholds (storm
< 50 %, fixed > 90 %) leave a wide margin on either side.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import sim
from chatcap.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
BEFORE = (5.0, 10.0)  # the measured window before the spike (time-series rows t_s ∈ (a, b])
WELL_AFTER = (25.0, 40.0)  # 12 s after the spike (10 s → 13 s) ended, to the run's end


def storm() -> Scenario:
    return load_scenario(SCENARIOS / "retry-storm.toml")


def fixed() -> Scenario:
    return load_scenario(SCENARIOS / "retry-storm-fixed.toml")


def window(ts: pd.DataFrame, bounds: tuple[float, float]) -> pd.DataFrame:
    return ts[(ts["t_s"] > bounds[0]) & (ts["t_s"] <= bounds[1])]


def goodput_share(ts: pd.DataFrame, bounds: tuple[float, float]) -> float:
    """Messages acked per second over messages offered per second, in the window."""
    rows = window(ts, bounds)
    return float(rows["acked_per_s"].sum() / rows["offered_per_s"].sum())


def attempts_per_message(ts: pd.DataFrame, bounds: tuple[float, float]) -> float:
    rows = window(ts, bounds)
    return float(rows["sent_per_s"].sum() / rows["offered_per_s"].sum())


@pytest.fixture(scope="module")
def storm_series() -> pd.DataFrame:
    return sim.run(storm()).timeseries


@pytest.fixture(scope="module")
def fixed_series() -> pd.DataFrame:
    return sim.run(fixed()).timeseries


def test_the_two_files_differ_only_in_the_clients_retry_policy() -> None:
    def without_retries(s: Scenario) -> dict[str, object]:
        data = s.to_dict()
        del data["name"], data["description"], data["server"]["store"]["path"]
        del data["client"]["retry"], data["client"]["retry_budget"]
        return data

    assert without_retries(storm()) == without_retries(fixed())
    assert (storm().client.retry.jitter, storm().client.retry_budget.kind) == ("none", "none")
    assert (fixed().client.retry.jitter, fixed().client.retry_budget.kind) == ("full", "ratio")


def test_both_serve_the_offered_load_before_the_spike(
    storm_series: pd.DataFrame, fixed_series: pd.DataFrame
) -> None:
    assert goodput_share(storm_series, BEFORE) > 0.97
    assert goodput_share(fixed_series, BEFORE) > 0.97
    assert window(storm_series, BEFORE)["loop_util_p0"].max() < 0.5  # headroom


def test_aggressive_retries_keep_goodput_low_long_after_the_spike(
    storm_series: pd.DataFrame,
) -> None:
    assert goodput_share(storm_series, WELL_AFTER) < 0.5
    # the store is fast again and the writer keeps up (never a full batch waiting); the
    # loop is saturated by attempts that will time out
    after = window(storm_series, WELL_AFTER)
    assert after["queue_depth"].max() < storm().server.store.batch_max
    assert after["loop_util_p0"].min() > 0.95
    assert attempts_per_message(storm_series, WELL_AFTER) > 4


def test_backoff_jitter_and_a_budget_recover_soon_after_the_spike(
    fixed_series: pd.DataFrame,
) -> None:
    assert goodput_share(fixed_series, WELL_AFTER) > 0.9
    assert attempts_per_message(fixed_series, WELL_AFTER) < 1.1
    # back within a second or two of the spike's end (13 s): every 1 s bucket after 14 s
    recovered = window(fixed_series, (14.0, 40.0))
    assert (recovered["acked_per_s"] > 0.9 * recovered["offered_per_s"]).all()


def test_backoff_and_jitter_without_a_budget_do_not_recover() -> None:
    """Jitter spreads the retries out but does not make them fewer: without the budget a
    message whose attempts all time out still sends eight, and the storm holds."""
    no_budget = fixed().with_overrides({"client.retry_budget.kind": "none"})
    ts = sim.run(no_budget).timeseries
    assert goodput_share(ts, WELL_AFTER) < 0.5
