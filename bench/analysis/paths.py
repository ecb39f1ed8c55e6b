"""Where the notebooks' inputs are: paths against the repository root, the newest runs.

:func:`resolve` (relative to the repository root, wherever the kernel runs),
:func:`newest`, :func:`newest_calibration`, :func:`newest_codecs_csv`,
:func:`newest_measured_run`; the committed measured sample (:func:`sample_measured_run`,
:func:`is_sample`, :func:`measured_run_for`).
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


SAMPLE_MEASURED_RUN = "results/samples/measured-quick"
"""A tiny measured run committed with the code (a few KB: manifest and summary), so that
quick mode has measured rows on a fresh checkout. It is a *sample*: measured once, on the
machine its manifest names, not on the machine that reads it."""

SAMPLE_FILE = "SAMPLE.md"
"""A run folder holding this file is a sample; its first paragraph says what it is."""


def sample_measured_run() -> Path:
    """The committed measured sample (:data:`SAMPLE_MEASURED_RUN`), as an absolute path."""
    return resolve(SAMPLE_MEASURED_RUN)


def is_sample(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is a committed sample (it holds :data:`SAMPLE_FILE`)."""
    return (resolve(run_dir) / SAMPLE_FILE).is_file()


def measured_run_for(
    measured_dir: str | Path | None, quick: bool, root: Path | None = None
) -> Path | None:
    """The measured run a notebook reads: ``measured_dir`` when given, else the newest one
    under ``results/``; failing both, the committed sample in quick mode (and None
    otherwise: a full run needs a measurement of its own)."""
    if measured_dir:
        return resolve(measured_dir)
    newest_run = newest_measured_run(root)
    if newest_run is not None:
        return newest_run
    return sample_measured_run() if quick else None
