"""bench.analysis.stages: the model's stages of a Send against the server's, on synthetic
joined frames — the 20 % band, the rest, what is not judged, the one-line summary and the
waterfall figure."""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bench import analysis as an
from chatcap.pipeline.stages import SEND_STAGES

MEASURED_STAGES = {"ingress": 0.10, "queue": 0.20, "commit": 0.30, "fanout": 0.05, "ack": 0.05}
MEASURED_ACK_MEAN = 1.0  # the rest: 1.0 − 0.7 = 0.3 ms
# model ÷ measured per stage: ingress just inside the band, queue just outside
MODEL_SHARE = {"ingress": 1.19, "queue": 0.79, "commit": 1.0, "fanout": 1.1, "ack": 0.9}
MODEL_ACK_MEAN = 0.95


def agg_side(rows: list[dict[str, Any]], source: str) -> pd.DataFrame:
    """An aggregated frame (``<metric>_mean`` / ``_ci95``) from plain per-load values;
    ``bound`` marks a generator-bound point."""
    records = []
    for r in rows:
        rec: dict[str, Any] = {"codec": r.get("codec", "json"), "offered_per_s": r["offered_per_s"]}
        for k, v in r.items():
            if k not in ("codec", "offered_per_s", "bound"):
                rec[f"{k}_mean"], rec[f"{k}_ci95"] = v, 0.0
        rec.update(n=2, source=source, generator_bound=bool(r.get("bound", False)))
        records.append(rec)
    return pd.DataFrame(records)


def stage_values(stages: dict[str, float], ack_mean: float) -> dict[str, float]:
    return {an.stage_column(s): v for s, v in stages.items()} | {"server_ack_mean_ms": ack_mean}


def joined_frame() -> pd.DataFrame:
    """json at five loads: 100/s judged; 150/s without a measured fanout; 200/s
    generator-bound; 400/s above 80 % of the measured saturation (400/s, reached: 1,000/s
    was not sustained) and 1,000/s past it."""
    model = {s: MEASURED_STAGES[s] * MODEL_SHARE[s] for s in SEND_STAGES}
    measured, predicted = [], []
    for load, acked, err in ((100, 100, 0), (150, 150, 0), (200, 200, 0), (400, 400, 0),
                             (1000, 500, 0.05)):  # fmt: skip
        base = {"offered_per_s": float(load), "acked_per_s": float(acked), "error_rate": err}
        m_stages = dict(MEASURED_STAGES)
        if load == 150:
            m_stages["fanout"] = math.nan
        measured.append(
            base | stage_values(m_stages, MEASURED_ACK_MEAN) | {"bound": load == 200}
        )  # fmt: skip
        predicted.append(base | stage_values(model, MODEL_ACK_MEAN))
    return an.join(agg_side(measured, "measured"), agg_side(predicted, "sim"))


def at(table: pd.DataFrame, load: float, stage: str) -> pd.Series:
    (row,) = [r for _, r in table.iterrows() if (r["offered_per_s"], r["stage"]) == (load, stage)]
    return row


def test_the_table_has_each_stage_and_the_rest_per_codec_and_load() -> None:
    table = an.stage_table(joined_frame())
    assert list(table.columns) == list(an.STAGE_COLUMNS)
    assert len(table) == 5 * len(an.STAGE_ROWS)
    first = table[table["offered_per_s"] == 100.0]
    assert first["stage"].tolist() == [*SEND_STAGES, "rest"]
    assert (table["tolerance"] == an.STAGE_TOLERANCE).all() and an.STAGE_TOLERANCE == 0.20


def test_a_stage_just_inside_the_band_passes_and_one_just_outside_misses() -> None:
    table = an.stage_table(joined_frame())
    ingress, queue = at(table, 100.0, "ingress"), at(table, 100.0, "queue")
    assert ingress["rel_error"] == pytest.approx(0.19) and ingress["status"] == "pass"
    assert queue["rel_error"] == pytest.approx(-0.21) and queue["status"] == "miss"
    assert at(table, 100.0, "commit")["status"] == "pass"
    assert (at(table, 100.0, "ingress")["measured_ms"], ingress["predicted_ms"]) == (
        pytest.approx(0.10),
        pytest.approx(0.119),
    )


def test_the_rest_is_the_ack_mean_less_the_five_stages_on_each_side() -> None:
    rest = at(an.stage_table(joined_frame()), 100.0, "rest")
    model_stages = sum(MEASURED_STAGES[s] * MODEL_SHARE[s] for s in SEND_STAGES)
    assert rest["measured_ms"] == pytest.approx(MEASURED_ACK_MEAN - sum(MEASURED_STAGES.values()))
    assert rest["predicted_ms"] == pytest.approx(MODEL_ACK_MEAN - model_stages)
    expected = (rest["predicted_ms"] - rest["measured_ms"]) / rest["measured_ms"]
    assert rest["rel_error"] == pytest.approx(expected)
    assert rest["status"] == ("pass" if abs(expected) <= 0.2 else "miss")


def test_a_missing_stage_is_not_applicable_and_so_is_the_rest_it_leaves_unknown() -> None:
    table = an.stage_table(joined_frame())
    fanout, rest = at(table, 150.0, "fanout"), at(table, 150.0, "rest")
    assert fanout["status"] == rest["status"] == "n/a"
    assert fanout["note"] == rest["note"] == "no measured value"
    assert math.isnan(rest["measured_ms"]) and math.isfinite(rest["predicted_ms"])
    assert at(table, 150.0, "queue")["status"] == "miss"  # the other stages still count


def test_generator_bound_and_overloaded_points_are_not_judged_as_accuracy_rules() -> None:
    joined = joined_frame()
    table = an.stage_table(joined)
    for load, note in ((200.0, "generator-bound point"), (400.0, "above 80% of measured"),
                       (1000.0, "above 80% of measured")):  # fmt: skip
        rows = table[table["offered_per_s"] == load]
        assert set(rows["status"]) == {"n/a"} and rows["note"].str.startswith(note).all(), load
    # the same points accuracy() leaves out
    report = an.accuracy(joined).frame()
    per_load = report[~report["target"].str.startswith("saturation")]
    skipped = set(
        per_load[per_load["note"].str.startswith(("generator", "above"))]["offered_per_s"]
    )
    assert skipped == {200.0, 400.0, 1000.0}
    # with a looser share, 400/s (= the saturation) is judged
    loose = an.stage_table(joined, load_share=1.0)
    assert at(loose, 400.0, "queue")["status"] == "miss"


def test_a_measured_rest_at_or_below_zero_is_not_judged() -> None:
    stages = dict(MEASURED_STAGES)
    over = {"offered_per_s": 100.0, "acked_per_s": 100.0, "error_rate": 0.0}
    m = agg_side([over | stage_values(stages, 0.6)], "measured")  # the stages sum to 0.7
    p = agg_side([over | stage_values(stages, 0.9)], "sim")
    rest = at(an.stage_table(an.join(m, p)), 100.0, "rest")
    assert rest["measured_ms"] == pytest.approx(-0.1)
    assert rest["status"] == "n/a" and "rest ≤ 0" in rest["note"] and math.isnan(rest["rel_error"])


def test_stage_columns_flow_through_aggregate_and_join() -> None:
    """Replication rows as bench run and the model write them: the stage means and the
    ack mean reach the table as means over replications."""
    rows = []
    for source in ("measured", "sim"):
        for rep, scale in ((0, 0.9), (1, 1.1)):
            row: dict[str, Any] = {
                "source": source, "codec": "protobuf", "offered_per_s": 100.0,
                "replication": rep, "seed": rep, "acked_per_s": 100.0, "error_rate": 0.0,
                "generator_bound": False,
            }  # fmt: skip
            k = scale * (1.5 if source == "sim" else 1.0)
            rows.append(row | stage_values({s: k * v for s, v in MEASURED_STAGES.items()}, k))
    frame = pd.DataFrame(rows)
    measured = an.aggregate(frame[frame["source"] == "measured"])
    predicted = an.aggregate(frame[frame["source"] == "sim"])
    table = an.stage_table(an.join(measured, predicted))
    commit = at(table, 100.0, "commit")
    assert commit["measured_ms"] == pytest.approx(0.30) and commit["predicted_ms"] == (
        pytest.approx(0.45)
    )
    assert commit["rel_error"] == pytest.approx(0.5) and commit["status"] == "miss"
    assert at(table, 100.0, "rest")["measured_ms"] == pytest.approx(0.3)


def test_bad_tolerances_are_refused_with_the_name() -> None:
    with pytest.raises(ValueError, match="tolerance = 0"):
        an.stage_table(joined_frame(), tolerance=0)
    with pytest.raises(ValueError, match="load_share = -1"):
        an.stage_table(joined_frame(), load_share=-1)


# ---------------------------------------------------------------------------- the summary


def test_the_summary_counts_the_stage_checks_and_names_the_worst_miss() -> None:
    table = an.stage_table(joined_frame())
    judged = table[table["status"] != "n/a"]
    passed = int((judged["status"] == "pass").sum())
    line = an.stage_summary(table)
    assert line.startswith(
        f"stage means within 20 %: {passed} of {len(judged)} ({len(table) - len(judged)} n/a); "
    )
    assert line.endswith("worst queue -21 % at 100/s json")


def test_the_summary_names_the_largest_miss_by_its_size_whatever_its_sign() -> None:
    table = an.stage_table(joined_frame())
    row = (table["offered_per_s"] == 150.0) & (table["stage"] == "commit")
    table.loc[row, ["rel_error", "status"]] = [0.45, "miss"]
    table["codec"] = table["codec"].where(~row, "protobuf")
    table.loc[row, "offered_per_s"] = 4000.0
    assert an.stage_summary(table).endswith("; worst commit +45 % at 4,000/s protobuf")


def test_the_summary_without_stage_times_or_without_a_miss() -> None:
    plain = {"offered_per_s": 100.0, "acked_per_s": 100.0, "error_rate": 0.0}
    none = an.join(agg_side([plain], "measured"), agg_side([plain], "sim"))
    table = an.stage_table(none)
    assert set(table["status"]) == {"n/a"} and not an.has_stage_times(table)
    assert an.stage_summary(table) == (
        "stage means: no stage times in this run (measured before the stage histograms)"
    )
    same = plain | stage_values(MEASURED_STAGES, MEASURED_ACK_MEAN)
    good = an.stage_table(an.join(agg_side([same], "measured"), agg_side([same], "sim")))
    assert an.has_stage_times(good)
    assert an.stage_summary(good) == "stage means within 20 %: 6 of 6; no miss"
    bound = an.join(agg_side([same | {"bound": True}], "measured"), agg_side([same], "sim"))
    assert an.stage_summary(an.stage_table(bound)) == "stage means within 20 %: none judged (6 n/a)"


# ---------------------------------------------------------------------------- the figure


def two_codecs() -> pd.DataFrame:
    """The synthetic table, again as protobuf at half the times."""
    table = an.stage_table(joined_frame())
    other = table.assign(codec="protobuf")
    other[["measured_ms", "predicted_ms"]] = other[["measured_ms", "predicted_ms"]] / 2
    return pd.concat([table, other], ignore_index=True)


def test_the_waterfall_has_a_panel_per_codec_and_two_bars_of_six_stages_per_load() -> None:
    fig = an.plot_stage_waterfall(two_codecs())
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    judged = 2  # 100/s and 150/s; the others are n/a
    for ax, codec in zip(fig.axes, ("json", "protobuf"), strict=True):
        assert ax.get_title().startswith(codec)
        assert len(ax.patches) == judged * 2 * len(an.STAGE_ROWS)
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == ["100/s measured", "100/s model", "150/s measured", "150/s model"]
        notes = [t.get_text() for t in ax.texts]
        assert "miss: queue -21 %" in notes
        # the measured bar ends at the ack mean: the stages and the rest end to end
        bars = [p for p in ax.patches if isinstance(p, Rectangle)][: len(an.STAGE_ROWS)]
        ends = [p.get_x() + p.get_width() for p in bars]
        scale = 1.0 if codec == "json" else 0.5
        assert max(ends) == pytest.approx(MEASURED_ACK_MEAN * scale)
        legend = ax.get_legend()
        assert legend is not None
        assert [t.get_text() for t in legend.get_texts()] == list(an.STAGE_ROWS)
    fig.savefig(io.BytesIO(), format="png")


def test_the_waterfall_draws_the_loads_asked_for_and_refuses_others() -> None:
    fig = an.plot_stage_waterfall(two_codecs(), loads=[1000.0, 100.0])
    assert [len(ax.patches) for ax in fig.axes] == [2 * 2 * len(an.STAGE_ROWS)] * 2
    with pytest.raises(ValueError, match=r"loads: 123/s is not in the stage table \(have: 100,"):
        an.plot_stage_waterfall(two_codecs(), loads=[123.0])
    fig.savefig(io.BytesIO(), format="png")
