"""The background part of ``bench calibrate``: idle CPU, keepalive pings, /metrics scrapes."""

from __future__ import annotations

import pytest

from bench.jobs.calibrate_fit import BackgroundProbe, background_costs

PROBE = BackgroundProbe(
    base_s=1.0,
    base_cpu_s=0.002,  # 2,000 µs/s with nothing to do
    connections=200,
    hold_s=2.0,
    hold_cpu_s=0.004 + 1600 * 25e-6,  # the base's 4 ms + 1,600 pings of 25 µs
    ping_interval_s=0.25,
    scrapes=20,
    scrape_s=0.1,
    scrape_cpu_s=0.0002 + 20 * 1.5e-3,  # the base's 0.2 ms + 20 scrapes of 1.5 ms
)


def test_the_figures_come_out_of_a_known_probe_exactly() -> None:
    base, ping, scrape = background_costs(PROBE)
    assert base == pytest.approx(2000.0)
    assert ping == pytest.approx(25.0)
    assert scrape == pytest.approx(1500.0)


def test_a_base_noisier_than_the_hold_gives_zero_not_a_negative_cost() -> None:
    quiet = BackgroundProbe(1.0, 0.01, 10, 1.0, 0.001, 0.25, 5, 0.05, 0.0001)
    base, ping, scrape = background_costs(quiet)
    assert base == pytest.approx(10_000.0) and ping == 0.0 and scrape == 0.0
