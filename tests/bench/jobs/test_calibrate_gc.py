"""The garbage-collector part of ``bench calibrate``: the fit on synthetic points (a known
rate and pause are recovered), the file's keys, the model's pacing rule
(:class:`sim.calibration.GcPauses`), and the probe against a real server (quick)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench._support.clients import WINDOW
from bench.jobs.calibrate_fit import LONE_WINDOW, GcFigures, Point, gc_costs
from sim.calibration import CalibrationError, Costs, GcPauses, costs_from_data

# collections per message in a room of one, per further member, and the mean pause (µs)
PER_MSG = (0.004, 0.0004, 0.00002)
PER_MEMBER = (0.0002, 0.00002, 0.0)
PAUSE_US = (60.0, 800.0, 20_000.0)
PER_CONNECTION_US = (0.0, 0.2, 10.0)  # a pause grows with the heap the connections hold


def gc_point(room_size: int, messages: int, window: int = WINDOW, crowd: int = 0) -> Point:
    """A point whose collections follow the known figures exactly, ``crowd`` idle
    connections held (the load's own WINDOW connections count too)."""
    counts = tuple(
        messages * (a + b * (room_size - 1)) for a, b in zip(PER_MSG, PER_MEMBER, strict=True)
    )
    pauses = tuple(
        us + c * (crowd + WINDOW) for us, c in zip(PAUSE_US, PER_CONNECTION_US, strict=True)
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
        gc_pause_s=tuple(c * us / 1e6 for c, us in zip(counts, pauses, strict=True)),
        crowd=crowd,
    )


def test_the_fit_recovers_known_rates_and_pauses() -> None:
    points = [
        gc_point(k, n, crowd=c)
        for k, n in ((1, 30_000), (2, 15_000), (21, 5_000))
        for c in (0, 1000)
    ]
    fig = gc_costs(points)
    assert fig.per_msg == pytest.approx(PER_MSG, rel=1e-9)
    assert fig.per_recipient == pytest.approx(PER_MEMBER, rel=1e-9, abs=1e-12)
    assert fig.pause_us == pytest.approx(PAUSE_US, rel=1e-9)
    assert fig.pause_us_per_connection == pytest.approx(PER_CONNECTION_US, rel=1e-9, abs=1e-12)
    assert fig.per_msg_full == () and fig.per_recipient_full == ()  # no full-table point


def test_the_full_tables_rates_come_from_its_own_points() -> None:
    """Once the idempotency table is full the heap stops growing: a tenth of the
    collections, fitted apart; the filling rates stay those of the filling points."""
    filling = [gc_point(k, n, crowd=1000) for k, n in ((1, 30_000), (2, 15_000), (21, 5_000))]
    full = []
    for p in filling:
        counts = tuple(c / 10 for c in p.gc_collections)
        pause_s = tuple(s / 10 for s in p.gc_pause_s)  # the same pause per collection
        full.append(replace(p, gc_collections=counts, gc_pause_s=pause_s, table_full=True))
    fig = gc_costs(filling + full)
    assert fig.per_msg == pytest.approx(PER_MSG, rel=1e-9)
    assert fig.per_msg_full == pytest.approx([a / 10 for a in PER_MSG], rel=1e-9)
    assert fig.per_recipient_full == pytest.approx([b / 10 for b in PER_MEMBER], abs=1e-12)


def test_one_crowd_alone_gives_its_mean_pause_and_no_growth() -> None:
    points = [gc_point(1, 30_000, crowd=500), gc_point(2, 15_000, crowd=500)]
    fig = gc_costs(points)
    assert fig.pause_us == pytest.approx(
        [us + c * (500 + WINDOW) for us, c in zip(PAUSE_US, PER_CONNECTION_US, strict=True)]
    )
    assert fig.pause_us_per_connection == (0.0, 0.0, 0.0)


def test_lone_points_and_points_without_collections_stay_out() -> None:
    lone = gc_point(21, 3000, window=LONE_WINDOW)
    odd = Point("json", 21, 0, 3000, 60_000, 1.0, 1.0, 1.0, gc_collections=(900.0, 0.0, 0.0))
    odd = Point(**{**odd.__dict__, "window": LONE_WINDOW})
    points = [gc_point(1, 30_000), gc_point(2, 15_000), lone, odd]
    assert gc_costs(points).per_msg == pytest.approx(PER_MSG, rel=1e-9)
    # no point counted a collection (or none was scraped): no figures at all
    assert gc_costs([Point("json", 1, 0, 10, 0, 1.0, 1.0, 1.0)]) == GcFigures()


def test_a_rate_that_falls_with_the_room_is_the_mean_without_a_slope() -> None:
    a = gc_point(1, 10_000)
    b = gc_point(21, 10_000)
    fewer = Point(**{**b.__dict__, "gc_collections": (20.0, 2.0, 0.0)})
    fig = gc_costs([a, fewer])
    assert fig.per_recipient[0] == 0.0
    assert fig.per_msg[0] == pytest.approx((a.gc_collections[0] / 10_000 + 20 / 10_000) / 2)


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


def test_a_pause_grows_with_the_loops_connections() -> None:
    alone = GcPauses((1.0, 0.0, 0.0), (), (100.0, 0.0, 0.0), (0.5, 0.0, 0.0))
    crowded = GcPauses((1.0, 0.0, 0.0), (), (100.0, 0.0, 0.0), (0.5, 0.0, 0.0), connections=1000)
    assert alone.charge(GcPauses.new_due(), 0) == pytest.approx((100e-6, 100e-6))
    assert crowded.charge(GcPauses.new_due(), 0) == pytest.approx((600e-6, 600e-6))
    with pytest.raises(ValueError, match="connections"):
        GcPauses((1.0,), (), (1.0,), connections=-1)


def test_the_phase_comes_from_the_source_given() -> None:
    values = iter([0.1, 0.7, 0.3])
    assert GcPauses.new_due(lambda: next(values)) == [0.1, 0.7, 0.3]


@pytest.mark.parametrize(
    "args",
    [
        ((0.1,), (0.0,), ()),  # no pause figures
        ((0.1, 0.0), (0.0,), (1.0, 2.0)),  # per_recipient of another length
        ((-0.1,), (), (1.0,)),  # negative
        ((0.1,), (), (1.0,), (1.0, 2.0)),  # per_connection of another length
        ((float("nan"),), (), (1.0,)),
    ],
)
def test_bad_figures_are_refused(args: tuple[tuple[float, ...], ...]) -> None:
    with pytest.raises(ValueError, match="GcPauses"):
        GcPauses(*args)


def test_the_file_keeps_the_figures_and_checks_them(tmp_path: Path) -> None:
    costs = Costs(
        gc_pauses_per_msg=PER_MSG,
        gc_pauses_per_recipient=PER_MEMBER,
        gc_pause_us=PAUSE_US,
        gc_pause_us_per_connection=PER_CONNECTION_US,
    )
    data = costs.to_json()
    assert data["gc_pause_us"] == list(PAUSE_US)
    back = costs_from_data(json.loads(json.dumps(data)))
    assert back.gc_pauses_per_msg == PER_MSG and back.gc_pause_us == PAUSE_US
    assert back.gc_pause_us_per_connection == PER_CONNECTION_US
    for bad in ([1.0, 2.0], [1.0, -2.0, 3.0], "many", [1.0, True, 2.0]):
        with pytest.raises(CalibrationError, match="gc_pause_us"):
            costs_from_data({**data, "gc_pause_us": bad}, "f.json")
    # zero CPU (theory) drops the pauses
    assert costs.zero_cpu().gc_pause_us == ()


def test_the_file_keeps_the_collectors_thresholds_and_checks_them() -> None:
    """``gc_thresholds``: three whole numbers ≥ 1 (``gc.get_threshold()``) or none; a
    bad value is refused with the key and the value named."""
    costs = Costs(gc_pauses_per_msg=PER_MSG, gc_pause_us=PAUSE_US, gc_thresholds=(700, 10, 10))
    data = json.loads(json.dumps(costs.to_json()))
    assert data["gc_thresholds"] == [700, 10, 10]
    assert costs_from_data(data).gc_thresholds == (700, 10, 10)
    assert costs_from_data({**data, "gc_thresholds": []}).gc_thresholds == ()
    assert Costs().gc_thresholds == ()  # an older file: each generation at its own rate
    for bad in ([700, 10], [700, 0, 10], [700, 10.5, 10], [700, True, 10], "700,10,10"):
        with pytest.raises(CalibrationError, match=r"f\.json: gc_thresholds = .*gc\.get_threshold"):
            costs_from_data({**data, "gc_thresholds": bad}, "f.json")


def test_the_calibration_takes_the_thresholds_the_server_runs_with() -> None:
    """The server's interpreter is this one and never sets its own thresholds, so the
    calibration's ``gc.get_threshold()`` is the server's."""
    import gc

    from bench.jobs.calibrate_fit import server_gc_thresholds

    assert server_gc_thresholds() == tuple(gc.get_threshold())
    root = Path(__file__).resolve().parents[3] / "server"
    setters = [
        str(path.relative_to(root.parent))
        for path in sorted(root.rglob("*.py"))
        if "set_threshold" in path.read_text() or "gc.freeze" in path.read_text()
    ]
    assert setters == [], "the server tunes its collector: calibrate must read its thresholds"


def active_point(room_size: int, messages: int, connections: int) -> Point:
    """A load-shaped point (``Point.active``): ``connections`` of its own, all sending,
    collecting twice as often as the known rates say and pausing as a server of
    ``connections`` would by the known figures with the per-connection growth doubled."""
    base = gc_point(room_size, messages)
    counts = tuple(2 * c for c in base.gc_collections)
    pauses = tuple(
        us + 2 * c * connections for us, c in zip(PAUSE_US, PER_CONNECTION_US, strict=True)
    )
    pause_s = tuple(n * us / 1e6 for n, us in zip(counts, pauses, strict=True))
    return replace(base, gc_collections=counts, gc_pause_s=pause_s, crowd=connections, active=True)


def test_load_shaped_points_set_the_rates_and_the_pauses_growth() -> None:
    """With ``active`` points (many connections in rooms, all sending) the filling rates
    are theirs alone, and the pause's line runs from the server alone (its own WINDOW
    connections) to theirs (their own connections, no WINDOW added); the idle crowd's
    points still give the full table's rates."""
    alone = [gc_point(k, n) for k, n in ((1, 30_000), (2, 15_000), (21, 5_000))]
    crowd = [gc_point(k, n, crowd=1000) for k, n in ((1, 30_000), (2, 15_000))]
    full = [replace(p, table_full=True) for p in crowd]
    active = [active_point(2, 20_000, 1000), active_point(10, 20_000, 1000)]
    fig = gc_costs(alone + crowd + full + active)
    assert fig.per_msg == pytest.approx([2 * a for a in PER_MSG], rel=1e-9)
    assert fig.per_recipient == pytest.approx([2 * b for b in PER_MEMBER], rel=1e-9, abs=1e-12)
    # the line through (WINDOW, alone's pause) and (1000, the active points' pause)
    for g, (us, c) in enumerate(zip(PAUSE_US, PER_CONNECTION_US, strict=True)):
        at_window, at_1000 = us + c * WINDOW, us + 2 * c * 1000
        slope = (at_1000 - at_window) / (1000 - WINDOW)
        assert fig.pause_us_per_connection[g] == pytest.approx(slope, rel=1e-9, abs=1e-12)
        assert fig.pause_us[g] == pytest.approx(at_window - slope * WINDOW, rel=1e-9, abs=1e-9)
    assert fig.per_msg_full == pytest.approx(PER_MSG, rel=1e-9)
    # without them, as before: the idle crowd's points
    assert gc_costs(alone + crowd).per_msg == pytest.approx(PER_MSG, rel=1e-9)


def test_the_load_shaped_points_rooms_are_pairs_and_the_scenarios_own() -> None:
    from bench.jobs.calibrate import gc_room_sizes
    from chatcap.scenario import load_scenario

    root = Path(__file__).resolve().parents[3]
    base = load_scenario(root / "scenarios" / "baseline.toml")
    assert gc_room_sizes(base) == (2, base.workload.room_size.size)
    uniform = base.with_overrides(
        {"workload.room_size.distribution": "uniform", "workload.room_size.min": 4,
         "workload.room_size.max": 20}
    )  # fmt: skip
    assert gc_room_sizes(uniform) == (2, 12)
    pairs = base.with_overrides({"workload.room_size.size": 2})
    assert gc_room_sizes(pairs) == (2,)
