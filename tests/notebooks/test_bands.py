"""bench.analysis.bands: CI bands clipped to the axis, and the figures that draw them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure

from bench import analysis as an

# ---------------------------------------------------------------------------- the rule


def test_a_band_with_a_negative_lower_bound_is_clipped_to_zero_on_a_linear_axis() -> None:
    low, high = an.clip_band([1.0, 10.0, 0.0], [3.0, 2.0, 0.5])
    assert low.tolist() == [0.0, 8.0, 0.0]
    assert high.tolist() == [4.0, 12.0, 0.5]


def test_on_a_log_axis_the_lower_bound_stays_above_zero() -> None:
    low, high = an.clip_band(pd.Series([1.0, 10.0, 4.0]), pd.Series([3.0, 2.0, 4.0]), log=True)
    assert low.tolist() == [an.LOG_FLOOR_SHARE * 1.0, 8.0, an.LOG_FLOOR_SHARE * 4.0]
    assert (low > 0).all()
    assert high.tolist() == [4.0, 12.0, 8.0]


def test_on_a_log_axis_a_given_floor_is_the_lower_limit_but_never_above_the_mean() -> None:
    low, _ = an.clip_band([1.0, 10.0, 0.05], [3.0, 2.0, 0.2], log=True, floor=0.1)
    assert low.tolist() == [0.1, 8.0, 0.05]


def test_a_point_at_or_below_zero_has_no_band_on_a_log_axis() -> None:
    low, high = an.clip_band([0.0, -1.0, 2.0], [1.0, 1.0, 1.0], log=True)
    assert math.isnan(low[0]) and math.isnan(low[1]) and math.isnan(high[0])
    assert (low[2], high[2]) == (1.0, 3.0)


def test_a_nan_half_width_is_a_band_of_zero_width() -> None:
    low, high = an.clip_band([5.0], [math.nan])
    assert (low[0], high[0]) == (5.0, 5.0)


def test_clip_yerr_gives_the_clipped_lengths_below_and_above() -> None:
    yerr = an.clip_yerr([1.0, 10.0, 0.0], [3.0, 2.0, 1.0], log=True)
    assert yerr.shape == (2, 3)
    assert yerr[0].tolist() == pytest.approx([1.0 - an.LOG_FLOOR_SHARE, 2.0, 0.0])
    assert yerr[1].tolist() == [3.0, 2.0, 0.0]
    assert an.clip_yerr([1.0], [3.0])[:, 0].tolist() == [1.0, 3.0]


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"mean": [1.0], "half_width": [-1.0]}, "half_width must be ≥ 0"),
        ({"mean": [1.0, 2.0], "half_width": [1.0]}, "shape"),
        ({"mean": [1.0], "half_width": [1.0], "log": True, "floor": 0.0}, "must be > 0"),
        ({"mean": [1.0], "half_width": [1.0], "floor": 0.1}, "for a log axis"),
    ],
)
def test_clip_band_refuses_bad_input_saying_what(kwargs: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        an.clip_band(**kwargs)


# ---------------------------------------------------------------------------- the figures

WIDE = 3.0  # every half width is three times the mean: each unclipped band dips below 0


def _lowest_band_edge(ax: Axes) -> float:
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert polys, "no band drawn"
    return min(float(np.nanmin(p.get_paths()[0].vertices[:, 1])) for p in polys)


def _lowest_bar_end(ax: Axes) -> float:
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert bars, "no error bars drawn"
    return min(float(np.min(seg[:, 1])) for b in bars for seg in b.get_segments())


def wide_joined(metric: str) -> pd.DataFrame:
    loads = [50.0, 100.0, 200.0]
    means = [1.0, 2.0, 4.0]
    return pd.DataFrame(
        {
            "codec": "json",
            "offered_per_s": loads,
            f"{metric}_mean_measured": means,
            f"{metric}_ci95_measured": [WIDE * m for m in means],
            f"{metric}_mean_predicted": means,
            f"{metric}_ci95_predicted": [WIDE * m for m in means],
        }
    )


@pytest.mark.parametrize("logy", [False, True])
def test_the_overlay_band_and_bars_stay_on_the_axis(logy: bool) -> None:
    fig: Figure = an.plot_overlay(wide_joined("ack_p99_ms"), "ack_p99_ms", logy=logy)
    ax = fig.axes[0]
    if logy:
        assert _lowest_band_edge(ax) == pytest.approx(an.LOG_FLOOR_SHARE * 1.0)
        assert _lowest_bar_end(ax) == pytest.approx(an.LOG_FLOOR_SHARE * 1.0)
    else:
        assert _lowest_band_edge(ax) == 0.0 and _lowest_bar_end(ax) == 0.0


def test_the_knee_bars_stay_above_zero_on_their_log_axis() -> None:
    means = [1.0, 2.0]
    agg = pd.DataFrame(
        {
            "config": "c",
            "offered_per_core_per_s": [10.0, 20.0],
            "ack_p99_ms_mean": means,
            "ack_p99_ms_ci95": [WIDE * m for m in means],
            "deliver_p99_ms_mean": means,
            "deliver_p99_ms_ci95": [WIDE * m for m in means],
        }
    )
    fig = an.plot_knee(agg, an.SLO(50.0))
    for ax in fig.axes:
        assert ax.get_yscale() == "log"
        assert _lowest_bar_end(ax) == pytest.approx(an.LOG_FLOOR_SHARE * 1.0)


def test_the_outage_bands_never_go_below_zero() -> None:
    t = np.arange(4.0)
    bands = pd.DataFrame(
        {
            "t_s": t,
            "breaker_state_mean": 0.0,
            "offered_per_s_mean": 100.0,
            "acked_per_s_mean": [100.0, 5.0, 5.0, 100.0],
            "acked_per_s_ci95": [0.0, 60.0, 60.0, 0.0],
            "errors_per_s_mean": [0.0, 90.0, 2.0, 0.0],
            "errors_per_s_ci95": [0.0, 10.0, 40.0, 0.0],
        }
    )
    fig = an.plot_outage(bands, [(1.0, 2.0)])
    errors, good = fig.axes[1], fig.axes[2]
    assert _lowest_band_edge(errors) == 0.0 and _lowest_band_edge(good) == 0.0


def test_by_codec_bars_never_go_below_zero() -> None:
    agg = pd.DataFrame(
        {
            "codec": "json",
            "offered_per_s": [50.0, 100.0],
            "ack_p50_ms_mean": [1.0, 2.0],
            "ack_p50_ms_ci95": [3.0, 1.0],
        }
    )
    fig = an.plot_by_codec(agg, ["ack_p50_ms"], "ms", "ack")
    assert _lowest_bar_end(fig.axes[0]) == 0.0
