"""The pure halves of the Locust bench: the users' plan and the merged results file.

Neither module imports Locust or gevent, so they are tested here in-process; the users
themselves run in subprocesses (tests/bench/test_locust_runs.py).
"""

import itertools
import json
import random
import statistics
from pathlib import Path
from typing import Any

import pytest

from bench._support.histo import HistogramSet
from bench.load.plan import (
    RoomPlan,
    backlog_until,
    body_text,
    count_backlog,
    resolve_plan,
    send_gaps,
    user_name,
    user_rng,
)
from bench.load.report import (
    LEDGER_COLUMNS,
    SCHEMA,
    ProcessStats,
    generator_bound,
    ledger_table,
    merge_parts,
    write_json,
)
from chatcap.scenario import Scenario, ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def baseline() -> Scenario:
    return load_scenario(ROOT / "scenarios" / "baseline.toml")


def test_overrides_win_over_the_scenario_and_are_validated(baseline: Scenario) -> None:
    plan = resolve_plan(
        baseline,
        codec="protobuf",
        room_size=7,
        send_rate_per_user_per_s=3.0,
        body_bytes=64,
        seed=99,
        arrival="constant",
    )
    assert (plan.codec, plan.room_size.size, plan.room_size.distribution) == (
        "protobuf",
        7,
        "fixed",
    )
    assert (plan.send_rate_per_user_per_s, plan.body_bytes, plan.seed) == (3.0, 64, 99)
    assert plan.arrival == "constant" and not plan.closed_loop
    assert plan.describe()["room_size"]["size"] == 7
    with pytest.raises(ScenarioError, match="send_rate_per_user_per_s"):
        resolve_plan(baseline, send_rate_per_user_per_s=0.0)
    with pytest.raises(ValueError, match="codec"):
        resolve_plan(baseline, codec="xml")


def test_fixed_rooms_fill_in_turn_and_never_span_workers(baseline: Scenario) -> None:
    plan = resolve_plan(baseline)
    rooms = RoomPlan(plan.room_size, plan.seed, worker=3)
    names = [rooms.room_of(n) for n in range(25)]
    assert names[:10] == ["r3-0"] * 10
    assert names[10:20] == ["r3-1"] * 10
    assert names[20:] == ["r3-2"] * 5
    assert user_name(3, 12) == "u3-12"


@pytest.mark.parametrize("distribution", ["uniform", "zipf"])
def test_drawn_room_sizes_stay_within_bounds_and_repeat_with_the_seed(distribution: str) -> None:
    scenario = load_scenario(ROOT / "scenarios" / "baseline.toml").with_overrides(
        {"workload.room_size.distribution": distribution, "workload.room_size.max": 12}
    )
    plan = resolve_plan(scenario)
    names = [RoomPlan(plan.room_size, plan.seed, 0).room_of(n) for n in range(300)]
    again = [RoomPlan(plan.room_size, plan.seed, 0).room_of(n) for n in range(300)]
    assert names == again
    sizes = [len(list(group)) for _, group in itertools.groupby(names)]
    assert all(2 <= size <= 12 for size in sizes[:-1])  # the last room may be partly filled


def test_poisson_gaps_have_the_configured_mean_and_are_seeded() -> None:
    gaps = list(itertools.islice(send_gaps("poisson", 4.0, user_rng(1, 0, 0)), 20_000))
    assert statistics.fmean(gaps) == pytest.approx(0.25, rel=0.03)
    assert gaps[:5] == list(itertools.islice(send_gaps("poisson", 4.0, user_rng(1, 0, 0)), 5))
    assert gaps[:5] != list(itertools.islice(send_gaps("poisson", 4.0, user_rng(1, 0, 1)), 5))


def test_constant_gaps_start_at_a_random_phase_then_keep_the_beat() -> None:
    gaps = list(itertools.islice(send_gaps("constant", 10.0, random.Random(3)), 5))
    assert 0 <= gaps[0] < 0.1
    assert gaps[1:] == [0.1] * 4
    with pytest.raises(ValueError, match="closed"):
        next(send_gaps("closed", 1.0, random.Random(0)))


def test_codec_mix_deals_codecs_in_the_weighted_shares(baseline: Scenario) -> None:
    plan = resolve_plan(baseline.with_overrides({"workload.codec_mix": {"json": 3, "protobuf": 1}}))
    deal = plan.codecs()
    codecs = [deal.codec_of(n) for n in range(400)]
    assert codecs.count("json") == 300
    assert all(codecs[i : i + 4].count("protobuf") == 1 for i in range(0, 400, 4))
    assert deal.codec_of(3) == codecs[3]  # asking again gives the same answer
    even = resolve_plan(baseline).codecs()  # baseline: 1:1, users alternate
    assert [even.codec_of(n) for n in range(4)] == ["json", "protobuf"] * 2
    assert resolve_plan(baseline, codec="protobuf").codecs().codec_of(7) == "protobuf"


@pytest.mark.parametrize("size", [0, 1, 120, 1000])
def test_bodies_have_exactly_the_requested_bytes(size: int) -> None:
    assert len(body_text(size).encode()) == size


def test_backlog_counts_only_the_sends_due_by_the_cut() -> None:
    # next send at 1 s, then one every 0.5 s: due at 1.0, 1.5, 2.0, 2.5 ...
    assert count_backlog(1_000_000_000, 2_000_000_000, itertools.repeat(0.5)) == 3
    assert count_backlog(1_000_000_000, 999_999_999, itertools.repeat(0.5)) == 0
    assert count_backlog(0, 10**18, itertools.repeat(0.001), limit=7) == 7


def test_a_stop_under_way_excludes_the_sends_due_while_users_are_stopped() -> None:
    # Locust began stopping at 2 s; this user is stopped at 5 s. The sends due at 2.5 .. 5 s
    # fell due because of the stop, not because the generator lagged.
    until = backlog_until(5_000_000_000, 2_000_000_000)
    assert until == 2_000_000_000
    assert count_backlog(1_000_000_000, until, itertools.repeat(0.5)) == 3
    # a stop that began later than now (clocks of one process: cannot, but min is safe)
    assert backlog_until(5_000_000_000, 9_000_000_000) == 5_000_000_000
    # no stop under way (a ramp-down): count up to now
    assert backlog_until(5_000_000_000, None) == 5_000_000_000
    assert count_backlog(1_000_000_000, 5_000_000_000, itertools.repeat(0.5)) == 9


def make_part(worker: int, values: list[int]) -> dict[str, Any]:
    stats = ProcessStats(started_unix_s=100.0 + worker, started_cpu_s=1.0)
    for i, value in enumerate(values):
        stats.histograms.record_us("ack", "json", value)
        stats.ledger("json").record_sent(f"c{i}")
        stats.ledger("json").record_acked("r", i + 1, f"c{i}")
        stats.ledger("json").record_delivered("u", "r", i + 1)
    stats.record_lag("json", 2500 * (worker + 1))
    stats.errors["timeout"] += worker
    stats.counts["sends_sent"] += len(values)
    stats.counts["sends_intended"] += len(values) + worker
    return stats.part(worker, stopped_unix_s=110.0, stopped_cpu_s=3.0)


def test_merged_parts_sum_counts_and_histograms(tmp_path: Path) -> None:
    parts = [make_part(0, [1000, 2000, 3000]), make_part(1, [5000, 6000])]
    doc = merge_parts(json.loads(json.dumps(parts)), {"codec": "json"}, "distributed", [2])

    assert doc["schema"] == SCHEMA and doc["mode"] == "distributed"
    assert doc["summary"]["ack"]["json"]["count"] == 5
    expected = HistogramSet()
    for part in parts:
        expected.merge(HistogramSet.from_json(part["histograms"]))
    merged = HistogramSet.from_json(doc["histograms"])
    assert list(merged.get("ack", "json").buckets()) == list(expected.get("ack", "json").buckets())
    assert doc["loss"]["sent"] == doc["loss"]["acked"] == 5
    assert doc["errors"] == {"timeout": 1}
    gen = doc["generator"]
    assert gen["processes"] == 2
    assert gen["sends_intended"] - gen["sends_sent"] == 1
    assert gen["max_schedule_lag_ms"] == pytest.approx(5.0)
    assert gen["cpu_s"] == pytest.approx(4.0)
    assert doc["started_unix_s"] == 100.0 and doc["stopped_unix_s"] == 110.0
    assert doc["missing_workers"] == [2]
    assert doc["summary"]["schedule_lag"]["json"]["count"] == 2

    path = write_json(tmp_path / "sub" / "out.json", doc)
    assert json.loads(path.read_text())["loss"] == doc["loss"]


def test_an_empty_histogram_summary_is_written_as_null(tmp_path: Path) -> None:
    stats = ProcessStats(0.0, 0.0)
    stats.histograms.get("deliver", "protobuf")
    doc = merge_parts([stats.part(0, 1.0, 0.5)], {}, "local")
    path = write_json(tmp_path / "out.json", doc)
    assert json.loads(path.read_text())["summary"]["deliver"]["protobuf"]["p99_ms"] is None


def test_a_busy_or_lagging_generator_is_flagged() -> None:
    ok = merge_parts([make_part(0, [1000])], {}, "local")
    assert generator_bound(ok) == []
    busy = merge_parts([make_part(0, [1000])], {}, "local")
    busy["generator"]["max_cpu_pct_per_process"] = 97.0
    busy["generator"]["sends_intended"] = 500
    busy["generator"]["sends_sent"] = 400
    assert len(generator_bound(busy)) == 2


def two_codec_stats(started_unix_s: float) -> ProcessStats:
    """json: 4 messages sent and acked, each delivered twice; protobuf: 2 sent, 1 acked,
    and one receiver that got seqs 1, 3, 3 (one missing, one duplicated)."""
    stats = ProcessStats(started_unix_s, 0.0)
    js, pb = stats.ledger("json"), stats.ledger("protobuf")
    for i in range(4):
        js.record_sent(f"j{i}")
        js.record_acked("r", i + 1, f"j{i}")
        js.record_delivered("a", "r", i + 1)
        js.record_delivered("b", "r", i + 1)
    pb.record_sent("p0")
    pb.record_sent("p1")
    pb.record_acked("r", 5, "p0")
    for seq in (1, 3, 3):
        pb.record_delivered("c", "r", seq)
    return stats


def test_the_ledger_is_kept_per_codec_and_adds_up_to_the_total() -> None:
    part = two_codec_stats(0.0).part(0, 10.0, 1.0)
    by_codec = part["loss_by_codec"]
    assert (by_codec["json"]["sent"], by_codec["json"]["delivered"]) == (4, 8)
    assert by_codec["protobuf"] == {
        "sent": 2, "retries": 0, "acked": 1, "failed": 0, "unacked": 1,
        "delivered": 3, "missing": 1, "duplicated": 1, "receivers": 1,
    }  # fmt: skip
    assert part["loss"] == {k: by_codec["json"][k] + by_codec["protobuf"][k] for k in part["loss"]}
    merged = merge_parts([part, two_codec_stats(5.0).part(1, 10.0, 1.0)], {}, "distributed")
    assert merged["loss_by_codec"]["protobuf"]["missing"] == 2
    assert merged["loss"]["sent"] == 12


def test_the_ledger_table_has_a_row_per_codec_then_all_with_rates_over_the_run() -> None:
    finished = two_codec_stats(100.0).part(0, 104.0, 1.0)
    live = two_codec_stats(102.0).snapshot(1, now_unix_s=110.0)  # still running
    table = ledger_table([finished, live])
    assert table["wall_s"] == 10.0 and table["processes"] == 2
    rows = table["rows"]
    assert [row["codec"] for row in rows] == ["json", "protobuf", "all"]
    assert all(list(row) == [key for key, _ in LEDGER_COLUMNS] for row in rows)
    total = rows[2]
    assert (total["sent"], total["acked"], total["delivered"]) == (12, 10, 22)
    assert (total["sent_per_s"], total["delivered_per_s"]) == (1.2, 2.2)
    assert (total["missing"], total["duplicated"], total["receivers"]) == (2, 2, 6)
    assert ledger_table([]) == {"wall_s": 0.0, "processes": 0, "rows": []}
