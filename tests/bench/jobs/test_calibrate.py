"""Calibration: the least-squares decomposition on exact points, and a ``--quick`` run
whose file the model's loader reads back. Figures are checked for sign and scale only —
never for speed."""

import json
import math
import statistics
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench._support.clients import WINDOW
from bench._support.servers import bench_scenario
from bench._support.tls import throwaway_tls
from bench.jobs import calibrate
from bench.jobs.calibrate import body_of, loop_share, mean_ack_ms
from bench.jobs.calibrate_fit import (
    BATCH_SIZES,
    COLD_GAPS_MS,
    FANOUT_AWAKE_GAP_MS,
    LONE_ROOM,
    LONE_WINDOW,
    QUICK,
    ROOM_SIZES,
    GcProbe,
    Point,
    StoreFigures,
    build_costs,
    fit_line,
    fit_loop_costs,
    in_server_commit,
    per_batch_loop_us,
    per_batch_thread_us,
    per_batch_wait_ms,
    per_batch_wait_samples_ms,
    per_recipient_lone_us,
    stage_split_us,
)
from sim.calibration import CODECS, CalibrationError, Costs, load_costs

BASELINE = Path(__file__).resolve().parents[3] / "scenarios" / "baseline.toml"

CODEC_COSTS = Costs(
    decode_us={"json": 0.5, "protobuf": 1.5},
    encode_ack_us={"json": 0.1, "protobuf": 0.9},
    encode_deliver_us={"json": 0.2, "protobuf": 1.2},
)


def exact_point(codec: str, room_size: int, fixed: float, per_recipient: float) -> Point:
    """A point built the way the model charges one message (module docstring)."""
    c = CODEC_COSTS
    loop = fixed + c.decode_us[codec] + c.encode_ack_us[codec] + room_size * per_recipient
    if room_size > 1:
        loop += c.encode_deliver_us[codec]
    return Point(codec, room_size, 0, 1000, 1000 * (room_size - 1), loop / 0.8, 0.8, loop)


def test_fit_line_recovers_an_exact_line() -> None:
    a, b = fit_line([1, 2, 4, 8], [3 + 0.5 * x for x in (1, 2, 4, 8)])
    assert (a, b) == (pytest.approx(3.0), pytest.approx(0.5))
    with pytest.raises(ValueError, match="two distinct x"):
        fit_line([2, 2], [1, 2])


def test_the_decomposition_recovers_fixed_and_per_recipient_exactly() -> None:
    points = [exact_point(c, k, 40.0, 7.5) for c in CODECS for k in (1, 2, 21, 51)]
    fixed, per_recipient = fit_loop_costs(points, CODEC_COSTS)
    assert fixed == pytest.approx(40.0, abs=1e-9)
    assert per_recipient == pytest.approx(7.5, abs=1e-9)


def test_lone_points_give_the_per_batch_cost_and_stay_out_of_the_fit() -> None:
    windowed = [exact_point(c, k, 40.0, 7.5) for c in CODECS for k in (1, 2, 21)]
    lone = [
        replace(p, loop_us_per_msg=p.loop_us_per_msg + extra, window=LONE_WINDOW)
        for p, extra in zip(
            [exact_point(c, 1, 40.0, 7.5) for c in CODECS for _ in range(3)],
            (300.0, 310.0, 290.0, 305.0, 295.0, 500.0),
            strict=True,
        )
    ]
    fixed, per_recipient = fit_loop_costs(windowed + lone, CODEC_COSTS)
    assert (fixed, per_recipient) == (pytest.approx(40.0), pytest.approx(7.5))
    fitted = replace(CODEC_COSTS, per_send_fixed_us=fixed, per_recipient_send_us=per_recipient)
    assert per_batch_loop_us(windowed + lone, fitted) == pytest.approx(302.5)  # the median
    assert per_batch_loop_us(windowed, fitted) == 0.0


def test_the_wait_per_batch_is_the_server_latency_the_costs_do_not_explain() -> None:
    costs = replace(
        CODEC_COSTS,
        per_send_fixed_us=40.0,
        per_recipient_send_us=7.5,
        per_batch_loop_us=200.0,
        store_commit_fixed_ms=0.05,
    )
    on_path_ms = {
        c: (40.0 + CODEC_COSTS.decode_us[c] + 200.0 + CODEC_COSTS.encode_ack_us[c] + 7.5) / 1000
        + 0.05
        for c in CODECS
    }
    points = [
        replace(exact_point(c, 1, 40.0, 7.5), window=LONE_WINDOW, server_ack_mean_ms=ms)
        for c, ms in (
            ("json", on_path_ms["json"] + 0.30),
            ("protobuf", on_path_ms["protobuf"] + 0.40),
            ("json", on_path_ms["json"] + 0.35),
        )
    ]
    assert per_batch_wait_ms(points, costs) == pytest.approx(0.35)
    # no server figure, or windowed points only: nothing to say
    assert per_batch_wait_ms([replace(points[0], server_ack_mean_ms=float("nan"))], costs) == 0
    assert per_batch_wait_ms([exact_point("json", 1, 40.0, 7.5)], costs) == 0


def test_the_mean_ack_comes_from_the_histograms_sum_and_count() -> None:
    from bench._support.metrics_scrape import parse

    def text(total_s: float, count: int) -> str:
        return (
            "# TYPE chatcap_ack_latency_seconds histogram\n"
            f'chatcap_ack_latency_seconds_bucket{{le="+Inf"}} {count}\n'
            f"chatcap_ack_latency_seconds_count {count}\n"
            f"chatcap_ack_latency_seconds_sum {total_s}\n"
        )

    delta = parse(text(0.9, 600)).minus(parse(text(0.4, 100)))
    assert mean_ack_ms(delta) == pytest.approx(1.0)  # 0.5 s over 500 acks
    assert math.isnan(mean_ack_ms(parse(text(0.4, 100)).minus(parse(text(0.4, 100)))))


def test_codec_costs_are_subtracted_not_fitted() -> None:
    # echo and a room of 2 differ by one frame AND one Deliver encode: the encode is
    # known, so the slope is the per-recipient cost alone
    points = [exact_point("protobuf", k, 10.0, 2.0) for k in (1, 2)]
    assert fit_loop_costs(points, CODEC_COSTS) == (pytest.approx(10.0), pytest.approx(2.0))


@pytest.mark.parametrize(
    ("loop_s", "process_s", "share"),
    [(0.8, 1.0, 0.8), (0.21, 0.2, 1.0), (0.0, 0.3, 1.0), (0.1, 0.0, 1.0), (0.0, 0.0, 1.0)],
)
def test_the_loop_share_is_clamped_to_a_share(
    loop_s: float, process_s: float, share: float
) -> None:
    # tick-granular clocks read a moment apart can show the loop above the process
    assert loop_share(loop_s, process_s) == pytest.approx(share)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 119, 120, 121, 500])
def test_the_codec_body_has_exactly_the_scenarios_byte_size(size: int) -> None:
    assert len(body_of(size).encode()) == size


@pytest.fixture(scope="module")
def quick_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calibration")
    assert calibrate.main(["--quick", "--out", str(out)]) == 0
    (path,) = out.iterdir()
    return path


def test_quick_calibration_writes_a_file_the_model_loads(quick_file: Path) -> None:
    costs = load_costs(quick_file)
    assert quick_file.name == f"{costs.host}.json"
    assert costs.created_utc and costs.git_sha and costs.python.startswith("3.")
    assert costs.packages["websockets"] and "least-squares" in costs.notes
    points = costs.details["server_points"]
    assert {(p["codec"], p["room_size"]) for p in points} == {
        (c, k) for c in CODECS for k in ROOM_SIZES
    }


def test_quick_calibration_records_where_the_server_and_the_clients_ran(quick_file: Path) -> None:
    details = load_costs(quick_file).details
    sets = details["cpu_sets"]
    assert set(sets) == {"server_cpus", "generator_cpus", "isolated", "note", "server_cores"}
    assert sets["isolated"] == (sets["note"] == "")
    assert sets["server_cores"] >= 1
    assert details["cpu_use"]["server_cpu_pct"] > 0 and details["cpu_use"]["client_cpu_pct"] > 0


def test_quick_calibration_figures_are_positive_and_plausible(quick_file: Path) -> None:
    costs = load_costs(quick_file)
    for table in (costs.decode_us, costs.encode_ack_us, costs.encode_deliver_us):
        assert all(0 < v < 1000 for v in table.values())  # µs per small frame
    assert 0 < costs.per_send_fixed_us < 10_000
    assert 0 < costs.per_recipient_send_us < 1_000
    assert 0 < costs.store_commit_fixed_ms < 1_000
    assert 0 <= costs.store_commit_per_msg_ms < 100
    assert sorted(costs.store_commit_ms_by_batch) == list(BATCH_SIZES)
    assert all(v > 0 for v in costs.store_commit_ms_by_batch.values())
    assert costs.commit_samples_ms and all(v >= 0 for v in costs.commit_samples_ms)
    assert all(0 < p["loop_share"] <= 1.0 for p in costs.details["server_points"])


def test_quick_calibration_probes_the_cold_path_at_every_gap(quick_file: Path) -> None:
    """The probe ran against the real server: a point per gap with the server's mean, the
    client's round trip (never shorter than the server's own part) and the CPU; the curve
    has every gap, 0 at back-to-back."""
    costs = load_costs(quick_file)
    cold = costs.details["cold_path"]
    assert {p["gap_ms"] for p in cold["points"]} == set(COLD_GAPS_MS)
    for p in cold["points"]:
        assert p["messages"] >= QUICK.cold_min_messages, p
        assert 0 < p["server_ack_mean_ms"] < p["rtt_mean_ms"], p
        assert p["cpu_us_per_msg"] > 0, p
    curve = costs.cold_penalty_us_by_gap_ms
    assert set(curve) == set(COLD_GAPS_MS) and curve[0.0] == 0.0
    assert all(v >= 0 for v in curve.values())
    # the cold fan-out: a room of members reading at every gap, a cost per frame
    fans = [p for p in cold["points"] if p["room_size"] > 1]
    assert {p["gap_ms"] for p in fans} == set(COLD_GAPS_MS)
    assert all(p["fanout_stage_ms"] > 0 for p in fans)
    per_frame = costs.fanout_us_by_gap_ms
    # below the awake gap, busy readers at 0 (the windowed fan-out's slope)
    assert set(per_frame) == {0.0} | {g for g in COLD_GAPS_MS if g >= FANOUT_AWAKE_GAP_MS}
    assert all(0 < v < 1000 for v in per_frame.values())  # µs per Deliver frame


def test_quick_calibration_measures_the_background(quick_file: Path) -> None:
    """The background probe ran on a server of its own: its idle CPU, idle connections
    pinged every 0.25 s, and /metrics scrapes, each read (a scrape costs the server CPU)."""
    costs = load_costs(quick_file)
    probe = costs.details["background"]
    assert probe["ping_interval_s"] == 0.25 and probe["connections"] == QUICK.background_connections
    # the event loop's sleep may end a hair early
    assert probe["hold_s"] >= 0.9 * QUICK.background_hold_s and probe["scrapes"] == QUICK.scrapes
    assert probe["scrape_cpu_s"] > 0
    assert costs.background_us_per_s >= 0 and costs.ping_us >= 0 and costs.scrape_us > 0


def test_the_file_is_sim_calibration_json_with_schema_version_first(quick_file: Path) -> None:
    data = json.loads(quick_file.read_text())
    assert next(iter(data)) == "schema_version" and data["schema_version"] == 1


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert calibrate.main(["--repeat", "0"]) == 2
    assert calibrate.main(["--scenario", "no/such.toml"]) == 2
    assert capsys.readouterr().err.count("error:") == 2


def test_the_server_points_run_over_wss_when_the_scenario_turns_tls_on(tmp_path: Path) -> None:
    """Every server point of a calibration against a TLS server with a throwaway CA: the
    load client speaks wss:// (trusting only the scenario's ca_file) and the /metrics reads
    before and after each point go over https (the mean ack needs both)."""
    tls = throwaway_tls(tmp_path / "tls")
    sets = [f'{key}="{path}"' for key, path in tls.overrides().items()]
    scenario = bench_scenario(str(BASELINE), sets)
    tiny = replace(QUICK, messages={1: 200, 2: 100, 21: 20}, lone_messages=40, timeout_s=30.0)
    points = calibrate.measure_server_points(scenario, tiny, tmp_path)
    assert {(p.codec, p.room_size, p.window) for p in points} == {
        (c, k, w) for c in CODECS for k, w in [*((k, WINDOW) for k in ROOM_SIZES),
                                              (1, LONE_WINDOW), (LONE_ROOM, LONE_WINDOW)]
    }  # fmt: skip
    for point in points:
        # /proc counts CPU in 10 ms ticks: a tiny point may read none, never less
        assert point.messages > 0 and point.process_us_per_msg >= 0, point
        assert point.server_ack_mean_ms > 0, point  # both https scrapes answered
    assert sum(p.process_us_per_msg for p in points) > 0
    assert " listening on wss://127.0.0.1:" in (tmp_path / "ours-cal0.stdout").read_text()


def test_a_tls_scenario_with_a_missing_ca_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = throwaway_tls(tmp_path / "tls")
    sets = [f'{key}="{path}"' for key, path in tls.overrides().items()]
    sets.append('server.tls.ca_file="/no/such/ca.pem"')
    argv = ["--quick", "--out", str(tmp_path / "out")]
    assert calibrate.main([*argv, *(a for s in sets for a in ("--set", s))]) == 2
    err = capsys.readouterr().err
    assert err == "error: server.tls.ca_file = '/no/such/ca.pem': no such file\n"


def test_provenance_keys_are_optional_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text('{"schema_version": 1, "per_send_fixed_us": 20}')
    assert load_costs(path).packages == {} and load_costs(path).details == {}
    path.write_text('{"packages": {"numpy": 2}}')
    with pytest.raises(CalibrationError, match="packages: must be an object"):
        load_costs(path)


def test_the_wait_distribution_is_the_latency_histogram_less_the_modelled_path() -> None:
    costs = replace(
        CODEC_COSTS, per_send_fixed_us=0.0, per_recipient_send_us=0.0, store_commit_fixed_ms=0.0
    )
    on_path = {c: (CODEC_COSTS.decode_us[c] + CODEC_COSTS.encode_ack_us[c]) / 1000 for c in CODECS}
    # half the acks under 1 ms, half between 1 and 2 ms (cumulative buckets, seconds)
    buckets = ((0.001, 50.0), (0.002, 100.0), (math.inf, 100.0))
    points = [
        replace(exact_point(c, 1, 0.0, 0.0), window=LONE_WINDOW, server_ack_buckets=buckets)
        for c in CODECS
    ]
    samples = per_batch_wait_samples_ms(points, costs)
    assert len(samples) == 1000 and list(samples) == sorted(samples)
    path = statistics.median(on_path.values())
    assert samples[499] == pytest.approx(0.999 - path, abs=0.01)  # the median rank
    assert samples[-1] == pytest.approx(1.9995 - path, abs=0.01)
    assert per_batch_wait_samples_ms([exact_point("json", 1, 0.0, 0.0)], costs) == ()
    # a rare stall (7 acks in 3,300 between 4 and 5 ms) keeps its frequency, 0.2 %
    rare = ((0.0005, 3293.0), (0.004, 3293.0), (0.005, 3300.0), (math.inf, 3300.0))
    stalls = per_batch_wait_samples_ms([replace(p, server_ack_buckets=rare) for p in points], costs)
    share = sum(1 for v in stalls if v > 3.0) / len(stalls)
    assert share == pytest.approx(7 / 3300, abs=0.001)


def test_the_model_draws_each_batchs_wait_from_the_samples() -> None:
    from sim.calibration import costs_from_data

    costs = costs_from_data({"per_batch_wait_samples_ms": [0.0, 2.0]}, "t")
    assert costs.per_batch_wait_samples_ms == (0.0, 2.0)
    with pytest.raises(CalibrationError, match="per_batch_wait_samples_ms"):
        costs_from_data({"per_batch_wait_samples_ms": ["x"]}, "t")


def test_the_thread_cost_is_process_less_loop_less_the_commit_on_lone_points() -> None:
    costs = replace(CODEC_COSTS, store_commit_fixed_ms=0.04)
    lone = [
        replace(exact_point(c, 1, 40.0, 7.5), window=LONE_WINDOW, process_us_per_msg=p)
        for c, p in (("json", 300.0), ("protobuf", 320.0), ("json", 310.0))
    ]
    loop = lone[0].loop_us_per_msg, lone[1].loop_us_per_msg, lone[2].loop_us_per_msg
    expected = statistics.median(
        [300.0 - loop[0] - 40.0, 320.0 - loop[1] - 40.0, 310.0 - loop[2] - 40.0]
    )
    assert per_batch_thread_us(lone, costs) == pytest.approx(expected)
    assert per_batch_thread_us([exact_point("json", 1, 40.0, 7.5)], costs) == 0.0


def test_the_lone_fan_out_gives_the_cost_of_a_frame_that_wakes_its_reader() -> None:
    def lone(codec: str, k: int, repeat: int, loop: float) -> Point:
        return replace(
            exact_point(codec, k, 0.0, 0.0), window=LONE_WINDOW, repeat=repeat, loop_us_per_msg=loop
        )

    enc = CODEC_COSTS.encode_deliver_us
    points = [
        lone("json", 1, 0, 300.0),
        lone("json", LONE_ROOM, 0, 300.0 + enc["json"] + 20 * 25.0),
        lone("protobuf", 1, 0, 320.0),
        lone("protobuf", LONE_ROOM, 0, 320.0 + enc["protobuf"] + 20 * 27.0),
        lone("json", LONE_ROOM, 1, 999.0),  # no echo of its repeat: not paired
    ]
    assert per_recipient_lone_us(points, CODEC_COSTS) == pytest.approx(26.0)
    assert per_recipient_lone_us(points[:1], CODEC_COSTS) is None


def test_a_server_that_commits_on_the_loop_leaves_the_commit_out_of_the_per_batch_cost() -> None:
    """The lone points' loop CPU holds the commit when the server commits on the loop;
    the model charges that commit to the loop itself, so the file's per_batch_loop_us
    leaves it out — and keeps it where the commit runs on a thread."""
    windowed = [exact_point(c, k, 40.0, 7.5) for c in CODECS for k in (1, 2, 21)]
    lone = [
        replace(exact_point(c, 1, 40.0, 7.5), window=LONE_WINDOW) for c in CODECS for _ in range(2)
    ]
    lone = [replace(p, loop_us_per_msg=p.loop_us_per_msg + 300.0) for p in lone]
    codec = {
        "decode_us": CODEC_COSTS.decode_us,
        "encode_ack_us": CODEC_COSTS.encode_ack_us,
        "encode_deliver_us": CODEC_COSTS.encode_deliver_us,
    }
    store = StoreFigures({1: 0.05, 2: 0.06}, 0.05, 0.01, 0.04, (0.05,))
    created = datetime.now(UTC)
    by_place = {}
    for place in ("loop", "thread"):
        scenario = bench_scenario(str(BASELINE), [f'server.store.commit_on="{place}"'])
        costs = build_costs(codec, windowed + lone, store, scenario, QUICK, created)
        assert costs.details["commit_on"] == place
        by_place[place] = costs.per_batch_loop_us
    assert by_place["thread"] == pytest.approx(300.0)
    assert by_place["loop"] == pytest.approx(300.0 - 50.0)  # less the 0.05 ms commit


def test_the_lone_points_stage_times_split_the_fixed_cost_around_the_stamp() -> None:
    """ingress_stage_us = the lone echo's ingress stage less the decode (median over
    codecs); post_submit_us = its queue stage; both within per_send_fixed_us."""
    costs = replace(CODEC_COSTS, per_send_fixed_us=50.0)

    def lone(codec: str, ingress_ms: float, queue_ms: float) -> Point:
        stages = (("ingress", ingress_ms), ("queue", queue_ms), ("commit", 0.05))
        return replace(exact_point(codec, 1, 40.0, 7.5), window=LONE_WINDOW, stage_means_ms=stages)

    points = [lone("json", 0.0105, 0.030), lone("protobuf", 0.0115, 0.034)]
    ingress, post = stage_split_us(points, costs)
    assert ingress == pytest.approx(10.0)  # 10.5 − 0.5 and 11.5 − 1.5
    assert post == pytest.approx(32.0)  # the median of 30 and 34
    # never more than the fixed cost, never negative; nothing without stage times
    huge = [lone("json", 0.0305, 0.030)]  # 30 + 30 > 50: the queue part is what is left
    assert stage_split_us(huge, costs) == (pytest.approx(30.0), pytest.approx(20.0))
    assert stage_split_us([exact_point("json", 1, 40.0, 7.5)], costs) == (0.0, 0.0)


def test_quick_calibration_measures_the_collector_under_a_crowd(quick_file: Path) -> None:
    """The probe ran with the scenario's users as a crowd (QUICK caps it), and its
    figures are what the file says the model gets."""
    costs = load_costs(quick_file)
    probe = costs.details["gc_probe"]
    assert probe["crowd"] == QUICK.gc_crowd_max
    idle = [p for p in probe["points"] if not p["active"]]
    assert [(p["room_size"], p["crowd"]) for p in idle] == [
        (k, c) for c in (0, QUICK.gc_crowd_max) for k in (1, 2, 21)
    ]
    # then the load's shape: the crowd's connections in rooms of 2 and of the scenario's
    # size, all of them sending in turn, each on a server of its own
    active = [p for p in probe["points"] if p["active"]]
    size = bench_scenario(str(BASELINE), []).workload.room_size.size
    crowd = QUICK.gc_crowd_max
    assert [(p["room_size"], p["crowd"]) for p in active] == [
        (2, crowd // 2 * 2),
        (size, crowd // size * size),
    ]
    for p in active:
        assert p["messages"] == QUICK.gc_messages  # the measured phase alone
        assert p["deliveries"] == pytest.approx(p["messages"] * (p["room_size"] - 1), rel=0.01)
        assert sum(p["gc_collections"]) > 0
    counted = sum(sum(p["gc_collections"]) for p in probe["points"])
    assert counted > 0  # thousands of echo messages set off young collections
    assert len(costs.gc_pause_us) == 3 and costs.gc_pauses_per_msg[0] > 0
    assert len(costs.gc_pause_us_per_connection) == 3
    assert 1.0 < costs.gc_pause_us[0] < 50_000.0  # µs: a young collection, not a second


def test_the_collector_comes_from_its_probe_when_it_ran() -> None:
    """build_costs takes the collector's figures from the probe (a crowd held), not from
    the server points, whose heap is small."""
    windowed = [exact_point(c, k, 40.0, 7.5) for c in CODECS for k in (1, 2, 21)]
    small = [
        replace(p, gc_collections=(10.0, 1.0, 0.0), gc_pause_s=(5e-4, 3e-4, 0.0)) for p in windowed
    ]
    crowd = tuple(
        replace(p, gc_collections=(20.0, 2.0, 0.0), gc_pause_s=(2e-3, 2e-3, 0.0), crowd=200)
        for p in windowed
        if p.codec == "json"
    )
    codec = {
        "decode_us": CODEC_COSTS.decode_us,
        "encode_ack_us": CODEC_COSTS.encode_ack_us,
        "encode_deliver_us": CODEC_COSTS.encode_deliver_us,
    }
    store = StoreFigures({1: 0.05, 2: 0.06}, 0.05, 0.01, 0.04, (0.05,))
    scenario = bench_scenario(str(BASELINE), [])
    created = datetime.now(UTC)
    without = build_costs(codec, small, store, scenario, QUICK, created)
    assert without.gc_pause_us == pytest.approx((50.0, 300.0, 0.0))
    probed = build_costs(codec, small, store, scenario, QUICK, created, gc=GcProbe(crowd, 200))
    assert probed.gc_pause_us == pytest.approx((100.0, 1000.0, 0.0))
    assert probed.details["gc_probe"]["crowd"] == 200


def test_the_servers_own_commit_of_one_row_leaves_one_rows_checkpoint_share_out() -> None:
    """Lone points commit 0.07 ms a row, of which the checkpoints' share (2 ms every 200
    rows: 0.01 ms): 0.06 ms. The windowed points' bigger batches stay out."""

    def point(rows_per_batch: float, ms: float) -> Point:
        return replace(
            exact_point("json", 1, 40.0, 7.5),
            commit_batches=1000.0,
            commit_rows=1000.0 * rows_per_batch,
            commit_s=ms,  # 1000 batches of `ms` ms each: `ms` seconds
        )

    got = in_server_commit([point(1.0, 0.07), point(1.0, 0.07), point(6.0, 0.3)], 200.0, 2.0)
    assert got == pytest.approx(0.06)
    assert in_server_commit([point(6.0, 0.3)], 200.0, 2.0) is None
    assert in_server_commit([exact_point("json", 1, 40.0, 7.5)], 200.0, 2.0) is None


def test_the_loops_batch_cost_leaves_out_the_servers_own_commit_where_it_was_counted() -> None:
    windowed = [exact_point(c, k, 40.0, 7.5) for c in CODECS for k in (1, 2, 21)]
    lone = [
        replace(exact_point(c, 1, 40.0, 7.5), window=LONE_WINDOW) for c in CODECS for _ in range(2)
    ]
    # lone points: 300 µs beyond the echo, of which the server's own commit (0.08 ms)
    lone = [
        replace(
            p,
            loop_us_per_msg=p.loop_us_per_msg + 300.0,
            commit_batches=1000.0,
            commit_rows=1000.0,
            commit_s=0.08,
        )
        for p in lone
    ]
    codec = {
        "decode_us": CODEC_COSTS.decode_us,
        "encode_ack_us": CODEC_COSTS.encode_ack_us,
        "encode_deliver_us": CODEC_COSTS.encode_deliver_us,
    }
    store = StoreFigures({1: 0.05, 2: 0.06}, 0.05, 0.01, 0.04, (0.05,))
    scenario = bench_scenario(str(BASELINE), ['server.store.commit_on="loop"'])
    costs = build_costs(codec, windowed + lone, store, scenario, QUICK, datetime.now(UTC))
    assert costs.store_commit_in_server_fixed_ms == pytest.approx(0.08)
    assert costs.per_batch_loop_us == pytest.approx(300.0 - 80.0)
    assert costs.store_commit_fixed_ms == 0.05  # the isolated figure stays beside it
    from bench.analysis.model import store_overrides

    assert store_overrides(costs) == {
        "sim.store_service_ms": pytest.approx(0.08),
        "sim.store_per_msg_ms": 0.01,  # the isolated slope
    }
    older = replace(costs, store_commit_in_server_fixed_ms=0.0)
    assert store_overrides(older)["sim.store_service_ms"] == 0.05
