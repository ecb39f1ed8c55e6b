"""Parsing the server's Prometheus text: figures, differences, histogram quantiles."""

from __future__ import annotations

import math

import pytest

from bench._support.metrics_scrape import ACK_LATENCY, Scrape, histogram_quantile, parse
from server.metrics import Metrics

# A trimmed capture of GET /metrics after a short run (one codec used).
CAPTURED = """\
# HELP chatcap_connections open WebSocket connections
# TYPE chatcap_connections gauge
chatcap_connections{codec="json"} 10.0
chatcap_connections{codec="protobuf"} 0.0
# HELP chatcap_frames_received_total WebSocket frames received
# TYPE chatcap_frames_received_total counter
chatcap_frames_received_total{codec="json"} 77.0
chatcap_frames_received_total{codec="protobuf"} 0.0
chatcap_frames_received_created{codec="json"} 1.7957255022542307e+09
# HELP chatcap_ack_latency_seconds server-side time from a Send frame received to its Ack sent
# TYPE chatcap_ack_latency_seconds histogram
chatcap_ack_latency_seconds_bucket{le="0.0005"} 12.0
chatcap_ack_latency_seconds_bucket{le="0.001"} 31.0
chatcap_ack_latency_seconds_bucket{le="0.002"} 53.0
chatcap_ack_latency_seconds_bucket{le="0.005"} 58.0
chatcap_ack_latency_seconds_bucket{le="0.01"} 61.0
chatcap_ack_latency_seconds_bucket{le="0.02"} 64.0
chatcap_ack_latency_seconds_bucket{le="+Inf"} 64.0
chatcap_ack_latency_seconds_count 64.0
chatcap_ack_latency_seconds_sum 0.109
chatcap_ack_latency_seconds_created 1.7957255022536855e+09
# HELP chatcap_breaker_transitions_total store circuit breaker state changes
# TYPE chatcap_breaker_transitions_total counter
chatcap_breaker_transitions_total{from="closed",to="open"} 1.0
chatcap_breaker_transitions_total{from="open",to="half_open"} 1.0
# HELP chatcap_errors_sent_total Error frames sent, by code
# TYPE chatcap_errors_sent_total counter
chatcap_errors_sent_total{code="overloaded"} 3.0
chatcap_errors_sent_total{code="unavailable"} 5.0
# HELP chatcap_process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE chatcap_process_cpu_seconds_total counter
chatcap_process_cpu_seconds_total 0.26
"""


def test_a_captured_scrape_yields_the_named_figures() -> None:
    scrape = parse(CAPTURED)
    assert scrape.cpu_s == pytest.approx(0.26)
    assert scrape.acks == 64
    assert scrape.connections == 10
    assert scrape.frames_received() == 77 and scrape.frames_received("protobuf") == 0
    assert scrape.errors_by_code() == {"overloaded": 3.0, "unavailable": 5.0}
    assert scrape.breaker_transitions() == {("closed", "open"): 1.0, ("open", "half_open"): 1.0}
    assert scrape.buckets(ACK_LATENCY)[:2] == [(0.0005, 12.0), (0.001, 31.0)]
    assert scrape.buckets(ACK_LATENCY)[-1] == (math.inf, 64.0)
    assert not any(name.endswith("_created") for name, _ in scrape.samples)


def test_the_servers_own_registry_round_trips_through_the_parser() -> None:
    metrics = Metrics()
    for seconds in (0.0003, 0.0008, 0.0015, 0.0015, 0.004):
        metrics.ack_latency.observe(seconds)
    metrics.breaker_transitions.labels("closed", "open").inc()
    metrics.errors_sent.labels(code="rate_limited").inc(2)
    metrics.tally("protobuf")[0] += 9  # frames in, flushed at scrape as the server does
    metrics.flush_tallies()
    metrics.connections.labels("protobuf").set(4)

    scrape = parse(metrics.render()[0].decode())
    assert scrape.acks == 5
    assert scrape.frames_received("protobuf") == 9 and scrape.frames_received() == 9
    assert scrape.connections == 4
    assert scrape.errors_by_code() == {"rate_limited": 2.0}
    transitions = scrape.breaker_transitions()
    assert transitions[("closed", "open")] == 1 and transitions[("open", "half_open")] == 0
    assert scrape.cpu_s > 0  # process CPU so far (this test process)
    assert scrape.quantile(ACK_LATENCY, 0.5) == pytest.approx(0.0015, rel=0.35)


def test_minus_subtracts_counters_and_histograms_but_keeps_gauges() -> None:
    before = parse(CAPTURED)
    after = parse(
        CAPTURED.replace('{codec="json"} 10.0', '{codec="json"} 7.0')
        .replace("chatcap_process_cpu_seconds_total 0.26", "chatcap_process_cpu_seconds_total 0.50")
        .replace('bucket{le="+Inf"} 64.0', 'bucket{le="+Inf"} 70.0')
        .replace("latency_seconds_count 64.0", "latency_seconds_count 70.0")
        .replace('{code="unavailable"} 5.0', '{code="unavailable"} 5.0\n'
                 'chatcap_errors_sent_total{code="store_busy"} 2.0')
    )  # fmt: skip
    delta = after.minus(before)
    assert delta.cpu_s == pytest.approx(0.24)
    assert delta.acks == 6
    assert delta.connections == 7  # a gauge: the later value
    assert delta.errors_by_code() == {"overloaded": 0.0, "unavailable": 0.0, "store_busy": 2.0}
    assert delta.buckets(ACK_LATENCY)[-1] == (math.inf, 6.0)


def test_histogram_quantile_interpolates_inside_the_bucket_as_prometheus_does() -> None:
    buckets = [(0.001, 10.0), (0.002, 30.0), (0.005, 40.0), (math.inf, 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.001)  # rank 10: top of bucket 1
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.0015)  # rank 20: half of bucket 2
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.0004)  # from 0 in the first
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.0038)  # rank 36: 6 of 10


def test_a_rank_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    buckets = [(0.001, 1.0), (0.002, 2.0), (math.inf, 10.0)]
    assert histogram_quantile(0.99, buckets) == 0.002


def test_an_empty_histogram_has_no_quantile_and_a_bad_q_is_refused() -> None:
    assert math.isnan(histogram_quantile(0.5, []))
    assert math.isnan(histogram_quantile(0.5, [(0.001, 0.0), (math.inf, 0.0)]))
    assert math.isnan(Scrape({}).quantile(ACK_LATENCY, 0.99))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        histogram_quantile(99, [(math.inf, 1.0)])
