"""The notebooks' logic: load run folders, ask the model, compare, find capacity, plot.

Every notebook in ``notebooks/`` is a parameters cell and calls into this package (and
``sim``) as ``from bench import analysis as an``; everything a notebook shows is
computed here, so the tests reach it. Each section below is a module of the package;
this ``__init__`` re-exports their names, so ``an.X`` works for every one of them.

* **paths** — :func:`resolve` (relative to the repository root, wherever the kernel
  runs), :func:`newest`, :func:`newest_calibration`, :func:`newest_codecs_csv`,
  :func:`newest_measured_run`, the committed measured sample (:func:`measured_run_for`,
  :func:`sample_measured_run`, :func:`is_sample`);
* **loading** — :func:`load_summary` (a run folder's ``summary.csv`` as a frame),
  :func:`aggregate` (mean and 95 % CI per codec and load), :func:`measured_points`;
* **the model** — :func:`sizes` (:data:`QUICK` or :data:`FULL` run sizes),
  :func:`make_executor`, :func:`workload_overrides` (a load → users, rooms, codec),
  :func:`run_points` (any list of scenario overrides × replications on an executor),
  :func:`predict_measured` (the model at a measured run's loads), :func:`sweep_users`;
* **comparison** — :func:`join`, :func:`relative_error`, :func:`saturation_throughput`,
  :func:`knee`, :func:`accuracy` (the targets, as an :class:`AccuracyReport`),
  :func:`knee_items` (the model's capacity per core against the measured one),
  :func:`explain` (where the model fails, in words computed from the numbers);
* **stages** — :func:`stage_table` (each stage of a Send and the rest, measured beside
  modelled, within :data:`STAGE_TOLERANCE`), :func:`stage_summary` (in one line),
  :func:`has_stage_times`;
* **collector** — :func:`collector_table` (the garbage collector at each measured point
  beside the calibration's rates and pauses), :func:`collector_summary` (in one line);
* **capacity** — :class:`SLO`, :func:`bisect_max`, :func:`capacity_users_per_core`,
  :func:`capacity_table` (one search per grid combination), :func:`knee_sweep`,
  :func:`cores_needed`;
* **resilience** — :func:`fault_windows`, :func:`retry_variants`, :func:`timeseries_runs`,
  :func:`band`, :func:`retry_summary`, :func:`measured_timeseries`;
* **codecs** — :func:`envelope_sizes`, :func:`deliver_sizes`, :func:`codec_costs`,
  :func:`latency_histograms`, :func:`latency_figures`;
* **words** — the sentences the notebooks print (``*_text``, :func:`capacity_answer`,
  :func:`explain`), computed from the numbers;
* **bands** — :func:`clip_band`, :func:`clip_yerr`: a 95 % CI clipped to what its axis
  can draw (never below 0; on a log axis never ≤ 0);
* **plots** — ``plot_*``: each returns a ``matplotlib.figure.Figure`` (no pyplot, no
  global state; it renders with Agg anywhere).

Definitions used throughout (one place, so the notebooks and tests agree):

* an *aggregated* frame has one row per (keys, codec) with ``n`` and, for each metric
  ``c``, ``c_mean`` and ``c_ci95`` (``sim.summarize_runs``: Student t, NaN for n = 1);
* **saturation throughput** of a codec: the largest mean goodput (``acked_per_s``) over
  the offered loads whose mean ``error_rate`` is below 1 %, generator-bound points left
  out; it is *reached* when some load was not sustained (error rate ≥ 1 % or goodput
  below 95 % of the offered load), else it is only a lower bound;
* the **knee**: the first offered load whose p99 exceeds ``k`` × the p99 at the lowest
  load (or, given an SLO, the SLO's p99);
* **capacity per core**: the most users whose model run meets the SLO (mean over
  replications of each SLO metric, the ``mix`` row for a codec mix), divided by
  ``server.processes`` — the model runs one event loop per process, one process per core.
"""

from __future__ import annotations

from bench.analysis.bands import LOG_FLOOR_SHARE, clip_band, clip_yerr
from bench.analysis.capacity import (
    GRID_CODEC,
    SLO,
    Capacity,
    bisect_max,
    capacity_table,
    capacity_users_per_core,
    combo_label,
    combo_scenario,
    cores_needed,
    grid_combos,
    knee_sweep,
)
from bench.analysis.codec_costs import (
    codec_costs,
    deliver_sizes,
    envelope_sizes,
    latency_histograms,
)
from bench.analysis.collector import (
    COLLECTOR_COLUMNS,
    NO_COLLECTOR,
    collector_summary,
    collector_table,
)
from bench.analysis.comparison import (
    ACK_P50_TOLERANCE,
    ACK_P99_TOLERANCE,
    COMPARED,
    DELIVERY_P99_TOLERANCE,
    ERROR_MAX,
    KNEE_TOLERANCE,
    LOAD_SHARE,
    SATURATION_TOLERANCE,
    SUSTAINED_SHARE,
    THROUGHPUT_TOLERANCE,
    AccuracyItem,
    AccuracyReport,
    accuracy,
    explain,
    has_measured,
    join,
    knee,
    knee_items,
    relative_error,
    saturation_throughput,
)
from bench.analysis.loading import (
    CODECS,
    aggregate,
    load_summary,
    measured_points,
)
from bench.analysis.model import (
    FULL,
    QUICK,
    InlineExecutor,
    Point,
    Sizes,
    make_executor,
    overall_rows,
    predict_measured,
    run_points,
    sizes,
    sweep_users,
    workload_overrides,
)
from bench.analysis.paths import (
    SAMPLE_MEASURED_RUN,
    is_sample,
    measured_run_for,
    newest,
    newest_calibration,
    newest_codecs_csv,
    newest_measured_run,
    repo_root,
    resolve,
    sample_measured_run,
)
from bench.analysis.plots import (
    COLORS,
    UNITS,
    axis_label,
    latency_figures,
    load_scenario_file,
    plot_by_codec,
    plot_codec_cpu,
    plot_generator_gap,
    plot_knee,
    plot_latency_ccdf,
    plot_outage,
    plot_overlay,
    plot_retry_storm,
    plot_sizes,
    plot_stage_waterfall,
    with_calibration,
)
from bench.analysis.resilience import (
    RETRY_FIXES,
    band,
    fault_windows,
    measured_timeseries,
    recovery_s,
    retry_summary,
    retry_variants,
    timeseries_runs,
)
from bench.analysis.stages import (
    NO_STAGE_TIMES,
    STAGE_COLUMNS,
    STAGE_ROWS,
    STAGE_TOLERANCE,
    has_stage_times,
    stage_column,
    stage_summary,
    stage_table,
)
from bench.analysis.words import (
    calibration_text,
    capacity_answer,
    codec_capacity_text,
    knee_table,
    measured_text,
    outage_text,
    overlay_plan,
    sample_text,
    storm_text,
    trim_grid,
)

__all__ = [
    "ACK_P50_TOLERANCE",
    "ACK_P99_TOLERANCE",
    "CODECS",
    "COLLECTOR_COLUMNS",
    "COLORS",
    "COMPARED",
    "DELIVERY_P99_TOLERANCE",
    "ERROR_MAX",
    "FULL",
    "GRID_CODEC",
    "KNEE_TOLERANCE",
    "LOAD_SHARE",
    "LOG_FLOOR_SHARE",
    "NO_COLLECTOR",
    "NO_STAGE_TIMES",
    "QUICK",
    "RETRY_FIXES",
    "SAMPLE_MEASURED_RUN",
    "SATURATION_TOLERANCE",
    "SLO",
    "STAGE_COLUMNS",
    "STAGE_ROWS",
    "STAGE_TOLERANCE",
    "SUSTAINED_SHARE",
    "THROUGHPUT_TOLERANCE",
    "UNITS",
    "AccuracyItem",
    "AccuracyReport",
    "Capacity",
    "InlineExecutor",
    "Point",
    "Sizes",
    "accuracy",
    "aggregate",
    "axis_label",
    "band",
    "bisect_max",
    "calibration_text",
    "capacity_answer",
    "capacity_table",
    "capacity_users_per_core",
    "clip_band",
    "clip_yerr",
    "codec_capacity_text",
    "codec_costs",
    "collector_summary",
    "collector_table",
    "combo_label",
    "combo_scenario",
    "cores_needed",
    "deliver_sizes",
    "envelope_sizes",
    "explain",
    "fault_windows",
    "grid_combos",
    "has_measured",
    "has_stage_times",
    "is_sample",
    "join",
    "knee",
    "knee_items",
    "knee_sweep",
    "knee_table",
    "latency_figures",
    "latency_histograms",
    "load_scenario_file",
    "load_summary",
    "make_executor",
    "measured_points",
    "measured_run_for",
    "measured_text",
    "measured_timeseries",
    "newest",
    "newest_calibration",
    "newest_codecs_csv",
    "newest_measured_run",
    "outage_text",
    "overall_rows",
    "overlay_plan",
    "plot_by_codec",
    "plot_codec_cpu",
    "plot_generator_gap",
    "plot_knee",
    "plot_latency_ccdf",
    "plot_outage",
    "plot_overlay",
    "plot_retry_storm",
    "plot_sizes",
    "plot_stage_waterfall",
    "predict_measured",
    "recovery_s",
    "relative_error",
    "repo_root",
    "resolve",
    "retry_summary",
    "retry_variants",
    "run_points",
    "sample_measured_run",
    "sample_text",
    "saturation_throughput",
    "sizes",
    "stage_column",
    "stage_summary",
    "stage_table",
    "storm_text",
    "sweep_users",
    "timeseries_runs",
    "trim_grid",
    "with_calibration",
    "workload_overrides",
]
