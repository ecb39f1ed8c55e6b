"""Where the notebooks' inputs are: paths against the repository root, the newest runs.

:func:`resolve` (relative to the repository root, wherever the kernel runs),
:func:`newest`, :func:`newest_calibration`, :func:`newest_codecs_csv`,
:func:`newest_measured_run`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench._support.paths import REPO_ROOT
from chatcap.results import read_manifest


def repo_root() -> Path:
    """The checkout this module lives in (notebooks resolve their paths against it)."""
    return REPO_ROOT


def resolve(path: str | Path) -> Path:
    """An absolute path; a relative one is taken from the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


def newest(pattern: str, root: Path | None = None) -> Path | None:
    """The most recently modified match of ``pattern`` under ``root`` (default: the
    repository), the name breaking ties; None when nothing matches."""
    matches = list((root or repo_root()).glob(pattern))
    if not matches:
        return None
    return max(matches, key=lambda p: (p.stat().st_mtime, p.name))


def newest_calibration(root: Path | None = None) -> Path | None:
    """The newest ``results/calibration/*.json`` (written by ``python -m bench calibrate``)."""
    return newest("results/calibration/*.json", root)


def newest_codecs_csv(root: Path | None = None) -> Path | None:
    """The newest ``results/codecs/*/codecs.csv`` (written by ``python -m bench codecs``)."""
    return newest("results/codecs/*/codecs.csv", root)


def newest_measured_run(root: Path | None = None) -> Path | None:
    """The newest run folder under ``results/`` whose summary holds measured rows
    (``python -m bench run``), by the manifest's creation time; None when there is none."""
    found: list[tuple[str, Path]] = []
    for manifest in (root or repo_root()).glob("results/*/manifest.json"):
        run_dir = manifest.parent
        summary = run_dir / "summary.csv"
        if not summary.exists():
            continue
        try:  # a folder that is not a readable run is not a candidate
            first = pd.read_csv(summary, nrows=1, usecols=["source"])
            created = str(read_manifest(run_dir).get("created_utc", ""))
        except (ValueError, OSError):
            continue
        if len(first) and first["source"].iloc[0] == "measured":
            found.append((created, run_dir))
    return max(found)[1] if found else None
