"""The garbage-collector part of ``bench calibrate``: the fit on synthetic points (a known
rate and pause are recovered), the file's keys, the model's pacing rule
(:class:`sim.calibration.GcPauses`), and the probe against a real server (quick)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._support.clients import WINDOW
from bench.jobs.calibrate_fit import LONE_WINDOW, Point, gc_costs
from sim.calibration import CalibrationError, Costs, GcPauses, costs_from_data

# collections per message in a room of one, per further member, and the mean pause (µs)
PER_MSG = (0.004, 0.0004, 0.00002)
PER_MEMBER = (0.0002, 0.00002, 0.0)
PAUSE_US = (60.0, 800.0, 20_000.0)


def gc_point(room_size: int, messages: int, window: int = WINDOW) -> Point:
    """A point whose collections follow the known figures exactly."""
    counts = tuple(
        messages * (a + b * (room_size - 1)) for a, b in zip(PER_MSG, PER_MEMBER, strict=True)
    )
    return Point(
        "json",
        room_size,
        0,
        messages,
        messages * (room_size - 1),
        100.0,
        0.9,
        90.0,
        window=window,
        gc_collections=counts,
        gc_pause_s=tuple(c * us / 1e6 for c, us in zip(counts, PAUSE_US, strict=True)),
    )


def test_the_fit_recovers_known_rates_and_pauses() -> None:
    points = [gc_point(1, 30_000), gc_point(2, 15_000), gc_point(21, 5_000)]
    per_msg, per_member, pause_us = gc_costs(points)
    assert per_msg == pytest.approx(PER_MSG, rel=1e-9)
    assert per_member == pytest.approx(PER_MEMBER, rel=1e-9, abs=1e-12)
    assert pause_us == pytest.approx(PAUSE_US, rel=1e-9)


def test_lone_points_and_points_without_collections_stay_out() -> None:
    lone = gc_point(21, 3000, window=LONE_WINDOW)
    odd = Point("json", 21, 0, 3000, 60_000, 1.0, 1.0, 1.0, gc_collections=(900.0, 0.0, 0.0))
    odd = Point(**{**odd.__dict__, "window": LONE_WINDOW})
    points = [gc_point(1, 30_000), gc_point(2, 15_000), lone, odd]
    assert gc_costs(points)[0] == pytest.approx(PER_MSG, rel=1e-9)
    # no point counted a collection (or none was scraped): no figures at all
    assert gc_costs([Point("json", 1, 0, 10, 0, 1.0, 1.0, 1.0)]) == ((), (), ())


def test_a_rate_that_falls_with_the_room_is_the_mean_without_a_slope() -> None:
    a = gc_point(1, 10_000)
    b = gc_point(21, 10_000)
    fewer = Point(**{**b.__dict__, "gc_collections": (20.0, 2.0, 0.0)})
    per_msg, per_member, _ = gc_costs([a, fewer])
    assert per_member[0] == 0.0
    assert per_msg[0] == pytest.approx((a.gc_collections[0] / 10_000 + 20 / 10_000) / 2)


def test_the_pacing_spaces_pauses_by_the_rate_and_returns_the_mean() -> None:
    pacing = GcPauses((0.25, 0.025, 0.0), (0.0, 0.0, 0.0), (100.0, 1000.0, 0.0))
    due = GcPauses.new_due()  # half a collection due each
    pauses = [pacing.charge(due, members=3) for _ in range(40)]
    # generation 0: a quarter per message → 10 collections in 40 messages; generation 1:
    # 1 (0.5 + 40 × 0.025 = 1.5)
    total = sum(p for p, _ in pauses)
    assert total == pytest.approx(10 * 100e-6 + 1 * 1000e-6)
    assert {round(m, 12) for _, m in pauses} == {round(0.25 * 100e-6 + 0.025 * 1000e-6, 12)}
    crossing = [k for k, (p, _) in enumerate(pauses) if p > 0]
    assert crossing[:3] == [1, 5, 9]  # 0.5 + 2 × 0.25 = 1: the 2nd message, then every 4th


def test_members_add_their_share_of_collections() -> None:
    pacing = GcPauses((0.1, 0.0, 0.0), (0.05, 0.0, 0.0), (50.0, 0.0, 0.0))
    rates, mean = pacing.rates(members=8)
    assert rates[0] == pytest.approx(0.1 + 0.05 * 8)
    assert mean == pytest.approx(0.5 * 50e-6)


def test_the_phase_comes_from_the_source_given() -> None:
    values = iter([0.1, 0.7, 0.3])
    assert GcPauses.new_due(lambda: next(values)) == [0.1, 0.7, 0.3]


@pytest.mark.parametrize(
    "args",
    [
        ((0.1,), (0.0,), ()),  # no pause figures
        ((0.1, 0.0), (0.0,), (1.0, 2.0)),  # per_recipient of another length
        ((-0.1,), (), (1.0,)),  # negative
        ((float("nan"),), (), (1.0,)),
    ],
)
def test_bad_figures_are_refused(args: tuple[tuple[float, ...], ...]) -> None:
    with pytest.raises(ValueError, match="GcPauses"):
        GcPauses(*args)


def test_the_file_keeps_the_figures_and_checks_them(tmp_path: Path) -> None:
    costs = Costs(
        gc_pauses_per_msg=PER_MSG, gc_pauses_per_recipient=PER_MEMBER, gc_pause_us=PAUSE_US
    )
    data = costs.to_json()
    assert data["gc_pause_us"] == list(PAUSE_US)
    back = costs_from_data(json.loads(json.dumps(data)))
    assert back.gc_pauses_per_msg == PER_MSG and back.gc_pause_us == PAUSE_US
    for bad in ([1.0, 2.0], [1.0, -2.0, 3.0], "many", [1.0, True, 2.0]):
        with pytest.raises(CalibrationError, match="gc_pause_us"):
            costs_from_data({**data, "gc_pause_us": bad}, "f.json")
    # zero CPU (theory) drops the pauses
    assert costs.zero_cpu().gc_pause_us == ()
