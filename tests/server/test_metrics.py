"""The server's metrics: names, labels, private registries and the breaker hook."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import pytest
from prometheus_client.core import Metric

from chatcap.policy.breaker import BreakerConfig, CircuitBreaker
from server import metrics as metrics_module
from server.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S, Metrics


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_render_shows_names_and_label_values_after_counting() -> None:
    m = Metrics()
    m.by_codec["json"].frames_in.inc()
    m.frames_out_by_codec["protobuf"].inc(3)
    m.bytes_in_by_codec["json"].inc(120)
    m.errors_sent.labels("rate_limited").inc()
    m.bad_frames.labels("decode").inc()
    m.http_requests.labels("/healthz", "200").inc()
    m.ack_latency.observe(0.003)
    body, content_type = m.render()
    text = body.decode()
    assert content_type.startswith("text/plain; version=0.0.4")
    for line in [
        'chatcap_frames_received_total{codec="json"} 1.0',
        'chatcap_frames_sent_total{codec="protobuf"} 3.0',
        'chatcap_received_bytes_total{codec="json"} 120.0',
        'chatcap_errors_sent_total{code="rate_limited"} 1.0',
        'chatcap_bad_frames_total{reason="decode"} 1.0',
        'chatcap_http_requests_total{route="/healthz",status="200"} 1.0',
        'chatcap_ack_latency_seconds_bucket{le="0.002"} 0.0',
        'chatcap_ack_latency_seconds_bucket{le="0.005"} 1.0',
        "chatcap_process_cpu_seconds_total ",
    ]:
        assert line in text


def test_every_metric_name_starts_with_chatcap() -> None:
    names = list(Metrics().names())
    assert names and all(name.startswith("chatcap_") for name in names)
    assert {"chatcap_ack_latency_seconds", "chatcap_store_commit_seconds"} <= set(names)


def test_all_documented_attributes_exist_and_every_family_has_help_text() -> None:
    m = Metrics()
    for attribute in [
        "connections",
        "connections_total",
        "frames_in",
        "frames_out",
        "bytes_in",
        "bytes_out",
        "ack_latency",
        "write_queue_depth",
        "batch_size",
        "store_commit_latency",
        "pool_in_use",
        "pool_idle",
        "pool_waiting",
        "pool_acquire_timeouts",
        "breaker_state",
        "breaker_transitions",
        "rate_limited",
        "dedup_hits",
        "errors_sent",
        "slow_consumers_dropped",
        "bad_frames",
        "http_requests",
    ]:
        assert hasattr(m, attribute), attribute
    for family in m.registry.collect():
        assert family.documentation, family.name


def test_gauges_and_plain_counters_render() -> None:
    m = Metrics()
    m.write_queue_depth.set(7)
    m.pool_in_use.set(3)
    m.pool_idle.set(2)
    m.pool_waiting.set(1)
    m.pool_acquire_timeouts.inc()
    m.rate_limited.inc(2)
    m.dedup_hits.inc()
    m.slow_consumers_dropped.inc()
    m.batch_size.observe(5)
    m.store_commit_latency.observe(0.0004)
    assert value(m, "chatcap_write_queue_depth") == 7
    assert value(m, "chatcap_pool_connections_in_use") == 3
    assert value(m, "chatcap_pool_connections_idle") == 2
    assert value(m, "chatcap_pool_waiting") == 1
    assert value(m, "chatcap_pool_acquire_timeouts_total") == 1
    assert value(m, "chatcap_rate_limited_total") == 2
    assert value(m, "chatcap_dedup_hits_total") == 1
    assert value(m, "chatcap_slow_consumers_dropped_total") == 1
    assert value(m, "chatcap_write_batch_messages_bucket", le="4.0") == 0
    assert value(m, "chatcap_write_batch_messages_bucket", le="8.0") == 1
    assert value(m, "chatcap_store_commit_seconds_bucket", le="0.0005") == 1


def test_per_codec_children_are_bound_once_and_shared() -> None:
    m = Metrics()
    json_metrics = m.by_codec["json"]
    assert json_metrics.frames_in is m.frames_in_by_codec["json"]
    assert json_metrics.connections is m.connections_by_codec["json"]
    json_metrics.connections.inc()
    json_metrics.connections_opened.inc()
    json_metrics.bytes_out.inc(10)
    assert value(m, "chatcap_connections", codec="json") == 1
    assert value(m, "chatcap_connections_opened_total", codec="json") == 1
    assert value(m, "chatcap_sent_bytes_total", codec="json") == 10
    assert value(m, "chatcap_connections", codec="protobuf") == 0  # shown at zero


def test_two_instances_do_not_share_counters() -> None:
    first, second = Metrics(), Metrics()
    first.frames_in_by_codec["json"].inc(5)
    first.rate_limited.inc()
    assert value(first, "chatcap_frames_received_total", codec="json") == 5
    assert value(second, "chatcap_frames_received_total", codec="json") == 0
    assert value(second, "chatcap_rate_limited_total") == 0
    assert b'chatcap_frames_received_total{codec="json"} 0.0' in second.render()[0]


def test_breaker_listener_tracks_state_and_counts_transitions() -> None:
    m = Metrics()
    config = BreakerConfig(open_duration_s=10.0, half_open_calls=1)
    breaker = CircuitBreaker(config, listeners=[m.breaker_listener])
    trace: list[tuple[float | None, float | None]] = []

    def snapshot() -> None:
        trace.append(
            (
                value(m, "chatcap_breaker_state"),
                value(m, "chatcap_breaker_transitions_total", **{"from": "closed", "to": "open"}),
            )
        )

    snapshot()
    breaker.transition_to_open(now=1.0)
    snapshot()
    assert breaker.try_acquire(now=11.0).allowed
    snapshot()
    breaker.on_error(now=11.5, duration_s=0.1)  # the trial fails: back to open
    snapshot()
    breaker.reset(now=12.0)
    snapshot()
    assert trace == [(0, 0), (1, 1), (2, 1), (1, 1), (0, 1)]
    transitions = {
        (old, new): value(m, "chatcap_breaker_transitions_total", **{"from": old, "to": new})
        for old, new in [("open", "half_open"), ("half_open", "open"), ("open", "closed")]
    }
    assert transitions == {
        ("open", "half_open"): 1,
        ("half_open", "open"): 1,
        ("open", "closed"): 1,
    }


def test_legal_breaker_transitions_are_shown_at_zero() -> None:
    m = Metrics()
    labels = {"from": "half_open", "to": "closed"}
    assert value(m, "chatcap_breaker_transitions_total", **labels) == 0
    assert (
        value(m, "chatcap_breaker_transitions_total", **{"from": "closed", "to": "half_open"})
        is None
    )


def test_latency_buckets_run_from_50_microseconds_ten_per_decade_to_1_second_then_to_10() -> None:
    assert LATENCY_BUCKETS_S[0] == 50e-6
    assert LATENCY_BUCKETS_S[-4:] == (1.0, 2.0, 5.0, 10.0)
    fine = LATENCY_BUCKETS_S[: LATENCY_BUCKETS_S.index(1.0) + 1]
    decades = math.log10(fine[-1] / fine[0])
    assert len(fine) == round(10 * decades) + 1
    ratios = [b / a for a, b in itertools.pairwise(fine)]
    assert all(1.24 <= ratio <= 1.28 for ratio in ratios)  # ±13 % inside a bucket at most
    assert 0.0005 in LATENCY_BUCKETS_S and 0.001 in LATENCY_BUCKETS_S  # round bounds kept


def test_batch_buckets_are_powers_of_two_up_to_1024() -> None:
    assert BATCH_SIZE_BUCKETS == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _SeesNothing:
    """A ProcessCollector stand-in for a platform without /proc."""

    def __init__(self, **kwargs: object) -> None:
        pass

    def collect(self) -> Iterable[Metric]:
        return []


def test_process_cpu_falls_back_to_process_time_without_proc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_module, "ProcessCollector", _SeesNothing)
    m = Metrics()
    cpu_s = value(m, "chatcap_process_cpu_seconds_total")
    assert cpu_s is not None and cpu_s > 0
    assert value(m, "chatcap_process_resident_memory_bytes") is None


def test_process_metrics_come_from_proc_where_it_exists() -> None:
    m = Metrics()
    if not any(name == "chatcap_process_resident_memory_bytes" for name in m.names()):
        pytest.skip("no /proc here")
    rss = value(m, "chatcap_process_resident_memory_bytes")
    assert rss is not None and rss > 0


def test_a_loop_histogram_exposes_what_a_prometheus_histogram_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.exposition import generate_latest

    from server.metrics import LoopHistogram

    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = LoopHistogram("x_seconds", "doc", LATENCY_BUCKETS_S)
    ours_registry.register(ours)
    theirs = Histogram("x_seconds", "doc", buckets=LATENCY_BUCKETS_S, registry=theirs_registry)
    for value in (0.0, 50e-6, 51e-6, 0.002, 0.0031, 7.0, 11.0, 1e-9):  # edges included
        ours.observe(value)
        theirs.observe(value)

    def samples(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert samples(ours_registry) == samples(theirs_registry)


def test_the_gc_timer_puts_each_collection_in_its_generations_series() -> None:
    ticks = iter([1.0, 1.000250, 2.0, 2.004])
    children = [metrics_module.LoopHistogramChild((1e-3, 1.0)) for _ in range(3)]
    timer = metrics_module.GcTimer(children, clock=lambda: next(ticks))
    timer("start", {"generation": 0})
    timer("stop", {"generation": 0, "collected": 3, "uncollectable": 0})
    timer("start", {"generation": 2})
    timer("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert [c.count for c in children] == [1, 0, 1]
    assert children[0].sum == pytest.approx(250e-6) and children[2].sum == pytest.approx(4e-3)
    # a stop without its start (the hook went in mid-collection) is not a pause
    timer("stop", {"generation": 1})
    assert children[1].count == 0


def test_watching_gc_times_real_collections_until_unwatched() -> None:
    import gc

    m = Metrics()
    name = "chatcap_gc_pause_seconds_count"
    assert value(m, name, generation="2") == 0.0  # every generation shows from the start
    m.watch_gc()
    m.watch_gc()  # idempotent: one hook, not two
    try:
        assert sum(1 for cb in gc.callbacks if isinstance(cb, metrics_module.GcTimer)) >= 1
        gc.collect()
        gc.collect(0)
        full = value(m, name, generation="2") or 0.0
        assert full >= 1.0  # the full collection (and any the interpreter ran itself) …
        assert (value(m, name, generation="0") or 0.0) >= 1.0  # … and the young one
        assert (value(m, "chatcap_gc_pause_seconds_sum", generation="2") or 0.0) > 0.0
    finally:
        m.unwatch_gc()
    gc.collect()
    assert value(m, name, generation="2") == full  # not counted once unwatched
    assert not any(cb is m._gc_timer for cb in gc.callbacks)


def test_without_stage_metrics_nothing_is_timed_and_the_families_stay_at_zero() -> None:
    import gc

    m = Metrics(stages=False)
    m.send_stages.ingress.observe(0.001)
    m.send_stages.commit.observe_many(0.002, 3)
    m.watch_gc()  # a no-op: the collector is not watched
    try:
        assert not any(cb is m._gc_timer for cb in gc.callbacks)
        gc.collect()
    finally:
        m.unwatch_gc()
    count = "chatcap_send_stage_seconds_count"
    assert value(m, count, stage="ingress") == 0.0 and value(m, count, stage="commit") == 0.0
    assert value(m, "chatcap_gc_pause_seconds_count", generation="2") == 0.0
