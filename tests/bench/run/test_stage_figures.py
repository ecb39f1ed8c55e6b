"""The per-step mean stage times of a Send in ``summary.csv``: Δ sum ÷ Δ count of each
``chatcap_send_stage_seconds{stage}`` series over the measured window, and the server's
mean ack latency beside them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bench._support.metrics_scrape import ACK_LATENCY, SEND_STAGE, Scrape
from bench.run.figures import STAGE_COLUMNS, server_means_ms, summary_row
from bench.run.points import LoadShape, Point
from bench.run.window import Sample, Window
from chatcap.pipeline.stages import SEND_STAGES
from chatcap.results import SUMMARY_COLUMNS, read_table, write_table
from tests.bench.run.test_run import chat_doc


def server_scrape(acks: float, ack_sum_s: float, stages: dict[str, tuple[float, float]]) -> Scrape:
    """A scrape with the ack latency's count and sum and, per stage, ``(count, sum_s)``."""
    samples: dict[Any, float] = {
        ("chatcap_connections", (("codec", "json"),)): 10.0,
        (ACK_LATENCY + "_count", ()): acks,
        (ACK_LATENCY + "_sum", ()): ack_sum_s,
        ("chatcap_process_cpu_seconds_total", ()): acks / 10_000,
        ("chatcap_frames_received_total", (("codec", "json"),)): acks,
    }
    for stage, (count, total_s) in stages.items():
        samples[(SEND_STAGE + "_count", (("stage", stage),))] = count
        samples[(SEND_STAGE + "_sum", (("stage", stage),))] = total_s
        samples[(SEND_STAGE + "_bucket", (("le", "+Inf"), ("stage", stage)))] = count
    return Scrape(samples, frozenset({"chatcap_connections"}))


BEFORE = server_scrape(
    100.0,
    0.5,
    {
        "ingress": (100.0, 0.004),
        "queue": (100.0, 0.009),
        "commit": (100.0, 0.030),
        "fanout": (100.0, 0.002),
        "ack": (100.0, 0.001),
    },
)
AFTER = server_scrape(  # 200 more acks in the window; the fan-out saw none (rooms of one)
    300.0,
    0.5 + 200 * 0.0009,
    {
        "ingress": (300.0, 0.004 + 200 * 40e-6),
        "queue": (300.0, 0.009 + 200 * 90e-6),
        "commit": (300.0, 0.030 + 200 * 300e-6),
        "fanout": (100.0, 0.002),
        "ack": (300.0, 0.001 + 200 * 20e-6),
    },
)


def test_each_stage_mean_is_its_sums_growth_over_its_counts_growth() -> None:
    means = server_means_ms(AFTER.minus(BEFORE))
    assert set(means) == {"server_ack_mean_ms", *STAGE_COLUMNS}
    assert means["server_ack_mean_ms"] == pytest.approx(0.9)
    assert means["server_stage_ingress_ms"] == pytest.approx(0.040)
    assert means["server_stage_queue_ms"] == pytest.approx(0.090)
    assert means["server_stage_commit_ms"] == pytest.approx(0.300)
    assert means["server_stage_ack_ms"] == pytest.approx(0.020)
    assert math.isnan(means["server_stage_fanout_ms"])  # its count did not move
    # what the stages leave out (the loop's wait between commit and Ack) is the rest
    stages = sum(v for k, v in means.items() if k in STAGE_COLUMNS and not math.isnan(v))
    assert means["server_ack_mean_ms"] - stages == pytest.approx(0.9 - 0.45)


def test_a_server_without_stage_series_gives_nan_columns() -> None:
    means = server_means_ms(server_scrape(5.0, 0.01, {}).minus(server_scrape(0.0, 0.0, {})))
    assert means["server_ack_mean_ms"] == pytest.approx(2.0)
    assert all(math.isnan(means[column]) for column in STAGE_COLUMNS)


def test_the_summary_row_carries_the_stage_columns_and_the_schema_knows_them(
    tmp_path: Path,
) -> None:
    point = Point(1, 1, "json", LoadShape(100.0, 10, 10.0, 10.0), 0, 42)
    window = Window(Sample(1.0, BEFORE), Sample(3.0, AFTER))
    row = summary_row("r", "smoke", point, chat_doc(), window, 190.0)
    assert tuple(f"server_stage_{stage}_ms" for stage in SEND_STAGES) == STAGE_COLUMNS
    assert row["server_stage_commit_ms"] == pytest.approx(0.300)
    assert row["server_ack_mean_ms"] == pytest.approx(0.9)
    assert math.isnan(row["server_stage_fanout_ms"])
    documented = {column.name: column for column in SUMMARY_COLUMNS}
    for name in ("server_ack_mean_ms", *STAGE_COLUMNS):
        assert name in documented and not documented[name].required, name
    path = write_table(tmp_path / "summary.csv", [row], SUMMARY_COLUMNS)  # validates the row
    (back,) = read_table(path, SUMMARY_COLUMNS)
    assert back["server_stage_queue_ms"] == pytest.approx(0.090)
