"""``plot_*``: each returns a ``matplotlib.figure.Figure`` (no pyplot, no global state; it
renders with Agg anywhere). Every 95 % CI band and error bar is clipped to its axis by
:mod:`bench.analysis.bands` (never below 0; on a log axis never at or below 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.analysis.bands import clip_band, clip_yerr
from bench.analysis.capacity import SLO
from bench.analysis.codec_costs import latency_histograms
from bench.analysis.paths import resolve
from bench.analysis.stages import STAGE_ROWS
from chatcap.scenario import CODEC_MIX, Scenario, load_scenario

COLORS = {"json": "tab:blue", "protobuf": "tab:orange", CODEC_MIX: "tab:green"}


def _figure(rows: int = 1, cols: int = 1, **kw: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=kw.pop("figsize", (8, 4.5)), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def _color(name: str, i: int) -> str:
    return COLORS.get(name, f"C{i % 10}")


def plot_knee(
    agg: pd.DataFrame,
    slo: SLO,
    *,
    x: str = "offered_per_core_per_s",
    by: str = "config",
    target: float | None = None,
) -> Figure:
    """p99 of each SLO metric against offered load (mean ± 95 % CI), one line per
    ``by`` group, the SLO as a line and ``target`` (same unit as ``x``) as a mark."""
    fig, axes = _figure(1, len(slo.metrics), figsize=(5 * len(slo.metrics), 4.2), sharey=True)
    for ax, metric in zip(axes[0], slo.metrics, strict=True):
        for i, (name, g) in enumerate(agg.groupby(by, sort=False)):
            g = g.sort_values(x)
            mean = g[f"{metric}_mean"]
            ax.errorbar(
                g[x], mean, yerr=clip_yerr(mean, g[f"{metric}_ci95"], log=True),
                marker="o", capsize=3, color=f"C{i}", label=str(name),
            )  # fmt: skip
        ax.axhline(slo.p99_ms, color="crimson", ls="--", lw=1, label=f"SLO {slo.p99_ms:g} ms")
        if target is not None:
            ax.axvline(target, color="grey", ls=":", lw=1, label="target load")
        ax.set_yscale("log")
        ax.set_xlabel(x.replace("_per_s", " (/s)").replace("_", " "))
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ms (log)")
    axes[0][-1].legend(fontsize=8)
    return fig


UNITS = (
    ("_us_per_msg", "µs per message"),
    ("_per_s", "per second"),
    ("_ms", "ms"),
    ("_rate", "share"),
)


def axis_label(column: str) -> str:
    """``server_ack_p99_ms`` → ``server ack p99 (ms)``: words and the unit in brackets."""
    for suffix, unit in UNITS:
        if column.endswith(suffix):
            return f"{column.removesuffix(suffix).replace('_', ' ')} ({unit})"
    return column.replace("_", " ")


def plot_overlay(
    joined: pd.DataFrame,
    measured: str,
    predicted: str | None = None,
    *,
    title: str | None = None,
    logy: bool = False,
    diagonal: bool = False,
) -> Figure:
    """Measured (markers, 95 % CI bars) and predicted (line, 95 % CI band) ``measured``
    against offered load, per codec; ``diagonal`` draws y = offered (throughput)."""
    predicted = predicted or measured
    fig, axes = _figure(figsize=(7, 4.2))
    ax: Axes = axes[0][0]
    bound_labelled = False
    for i, (codec, g) in enumerate(joined.groupby("codec", sort=True)):
        c = _color(str(codec), i)
        x = g["offered_per_s"]
        ym, yp = g[f"{measured}_mean_measured"], g[f"{predicted}_mean_predicted"]
        em = g.get(f"{measured}_ci95_measured", pd.Series(0.0, index=g.index))
        ep = g.get(f"{predicted}_ci95_predicted", pd.Series(0.0, index=g.index))
        yerr = clip_yerr(ym, em, log=logy)
        ax.errorbar(x, ym, yerr=yerr, fmt="o", color=c, capsize=3, label=f"{codec} measured")
        ax.plot(x, yp, "-", color=c, label=f"{codec} model")
        low, high = clip_band(yp, ep, log=logy)
        ax.fill_between(x, low, high, color=c, alpha=0.2, lw=0)
        bound = g.get("generator_bound_measured", pd.Series(False, index=g.index)).eq(True)
        if bool(bound.any()):
            label = None if bound_labelled else "generator-bound"
            ax.plot(x[bound], ym[bound], "x", color="k", ms=9, label=label)
            bound_labelled = True
    if diagonal:
        lim = float(joined["offered_per_s"].max())
        ax.plot([0, lim], [0, lim], ":", color="grey", lw=1, label="= offered")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("offered load (sends/s)")
    ax.set_ylabel(axis_label(measured))
    ax.set_title(title or f"{measured}: measured vs model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_generator_gap(joined: pd.DataFrame) -> Figure:
    """Client-side minus server-side ack latency (p50 and p99) per codec and load: what
    the load generator and the network add on top of the server."""
    fig, axes = _figure(figsize=(7, 4))
    ax: Axes = axes[0][0]
    for i, (codec, g) in enumerate(joined.groupby("codec", sort=True)):
        c = _color(str(codec), i)
        for q, style in (("p50", "o-"), ("p99", "s--")):
            gap = g[f"ack_{q}_ms_mean_measured"] - g[f"server_ack_{q}_ms_mean_measured"]
            ax.plot(g["offered_per_s"], gap, style, color=c, label=f"{codec} {q}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("offered load (sends/s)")
    ax.set_ylabel("client − server ack latency (ms)")
    ax.set_title("What the load generator adds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _shade(ax: Axes, windows: Sequence[tuple[float, float]]) -> None:
    for i, (a, b) in enumerate(windows):
        ax.axvspan(a, b, color="crimson", alpha=0.08, label="fault episode" if i == 0 else None)


def plot_outage(
    bands: pd.DataFrame,
    windows: Sequence[tuple[float, float]],
    measured: pd.DataFrame | None = None,
) -> Figure:
    """Store outage in the model: breaker state (worst over processes; mean over
    replications), errors/s and goodput/s (mean ± 95 % CI) over time, the fault shaded;
    ``measured`` (:func:`measured_timeseries`) adds the server's goodput."""
    fig, axes = _figure(3, 1, figsize=(8, 7), sharex=True)
    state, errors, good = axes[0][0], axes[1][0], axes[2][0]
    t = bands["t_s"]
    state.step(t, bands["breaker_state_mean"], where="post", color="k")
    state.set_yticks([0, 1, 2], ["closed", "half-open", "open"])
    state.set_title("breaker state (model)")
    for ax, col, color in ((errors, "errors_per_s", "crimson"), (good, "acked_per_s", "tab:green")):
        m, e = bands[f"{col}_mean"], bands[f"{col}_ci95"]
        ax.plot(t, m, color=color, label=f"model {col.replace('_per_s', '')}/s")
        low, high = clip_band(m, e)
        ax.fill_between(t, low, high, color=color, alpha=0.2, lw=0)
    good.plot(t, bands["offered_per_s_mean"], ":", color="grey", label="offered/s")
    if measured is not None and not measured.empty:
        many = measured["point"].nunique() > 4  # one legend entry, not one per point
        for i, (name, g) in enumerate(measured.groupby("point", sort=True)):
            label = ("measured (each point)" if i == 0 else None) if many else f"measured {name}"
            color = "k" if many else f"C{i}"
            good.plot(g["t_s"], g["acked_per_s"], "--", color=color, lw=0.8, label=label)
    for ax in (state, errors, good):
        _shade(ax, windows)
        ax.grid(alpha=0.3)
    errors.set_ylabel("errors/s")
    good.set_ylabel("acked/s")
    good.set_xlabel("time since run start (s)")
    errors.legend(fontsize=8)
    good.legend(fontsize=8)
    return fig


def plot_retry_storm(bands: pd.DataFrame, windows: Sequence[tuple[float, float]]) -> Figure:
    """Goodput and send attempts per second over time for each variant (model, mean over
    replications), the fault episode shaded: the storm is attempts far above goodput."""
    fig, axes = _figure(2, 1, figsize=(8, 6.5), sharex=True)
    good, sent = axes[0][0], axes[1][0]
    for i, (name, g) in enumerate(bands.groupby("variant", sort=False)):
        good.plot(g["t_s"], g["acked_per_s_mean"], color=f"C{i}", label=str(name))
        sent.plot(g["t_s"], g["sent_per_s_mean"], color=f"C{i}", label=str(name))
    good.set_ylabel("acked/s (goodput)")
    sent.set_ylabel("send attempts/s")
    sent.set_xlabel("time since run start (s)")
    for ax in (good, sent):
        _shade(ax, windows)
        ax.grid(alpha=0.3)
    good.legend(fontsize=8)
    return fig


def _bars(ax: Axes, frame: pd.DataFrame, group: str, value: str, by: str = "codec") -> None:
    groups = list(dict.fromkeys(frame[group]))
    series = list(dict.fromkeys(frame[by]))
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        sub = frame[frame[by] == name].set_index(group).reindex(groups)
        xs = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        bars = ax.bar(xs, sub[value], width, color=_color(str(name), i), label=str(name))
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(np.arange(len(groups)), [str(g) for g in groups])
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_sizes(sizes: pd.DataFrame, deliver: pd.DataFrame) -> Figure:
    """Bytes per envelope per codec, and a Deliver's bytes against its body size."""
    fig, axes = _figure(1, 2, figsize=(10, 4))
    _bars(axes[0][0], sizes, "envelope", "bytes")
    axes[0][0].set_yscale("log")
    axes[0][0].set_ylabel("bytes (log)")
    axes[0][0].set_title("encoded envelope size")
    ax = axes[0][1]
    for i, (codec, g) in enumerate(deliver.groupby("codec", sort=True)):
        ax.plot(g["body_bytes"], g["bytes"] - g["body_bytes"], "o-", color=_color(str(codec), i),
                label=str(codec))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("body bytes (log)")
    ax.set_ylabel("frame bytes − body bytes")
    ax.set_title("Deliver overhead per message")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_codec_cpu(costs: pd.DataFrame) -> Figure:
    """ns per encode and per decode, per envelope and codec (log scale)."""
    frame = costs.rename(columns={"format": "codec"})
    fig, axes = _figure(1, 2, figsize=(10, 4), sharey=True)
    for ax, col in zip(axes[0], ("encode_ns", "decode_ns"), strict=True):
        _bars(ax, frame, "envelope", col)
        ax.set_yscale("log")
        ax.set_title(col.replace("_ns", " (ns per op)"))
    axes[0][0].set_ylabel("ns (log)")
    return fig


def plot_latency_ccdf(hist: pd.DataFrame, title: str) -> Figure:
    """1 − CDF of latency per codec and offered load (log–log: the tail is visible)."""
    fig, axes = _figure(figsize=(7, 4.2))
    ax: Axes = axes[0][0]
    for i, ((codec, load), g) in enumerate(hist.groupby(["codec", "offered_per_s"], sort=True)):
        g = g.sort_values("value_ms")
        tail = 1.0 - g["count"].cumsum() / g["count"].sum()
        keep = tail > 0
        ax.plot(g["value_ms"][keep], tail[keep], color=_color(str(codec), 0),
                alpha=0.4 + 0.6 * (i % 4) / 3, label=f"{codec} @ {load:g}/s")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency (ms, log)")
    ax.set_ylabel("share slower (log)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def plot_by_codec(agg: pd.DataFrame, metrics: Sequence[str], ylabel: str, title: str) -> Figure:
    """Each metric's mean (± 95 % CI) against offered load, one line per codec."""
    fig, axes = _figure(figsize=(7, 4.2))
    ax: Axes = axes[0][0]
    styles = ["o-", "s--", "^:", "d-."]
    for i, (codec, g) in enumerate(agg.groupby("codec", sort=True)):
        for j, metric in enumerate(metrics):
            if f"{metric}_mean" not in g or not g[f"{metric}_mean"].notna().any():
                continue
            mean = g[f"{metric}_mean"]
            ax.errorbar(
                g["offered_per_s"], mean, yerr=clip_yerr(mean, g[f"{metric}_ci95"]),
                fmt=styles[j % 4], color=_color(str(codec), i), capsize=3,
                label=f"{codec} {metric}",
            )  # fmt: skip
    ax.set_xlabel("offered load (sends/s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def latency_figures(run_dir: str | Path, measured: pd.DataFrame) -> tuple[str, list[Figure]]:
    """The latency distributions of a measured run per codec: 1 − CDF plots of ack and
    delivery latency from the points' histograms when there are any, else the summary's
    p50 and p99 against load; with a sentence that says which."""
    figs = []
    for name in ("ack", "deliver"):
        hist = latency_histograms(run_dir, name)
        if len(hist):
            figs.append(plot_latency_ccdf(hist, f"{name} latency (client side, every point)"))
    if figs:
        return "Latency distributions from the points' HdrHistograms (`chat.json`).", figs
    figs = [
        plot_by_codec(measured, ["ack_p50_ms", "ack_p99_ms"], "ms", "Ack latency"),
        plot_by_codec(measured, ["deliver_p50_ms", "deliver_p99_ms"], "ms", "Delivery latency"),
    ]
    return "No histograms in `points/*/chat.json`: the summary's percentiles instead.", figs


def with_calibration(scenario: Scenario, calibration: str | Path | None) -> Scenario:
    """``scenario`` costed by ``calibration``: None keeps what the scenario names, ``""``
    the model's built-in costs, a path that file (relative to the repository root)."""
    if calibration is None:
        return scenario
    value = str(resolve(calibration)) if str(calibration) else ""
    return scenario.with_overrides({"sim.calibration": value})


def load_scenario_file(path: str | Path) -> Scenario:
    """``chatcap.scenario.load_scenario`` with the path taken from the repository root."""
    return load_scenario(resolve(path))


def _loads_to_draw(table: pd.DataFrame, loads: Sequence[float] | None) -> list[float]:
    """The loads of a stage table to draw: ``loads`` (each must be in it), else every
    load with a stage judged (``pass`` or ``miss``) for some codec."""
    have = sorted({float(x) for x in table["offered_per_s"]})
    if loads is None:
        judged = table[table["status"].isin(("pass", "miss"))]
        return sorted({float(x) for x in judged["offered_per_s"]})
    out = []
    for load in loads:
        match = [x for x in have if np.isclose(x, float(load), rtol=1e-6, atol=1e-6)]
        if not match:
            listed = ", ".join(f"{x:g}" for x in have) or "none"
            raise ValueError(f"loads: {float(load):g}/s is not in the stage table (have: {listed})")
        out.append(match[0])
    return sorted(set(out))


def _stage_bar(
    ax: Axes, y: float, at: pd.DataFrame, column: str, hatch: str, misses: bool, legend: bool
) -> float:
    """One waterfall bar at ``y``: a segment per stage of ``STAGE_ROWS`` (``at``: one
    load's rows of a stage table, indexed by stage), its width ``column``'s mean (none
    when missing or below 0); ``misses`` edges the stages that missed in red. Returns
    where the bar ends."""
    left = 0.0
    for i, stage in enumerate(STAGE_ROWS):
        value = float(at[column].get(stage, np.nan))
        width = value if np.isfinite(value) and value > 0 else 0.0
        missed = misses and at["status"].get(stage) == "miss"
        ax.barh(
            y, width, left=left, height=0.8, color=f"C{i}", hatch=hatch,
            edgecolor="crimson" if missed else "white", linewidth=1.5 if missed else 0.5,
            label=stage if legend else None,
        )  # fmt: skip
        left += width
    return left


def plot_stage_waterfall(table: pd.DataFrame, loads: Sequence[float] | None = None) -> Figure:
    """The stages of a Send as a waterfall, one panel per codec: per load a measured and a
    modelled (hatched) horizontal bar, each the stages' means
    (:func:`bench.analysis.stage_table`) laid end to end in a Send's order and the rest
    last, so a bar ends at its ack mean. A stage that misses its band is edged in red and
    named beside the model's bar with its error. ``loads``: the offered loads to draw
    (default: every load judged). A missing mean, or a rest below 0, is drawn with no
    width: every bar has one patch per stage of ``STAGE_ROWS``."""
    codecs = sorted({str(c) for c in table["codec"]})
    chosen = _loads_to_draw(table, loads)
    per_codec = max(2.0, 0.8 * max(1, len(chosen)) + 1.2)
    fig, axes = _figure(max(1, len(codecs)), 1, figsize=(9, per_codec * max(1, len(codecs))))
    if not codecs:
        axes[0][0].text(0.5, 0.5, "no stage table", ha="center", va="center")
        axes[0][0].set_axis_off()
        return fig
    for ax, codec in zip((row[0] for row in axes), codecs, strict=True):
        sub = table[table["codec"].astype(str) == codec]
        ticks: list[float] = []
        labels: list[str] = []
        y, widest, named = 0.0, 0.0, False
        for load in chosen:
            at = sub[np.isclose(sub["offered_per_s"].astype(float), load)].set_index("stage")
            for side, column, hatch in (
                ("measured", "measured_ms", ""),
                ("model", "predicted_ms", "//"),
            ):
                first = not ticks
                end = _stage_bar(ax, y, at, column, hatch, side == "model", first)
                widest = max(widest, end)
                misses = at[at["status"] == "miss"] if side == "model" else at.iloc[:0]
                if len(misses):
                    text = ", ".join(
                        f"{stage} {float(r['rel_error']) * 100:+.0f} %"
                        for stage, r in misses.iterrows()
                    )
                    ax.annotate(
                        f"miss: {text}", (end, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7, color="crimson",
                    )  # fmt: skip
                    named = True
                ticks.append(y)
                labels.append(f"{load:,.0f}/s {side}")
                y += 1.0
            y += 0.6
        ax.set_yticks(ticks, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{codec}: stages of a Send, measured vs model (hatched)")
        ax.set_xlabel("mean time (ms): the stages end to end, the rest last (= the ack mean)")
        ax.grid(axis="x", alpha=0.3)
        if widest > 0:  # room on the right for the misses' names
            ax.set_xlim(0, widest * (1.3 if named else 1.05))
        if chosen:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            ax.text(0.5, 0.5, "no load judged", transform=ax.transAxes, ha="center")
    return fig
