"""The cold-path part of ``bench calibrate``: the fit on synthetic probe points, the file's
key, and the probe itself against a real server (quick)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench.jobs.calibrate_fit import (
    COLD_GAPS_MS,
    COLD_ROOM,
    FANOUT_AWAKE_GAP_MS,
    FULL,
    QUICK,
    ColdPoint,
    cold_messages,
    cold_penalty_us_by_gap_ms,
    cold_summary,
    fanout_us_by_gap_ms,
)
from sim.calibration import CalibrationError, ColdPath, Costs, costs_from_data, load_costs

# a known penalty curve (µs by idle gap, ms) on top of a 150 µs warm path
KNOWN = {0.0: 0.0, 0.1: 2.0, 0.3: 10.0, 1.0: 40.0, 3.0: 90.0, 10.0: 180.0, 30.0: 300.0}
WARM_MS = 0.150


def probe_points(noise: tuple[float, ...] = (0.0, 0.03, -0.03)) -> list[ColdPoint]:
    """Three repeats of the probe whose server means follow KNOWN; repeat r adds
    ``noise[r]`` ms to every gap's mean (one repeat high, one low: the median is exact)."""
    return [
        ColdPoint(
            gap_ms=gap,
            repeat=r,
            messages=100,
            server_ack_mean_ms=WARM_MS + us / 1000.0 + noise[r],
            rtt_p50_ms=0.2 + 2 * us / 1000.0,
            rtt_mean_ms=0.21 + 2 * us / 1000.0,
            cpu_us_per_msg=120.0 + us / 2,
        )
        for r in range(len(noise))
        for gap, us in KNOWN.items()
    ]


def test_the_fit_recovers_a_known_penalty_curve() -> None:
    fitted = cold_penalty_us_by_gap_ms(probe_points())
    assert set(fitted) == set(KNOWN)
    for gap, us in KNOWN.items():
        assert fitted[gap] == pytest.approx(us, abs=1e-6), gap


def test_the_penalty_is_relative_to_back_to_back_and_never_negative() -> None:
    points = probe_points(noise=(0.0,))
    # a gap whose mean came out below the back-to-back one: 0, not a negative penalty
    points = [replace(p, server_ack_mean_ms=0.1) if p.gap_ms == 0.3 else p for p in points]
    fitted = cold_penalty_us_by_gap_ms(points)
    assert fitted[0.0] == 0.0 and fitted[0.3] == 0.0 and fitted[30.0] == pytest.approx(300.0)


def test_one_gap_is_no_curve() -> None:
    assert cold_penalty_us_by_gap_ms([p for p in probe_points() if p.gap_ms == 1.0]) == {}


def test_the_summary_gives_every_gaps_medians() -> None:
    summary = cold_summary(probe_points())
    assert list(summary) == [f"{g:g}" for g in COLD_GAPS_MS]
    assert summary["30"]["rtt_p50_ms"] == pytest.approx(0.2 + 0.6)
    assert summary["0"]["cpu_us_per_msg"] == pytest.approx(120.0)


def test_the_probe_sends_about_the_planned_time_per_gap_within_bounds() -> None:
    assert cold_messages(0.0, FULL) == FULL.cold_max_messages  # 3,000 would be too many
    assert cold_messages(30.0, FULL) == int(1500 / 30.5)
    assert cold_messages(1000.0, FULL) == FULL.cold_min_messages
    assert QUICK.cold_max_messages < FULL.cold_max_messages


def test_the_curve_interpolates_between_gaps_and_is_flat_outside() -> None:
    curve = ColdPath(KNOWN)
    assert curve.penalty_s(0.0) == 0.0
    assert curve.penalty_s(0.002) == pytest.approx(65e-6)  # halfway from 1 to 3 ms
    assert curve.penalty_s(5.0) == pytest.approx(300e-6) == curve.max_s
    # a dip is noise: the curve never falls as the gap grows
    dipped = ColdPath({0.0: 0.0, 1.0: 50.0, 3.0: 20.0, 10.0: 80.0})
    assert dipped.penalty_s(0.003) == pytest.approx(50e-6)
    with pytest.raises(ValueError, match="at least one"):
        ColdPath({})
    with pytest.raises(ValueError, match="finite"):
        ColdPath({1.0: -5.0})


def test_the_file_keeps_the_curve_and_checks_it(tmp_path: Path) -> None:
    costs = Costs(cold_penalty_us_by_gap_ms=dict(KNOWN))
    data = costs.to_json()
    table = data["cold_penalty_us_by_gap_ms"]
    assert table["0.3"] == 10.0 and "0" in table and "0.0" not in table
    assert costs_from_data(json.loads(json.dumps(data))).cold_penalty_us_by_gap_ms == KNOWN
    path = tmp_path / "cal.json"
    path.write_text('{"cold_penalty_us_by_gap_ms": {"soon": 3}}')
    with pytest.raises(CalibrationError, match=r"cold_penalty_us_by_gap_ms: key 'soon'"):
        load_costs(path)
    path.write_text('{"cold_penalty_us_by_gap_ms": {"-1": 3}}')
    with pytest.raises(CalibrationError, match=r"gap '-1' must be"):
        load_costs(path)
    path.write_text('{"cold_penalty_us_by_gap_ms": [1, 2]}')
    with pytest.raises(CalibrationError, match="must be an object"):
        load_costs(path)
    assert Costs().cold_penalty_us_by_gap_ms == {}  # no curve: no penalty
    assert costs.zero_cpu().cold_penalty_us_by_gap_ms == {}


def test_checkpoint_stalls_are_the_commits_far_over_the_median() -> None:
    from bench.jobs.calibrate_fit import checkpoint_stalls

    # 300 commits of 4 rows at 0.05 ms, every 60th a 3 ms checkpoint
    commits = [3.05 if (i + 1) % 60 == 0 else 0.05 for i in range(300)]
    every, stall = checkpoint_stalls(commits, 4)
    assert every == pytest.approx(300 * 4 / 5)  # 5 stalls in 1,200 rows
    assert stall == pytest.approx(3.0)
    assert checkpoint_stalls([0.05] * 100, 4) == (0.0, 0.0)
    assert checkpoint_stalls([], 4) == (0.0, 0.0)


# a known cold fan-out: µs per frame by idle gap (ms), on a room of COLD_ROOM
KNOWN_FAN = {0.0: 6.0, 0.1: 6.5, 0.3: 7.0, 1.0: 7.5, 3.0: 8.0, 10.0: 9.5, 30.0: 10.0}
ENCODE_US = 0.2


def fan_points() -> list[ColdPoint]:
    frames = COLD_ROOM - 1
    return [
        ColdPoint(
            gap_ms=gap,
            repeat=r,
            messages=100,
            server_ack_mean_ms=0.3,
            rtt_p50_ms=0.4,
            rtt_mean_ms=0.4,
            cpu_us_per_msg=200.0,
            room_size=COLD_ROOM,
            fanout_stage_ms=(ENCODE_US + frames * us) / 1000.0 + noise,
        )
        for r, noise in enumerate((0.0, 0.002, -0.002))
        for gap, us in KNOWN_FAN.items()
    ]


def test_the_fan_out_fit_recovers_a_known_per_frame_curve() -> None:
    fitted = fanout_us_by_gap_ms(fan_points() + probe_points(), ENCODE_US)
    assert set(fitted) == set(KNOWN_FAN)
    for gap, us in KNOWN_FAN.items():
        assert fitted[gap] == pytest.approx(us, abs=1e-9), gap
    # the echo's penalty ignores the fan-out points, and the other way round
    assert cold_penalty_us_by_gap_ms(fan_points() + probe_points()) == pytest.approx(
        cold_penalty_us_by_gap_ms(probe_points())
    )
    assert fanout_us_by_gap_ms(probe_points(), ENCODE_US) == {}
    assert set(cold_summary(fan_points() + probe_points())) == {f"{g:g}" for g in KNOWN}


def test_the_file_keeps_the_fan_out_curve(tmp_path: Path) -> None:
    costs = Costs(fanout_us_by_gap_ms=dict(KNOWN_FAN))
    data = json.loads(json.dumps(costs.to_json()))
    assert data["fanout_us_by_gap_ms"]["10"] == 9.5
    assert costs_from_data(data).fanout_us_by_gap_ms == KNOWN_FAN
    with pytest.raises(CalibrationError, match="fanout_us_by_gap_ms"):
        costs_from_data({**data, "fanout_us_by_gap_ms": {"1": -3.0}})


def test_busy_readers_stand_at_gap_zero_below_the_awake_gap() -> None:
    """The probe's readers sleep between messages even back-to-back; a generator's at
    such rates do not: below FANOUT_AWAKE_GAP_MS the busy readers' cost stands at 0."""
    fitted = fanout_us_by_gap_ms(fan_points(), ENCODE_US, busy_us=2.0)
    assert fitted[0.0] == 2.0
    assert all(g == 0.0 or g >= FANOUT_AWAKE_GAP_MS for g in fitted)
    assert fitted[10.0] == pytest.approx(KNOWN_FAN[10.0])
