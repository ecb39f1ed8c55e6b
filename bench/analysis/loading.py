"""Loading run folders: :func:`load_summary` (a run folder's ``summary.csv`` as a frame),
:func:`aggregate` (mean and 95 % CI per codec and load), :func:`measured_points`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analysis.paths import resolve
from chatcap.results import read_manifest, read_run
from chatcap.scenario import CODEC_NAMES, Scenario, load_scenario_data
from sim.api import summarize_runs

CODECS = CODEC_NAMES


def load_summary(run_dir: str | Path) -> pd.DataFrame:
    """A run folder's summary rows (validated by ``chatcap.results.read_run``) as a frame;
    ``generator_bound`` is a bool column (False where absent) and ``note`` a string."""
    run = read_run(resolve(run_dir))
    frame = run.summary_frame()
    if frame.empty:
        raise ValueError(f"{run.path}: summary.csv has no rows")
    flags = frame["generator_bound"] if "generator_bound" in frame else [None] * len(frame)
    frame["generator_bound"] = [v is True for v in flags]
    notes = frame["note"] if "note" in frame else [None] * len(frame)
    frame["note"] = [v or "" for v in notes]
    return frame


def aggregate(rows: pd.DataFrame, keys: Sequence[str] = ("offered_per_s",)) -> pd.DataFrame:
    """Mean and 95 % CI of every numeric column per (keys, codec) — ``sim.summarize_runs``
    — plus ``generator_bound`` (any replication was) and ``source``."""
    keys = list(keys)
    rows = rows.drop(columns=["point"], errors="ignore")
    if "generator_bound" not in rows:
        rows = rows.assign(generator_bound=False)
    rows = rows.assign(generator_bound=rows["generator_bound"].eq(True))
    out = summarize_runs(rows, keys)
    by = [*keys, "codec"]
    extra = rows.groupby(by, sort=False, dropna=False).agg(
        source=("source", "first"), generator_bound=("generator_bound", "any")
    )
    out = out.merge(extra.reset_index(), on=by, how="left")
    return out.sort_values(by, kind="stable").reset_index(drop=True)


def measured_points(run_dir: str | Path) -> pd.DataFrame:
    """The distinct (codec, offered load) points of a measured run with their users and
    per-user rate: from the manifest's ``points`` when present, else derived from the
    summary rows and the scenario's per-user rate (as ``bench run`` does)."""
    path = resolve(run_dir)
    manifest = read_manifest(path)
    if manifest.get("points"):
        frame = pd.DataFrame(manifest["points"])
    else:
        scenario = _manifest_scenario(manifest, path)
        frame = load_summary(path)[["codec", "offered_per_s"]].copy()
        rate = scenario.workload.send_rate_per_user_per_s
        frame["users"] = [max(1, round(x / rate)) for x in frame["offered_per_s"]]
        frame["send_rate_per_user_per_s"] = frame["offered_per_s"] / frame["users"]
    cols = ["codec", "offered_per_s", "users", "send_rate_per_user_per_s"]
    frame = frame[cols].drop_duplicates(["codec", "offered_per_s"])
    return frame.sort_values(["codec", "offered_per_s"]).reset_index(drop=True)


def _manifest_scenario(manifest: Mapping[str, Any], where: Path) -> Scenario:
    if not manifest.get("scenario"):
        raise ValueError(f"{where}: the manifest holds no resolved scenario")
    return load_scenario_data(manifest["scenario"], source=f"{where}/manifest.json")
