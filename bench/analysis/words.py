"""The sentences the notebooks print (``*_text``, :func:`capacity_answer`), computed from
the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.capacity import SLO, Capacity, cores_needed
from bench.analysis.codec_costs import _shown
from bench.analysis.comparison import has_measured
from bench.analysis.model import Sizes
from bench.analysis.paths import SAMPLE_FILE, is_sample, resolve
from bench.analysis.resilience import recovery_s
from bench.run.figures import CPU_BOUND_PCT
from sim.calibration import load_costs

# The sentences the notebooks print: computed from the numbers, so that a test sees them.


def trim_grid(grid: Mapping[str, Sequence[Any]], quick: bool) -> dict[str, list[Any]]:
    """The grid as lists; with ``quick`` only the first value of each axis."""
    return {k: list(v)[:1] if quick else list(v) for k, v in grid.items()}


def knee_table(knees: pd.DataFrame, slo: SLO) -> pd.DataFrame:
    """The knee sweep as a table: per config and user count, offered load per core, the
    SLO metrics' p99 (mean and 95 % CI) and error rate, and whether the SLO holds."""
    cols = ["config", "users", "users_per_core", "offered_per_core_per_s"]
    for metric in (*slo.metrics, "error_rate"):
        cols += [f"{metric}_mean", f"{metric}_ci95"]
    out = knees[cols].copy()
    out["meets_slo"] = [not slo.misses(r) for r in knees.to_dict("records")]
    return out


def capacity_answer(
    table: pd.DataFrame, caps: Mapping[str, Capacity], target_users: int, sizes: Sizes
) -> str:
    """Markdown: the capacity as one number (the best config of the grid), what the
    target needs, and how the number was found."""
    best = caps[str(table.loc[0, "config"])]
    if best.users == 0:
        return (
            f"**No configuration meets the SLO** ({best.slo.describe()}) even with one room "
            "of users: relax the SLO or change the server."
        )
    cores = cores_needed(target_users, best)
    others = "; ".join(
        f"{r.config}: {r.users_per_core:,.0f}" for r in table.iloc[1:].itertuples(index=False)
    )
    lines = [
        f"**Capacity: {best.users_per_core:,.0f} users per core** with "
        f"`{table.loc[0, 'config']}` — the most users for which the model keeps "
        f"{best.slo.describe()}.",
        f"- The target of {target_users:,} users needs **{cores} core(s)** at that figure.",
        "- *Per core* means per server process: the model runs one event loop per process, "
        "and a loop uses one core.",
        f"- Found by bisection over users ({len(best.trials)} model points, "
        f"{sizes.replications} replications of {sizes.duration_s:g} s each, judged on the "
        f"mean over replications; resolution {sizes.rel_tol:.0%}).",
    ]
    if others:
        lines.append(f"- Other configurations (users per core): {others}.")
    return "\n".join(lines)


def calibration_text(path: str | Path | None) -> str:
    """Which per-operation costs the model uses, in one line."""
    if not path:
        return (
            "The model uses its **built-in costs** (no calibration file): run "
            "`python -m bench calibrate` on this machine for figures that match it."
        )
    costs = load_costs(resolve(path))
    when = f", measured {costs.created_utc}" if costs.created_utc else ""
    return f"The model uses the calibration `{_shown(resolve(path))}` (host {costs.host}{when})."


def _breaker_story(ts: pd.DataFrame) -> str:
    first = ts[ts["replication"] == ts["replication"].min()].sort_values("t_s")
    opened = first[first["breaker_state"] >= 2]
    if opened.empty:
        return "The breaker never opened."
    t_open = float(opened["t_s"].iloc[0])
    closed = first[(first["t_s"] > float(opened["t_s"].iloc[-1])) & (first["breaker_state"] == 0)]
    shut = (
        f"closed again by t = {float(closed['t_s'].iloc[0]):g} s"
        if len(closed)
        else ("was still not closed at the end")
    )
    return f"The breaker opened by t = {t_open:g} s and {shut} (replication 0)."


def outage_text(
    ts: pd.DataFrame,
    windows: Sequence[tuple[float, float]],
    measured_dir: str | Path | None,
    measured: pd.DataFrame | None,
) -> str:
    """Markdown about the outage run: the breaker's course, the errors, the recovery,
    and plainly whether the measured overlay was run."""
    lines = [f"- {_breaker_story(ts)}"]
    if windows:
        start, end = windows[0]
        during = ts[(ts["t_s"] > start) & (ts["t_s"] <= end)]
        lines.append(
            f"- During the fault ({start:g}–{end:g} s) the model answers "
            f"{during['errors_per_s'].mean():,.0f} errors/s and acks "
            f"{during['acked_per_s'].mean():,.0f}/s (mean over replications)."
        )
        rec = [recovery_s(g, end) for _, g in ts.groupby("replication")]
        mean_rec = float(np.nanmean(rec)) if not all(math.isnan(r) for r in rec) else math.nan
        lines.append(
            f"- Goodput is back to 90 % of the offered load {mean_rec:.1f} s after the fault ends."
            if math.isfinite(mean_rec)
            else "- Goodput does not get back to 90 % of the offered load within the run."
        )
    if measured_dir is None:
        lines.append(
            "- **The measured overlay was not run**: `measured_outage_dir` is None. Measure "
            "the server with the fault injected (`python -m bench run --scenario "
            "scenarios/store-outage.toml …`) and pass that run folder to overlay it."
        )
    elif measured is None or measured.empty:
        lines.append(
            f"- **The measured overlay is empty**: `{measured_dir}` has no `points/*/samples.csv`."
        )
    else:
        lines.append(
            f"- Measured overlay: {measured['point'].nunique()} point(s) from `{measured_dir}` — "
            "the server's goodput from its `/metrics` scrapes, time counted from the first "
            "in-run scrape (the server's fault clock starts a little earlier, at its start)."
        )
    return "\n".join(lines)


def storm_text(summary: pd.DataFrame) -> str:
    """Markdown comparing the retry-storm variants (:func:`retry_summary`)."""
    by = summary.set_index("variant")
    base = by["goodput_per_s"].get("as configured")
    lines = []
    for name, r in by.iterrows():
        rec = (
            f"recovers {r['recovery_s']:.1f} s after the spike"
            if math.isfinite(r["recovery_s"])
            else "does not recover within the run"
        )
        same = name != "as configured" and base and abs(r["goodput_per_s"] / base - 1) < 0.05
        lines.append(
            f"- **{name}**: goodput {r['goodput_per_s']:,.0f}/s, {r['attempts_per_msg']:.2f} "
            f"attempts per message, error rate {r['error_rate']:.1%}; {rec}"
            + (" — no better than as configured: alone, this fix does not break the storm."
               if same else ".")
        )  # fmt: skip
    fixes = by.drop(index=["as configured", "all fixes"], errors="ignore")
    if len(fixes):
        best = str(fixes["goodput_per_s"].idxmax())
        lines.append(f"- The single fix that keeps the most goodput: **{best}**.")
    return "\n".join(lines)


def sample_text(run_dir: str | Path) -> str:
    """For a committed sample (:func:`~bench.analysis.paths.is_sample`), a sentence that
    says so, with the first paragraph of its ``SAMPLE.md``; empty for a real run."""
    if not is_sample(run_dir):
        return ""
    about = (resolve(run_dir) / SAMPLE_FILE).read_text(encoding="utf-8").strip()
    first = " ".join(about.split("\n\n")[0].split())
    return (
        f"**This is the committed sample `{_shown(resolve(run_dir))}`, not a measurement of "
        f"this machine** — {first} For figures that mean something here, measure with "
        "`python -m bench run` and pass its folder (`--measured`, or `measured_dir`)."
    )


def measured_text(run_dir: str | Path, measured: pd.DataFrame) -> str:
    """One paragraph on a measured run: codecs, loads, replications, generator-bound;
    a committed sample says so first (:func:`sample_text`)."""
    loads = sorted(set(measured["offered_per_s"].astype(float)))
    codecs = ", ".join(sorted(set(measured["codec"].astype(str))))
    reps = int(measured["n"].max()) if len(measured) else 0
    text = (
        f"Measured run `{_shown(resolve(run_dir))}`: {codecs} at {len(loads)} offered load(s) "
        f"({', '.join(f'{x:g}' for x in loads)} sends/s), up to {reps} replication(s) each."
    )
    bound = int(measured["generator_bound"].eq(True).sum())
    if bound:
        text += f" {bound} point(s) are generator-bound: shown with ×, not judged."
    if len(loads) < 4:
        text += f" **Only {len(loads)} load(s)**: at least 4 are needed to see the curve bend."
    sample = sample_text(run_dir)
    return f"{sample}\n\n{text}" if sample else text


def overlay_plan(joined: pd.DataFrame) -> list[tuple[str, str, str, bool]]:
    """The overlay plots to draw, in order: (measured column, model column, title, log y)
    — the server's own ack latency first when measured, then the generator's, then
    goodput against offered load."""
    plan = []
    for side, prefix in (("server side", "server_"), ("client side", "")):
        for q in ("p50", "p99"):
            if has_measured(joined, f"{prefix}ack_{q}_ms"):
                plan.append((f"{prefix}ack_{q}_ms", f"ack_{q}_ms", f"ack {q} ({side})", True))
    plan.append(("acked_per_s", "acked_per_s", "acked/s against offered/s", False))
    return plan


def codec_capacity_text(table: pd.DataFrame, slo: SLO) -> str:
    """Markdown: users per core per codec at the SLO, and the ratio between them."""
    by = table.set_index("config")["users_per_core"]
    parts = [
        f"{config.removeprefix('codec=')}: **{users:,.0f}** users per core"
        for config, users in by.items()
    ]
    text = f"At {slo.describe()}: " + "; ".join(parts) + "."
    json_users, pb_users = by.get("codec=json"), by.get("codec=protobuf")
    if json_users and pb_users:
        text += (
            f" Protobuf carries {pb_users / json_users - 1:+.0%} users per core relative to JSON."
        )
    return text


# ---------------------------------------------------------------------------- measured capacity


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ci(low: float, high: float, repeats: int) -> str:
    if math.isfinite(low) and math.isfinite(high):
        return f"95 % CI {low:,.0f}–{high:,.0f}"
    return f"no CI: {repeats} repeat{'s' if repeats != 1 else ''}"


def ran_out_text(cap: Mapping[str, Any]) -> str:
    """For a generator-limited search: which side ran out and by how much, e.g.
    ``generator-bound at 1,800 sends/s: Locust at 97 % of its cores; the server used
    60 % of its core``."""
    gen, srv = _num(cap.get("limit_generator_cpu_pct")), _num(cap.get("limit_server_cpu_pct"))
    cores = int(_num(cap.get("server_cores")) or 1)
    parts = [f"generator-bound at {_num(cap.get('limit_offered_per_s')):,.0f} sends/s"]
    side = []
    if math.isfinite(gen):
        side.append(f"Locust at {gen:.0f} % of its cores")
        if gen < CPU_BOUND_PCT:  # it was not its own CPU: it was kept waiting
            side[-1] += (
                " (not CPU-bound itself: its sends were held up, e.g. by other work on its CPU)"
            )
    if math.isfinite(srv):
        side.append(f"the server used {srv:.0f} % of its core{'s' if cores > 1 else ''}")
    text = parts[0] + (": " + "; ".join(side) if side else "")
    why = str(cap.get("why") or "")
    return f"{text} ({why})" if why else text


_BROKE = {
    "slo": "the SLO broke",
    "throughput": "throughput stopped following",
    "failed": "a step failed",
    "none": "no bound found",
}


def capacity_line(cap: Mapping[str, Any], model_per_core_per_s: float = math.nan) -> str:
    """One ``capacity.csv`` row in words: the measured capacity per server core with its
    CI — or, when the search could not reach a server limit, which side ran out — the CPU
    sets, and beside it (when given) the model's capacity and measured ÷ model."""
    codec, limited = str(cap["codec"]), str(cap["limited_by"])
    cores = int(_num(cap.get("server_cores")) or 1)
    per_core = _num(cap.get("per_server_core_per_s"))
    ci = _ci(_num(cap.get("per_core_ci_low_per_s")), _num(cap.get("per_core_ci_high_per_s")),
             int(_num(cap.get("repeats")) or 0))  # fmt: skip
    at = _num(cap.get("capacity_offered_per_s"))
    knee = _num(cap.get("knee_per_s"))
    where = (
        f"server CPU {cap.get('server_cpus', '?')}, generator CPU {cap.get('generator_cpus', '?')}"
    )
    head = f"capacity per core, {codec:8}: "
    if limited == "generator":
        body = f"not reached — {ran_out_text(cap)}"
        if at > 0:
            body += f"; the highest step it kept held the SLO: {per_core:,.0f} sends/s ({ci})"
    elif limited == "max_load":
        body = (
            f"not reached — the SLO held up to the highest offer allowed, {at:,.0f} sends/s "
            f"({per_core:,.0f} per core, {ci})"
        )
    elif at <= 0:
        body = f"none — no offer met the SLO, down to {knee:,.0f} sends/s ({cap.get('why', '')})"
    else:
        broke = _BROKE.get(limited, limited)
        body = (
            f"{per_core:,.0f} sends/s measured ({ci}; at {at:,.0f}/s offered, "
            f"{broke} at {knee:,.0f}/s: {cap.get('why', '')})"
        )
    text = f"{head}{body}; {where}" + (f" ({cores} cores)" if cores > 1 else "")
    if math.isfinite(model_per_core_per_s) and model_per_core_per_s > 0:
        text += f"; model {model_per_core_per_s:,.0f} sends/s"
        if limited not in ("generator", "max_load") and at > 0:
            text += f", measured/model {per_core / model_per_core_per_s:.2f}"
        elif limited == "generator":
            limit = _num(cap.get("limit_offered_per_s")) / cores
            text += f" (the generator ran out at {limit / model_per_core_per_s:.0%} of it)"
    return text
