"""Per-second series of what the chat users saw (bench.load.series) and their merge.

Events are stamped with the users' monotonic clock and must land in the wall-clock
second they happened in, whatever the two clocks' offset; the series of several
processes add up second by second on the wall clock, and a merged ``--chat-out``
document carries them (no Locust needed: the users' counting is checked in a real run
in test_locust_runs.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.load.report import ProcessStats, merge_parts
from bench.load.series import SERIES_KEYS, SecondSeries, merge_series

NS = 1_000_000_000


def test_events_land_in_the_wall_clock_second_they_happened_in() -> None:
    # started at Unix 1000.4 s, when the event clock read 5 s: origin 1000, and the
    # event clock's 5.6 s is Unix 1001.0, the start of second 1
    series = SecondSeries(1000.4, 5 * NS)
    assert series.origin_unix_s == 1000
    for now_ns in (5 * NS, 5_599_999_999, 5_600_000_000, 6_599_999_999, 8_100_000_000):
        series.add("attempts", now_ns)
    assert [series.second(t) for t in (5 * NS, 5_600_000_000, 8_100_000_000)] == [0, 1, 3]
    series.add("attempts", 4 * NS)  # before the origin (cannot happen): the first second
    assert series.counts["attempts"] == [3, 2, 0, 1]


def test_without_an_event_clock_events_are_unix_nanoseconds() -> None:
    series = SecondSeries(1000.4)
    series.add("sent", 1000_500_000_000)
    series.add("sent", 1002_000_000_000, 3)
    assert series.counts["sent"] == [1, 0, 3]


def test_a_part_pads_every_list_to_the_last_second_with_an_event() -> None:
    series = SecondSeries(50.0)
    series.add("sent", 50 * NS)
    series.add("goodput", 52 * NS + 1)
    series.add_error("overloaded", 53 * NS, 2)
    series.add_error("unavailable", 50 * NS)
    part = series.part()
    assert part["origin_unix_s"] == 50 and part["step_s"] == 1 and part["seconds"] == 4
    keys = {"origin_unix_s", "step_s", "seconds", "stopping_unix_s", "errors", *SERIES_KEYS}
    assert set(part) == keys and part["stopping_unix_s"] is None  # not told to stop
    assert part["sent"] == [1, 0, 0, 0] and part["goodput"] == [0, 0, 1, 0]
    assert part["timeouts"] == [0, 0, 0, 0]
    assert part["errors"] == {"overloaded": [0, 0, 0, 2], "unavailable": [1, 0, 0, 0]}
    assert SecondSeries(50.0).part()["seconds"] == 0  # nothing happened: empty lists


def test_a_bad_start_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"started_unix_s = nan: must be a finite time"):
        SecondSeries(float("nan"))


def part_at(started_unix_s: float, events: dict[str, list[float]]) -> dict[str, Any]:
    """A part whose events (kind → Unix times, s) were stamped in Unix nanoseconds."""
    series = SecondSeries(started_unix_s)
    for key, times in events.items():
        for t in times:
            if key.startswith("error "):
                series.add_error(key.removeprefix("error "), round(t * NS))
            else:
                series.add(key, round(t * NS))
    return series.part()


def test_parts_add_up_second_by_second_on_the_wall_clock() -> None:
    early = part_at(100.7, {"sent": [100.8, 101.2, 103.5], "error overloaded": [101.0]})
    late = part_at(101.9, {"sent": [102.0, 103.1], "goodput": [104.5], "error closed": [102.5]})
    merged = merge_series([early, None, late], started_unix_s=100.7)
    assert merged is not None
    assert merged["origin_unix_s"] == 100 and merged["seconds"] == 5
    assert merged["sent"] == [1, 1, 1, 2, 0]  # late's second 0 is the run's second 2
    assert merged["goodput"] == [0, 0, 0, 0, 1]
    assert merged["errors"] == {"closed": [0, 0, 1, 0, 0], "overloaded": [0, 1, 0, 0, 0]}
    # each second's end, from the document's start: row t_s covers (t_s − 1, t_s]
    assert merged["t_s"] == [0.3, 1.3, 2.3, 3.3, 4.3]
    for key in SERIES_KEYS:
        assert sum(merged[key]) == sum(early[key]) + sum(late[key])


def test_the_stop_is_when_the_first_process_was_told_to_stop() -> None:
    one, two, never = SecondSeries(10.0), SecondSeries(10.5), SecondSeries(10.2)
    one.stopping(20.5)
    one.stopping(21.0)  # a second stop request: the first one counts
    two.stopping(20.25)
    assert one.part()["stopping_unix_s"] == 20.5
    merged = merge_series([one.part(), two.part(), never.part()])
    assert merged is not None and merged["stopping_unix_s"] == 20.25
    lone = merge_series([never.part()])
    assert lone is not None and lone["stopping_unix_s"] is None


def test_no_part_with_a_series_merges_to_none_and_other_steps_are_refused() -> None:
    assert merge_series([None, {}]) is None
    odd = {**part_at(10.0, {"sent": [10.5]}), "step_s": 5}
    with pytest.raises(ValueError, match=r"series step_s = 5: only 1 s is supported"):
        merge_series([odd])


def test_process_stats_carry_the_series_into_the_merged_document() -> None:
    one = ProcessStats(1000.25, 0.0, started_ns=0)  # event clock 0 = Unix 1000.25
    two = ProcessStats(1001.5, 0.0, started_ns=7 * NS)  # another process, another clock
    for stats, at_ns in ((one, [0, NS, 2 * NS]), (two, [7 * NS, 8 * NS])):
        for t in at_ns:
            stats.series.add("sent", t)
            stats.series.add("attempts", t, 2)
    one.series.add("timeouts", NS)
    two.series.add("late_answers", 8 * NS + NS // 2)
    parts = [one.part(0, 1004.0, 0.0), two.part(1, 1004.0, 0.0)]
    assert parts[1]["series"]["origin_unix_s"] == 1001
    doc = merge_parts(parts, {}, "distributed")
    series = doc["series"]
    assert series["origin_unix_s"] == 1000 and doc["started_unix_s"] == 1000.25
    # one's events at Unix 1000.25, 1001.25, 1002.25; two's at 1001.5, 1002.5, 1003.0
    assert series["seconds"] == 4
    assert series["sent"] == [1, 2, 2, 0]
    assert series["attempts"] == [2, 4, 4, 0]
    assert series["timeouts"] == [0, 1, 0, 0] and series["late_answers"] == [0, 0, 0, 1]
    assert series["t_s"] == [0.75, 1.75, 2.75, 3.75]
