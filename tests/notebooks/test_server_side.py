"""The model's server-side ack latency (from the frame's arrival stamp) is what the
server's own histogram is held against, when the prediction has it."""

from __future__ import annotations

import pandas as pd
from test_analysis import agg_frame

import bench.analysis as an


def joined(with_server_side: bool) -> pd.DataFrame:
    measured = agg_frame(
        "json",
        [{"offered_per_s": 100.0, "acked_per_s": 100.0, "error_rate": 0.0,
          "ack_p50_ms": 2.0, "ack_p99_ms": 8.0, "server_ack_p50_ms": 1.0,
          "server_ack_p99_ms": 4.0, "deliver_p99_ms": 10.0}],
    )  # fmt: skip
    model = {"offered_per_s": 100.0, "acked_per_s": 100.0, "error_rate": 0.0,
             "ack_p50_ms": 1.3, "ack_p99_ms": 4.6, "deliver_p99_ms": 10.0}  # fmt: skip
    if with_server_side:  # from the stamp: the read before it left out
        model |= {"server_ack_p50_ms": 1.05, "server_ack_p99_ms": 4.2}
    return an.join(measured, agg_frame("json", [model], source="sim"))


def items(report: an.AccuracyReport) -> dict[str, an.AccuracyItem]:
    return {i.target: i for i in report.items}


def test_the_model_from_the_stamp_is_compared_with_the_servers_own_latency() -> None:
    got = items(an.accuracy(joined(with_server_side=True)))
    assert got["ack p50 within 15%"].predicted == 1.05
    assert got["ack p50 within 15%"].status == "pass"
    assert got["ack p99 within 25%"].predicted == 4.2


def test_without_it_the_models_latency_from_the_send_stands_in() -> None:
    got = items(an.accuracy(joined(with_server_side=False)))
    assert got["ack p50 within 15%"].predicted == 1.3  # +30 %: the stamp's offset counts
    assert got["ack p50 within 15%"].status == "miss"
    errors = an.relative_error(joined(with_server_side=True))
    row = errors[errors["metric"] == "server_ack_p50_ms"].iloc[0]
    assert row["model_metric"] == "server_ack_p50_ms" and row["predicted"] == 1.05
