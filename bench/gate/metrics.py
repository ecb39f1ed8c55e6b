"""What a trial of the regression gate measures: the metrics and ``trials.csv``'s columns.

:data:`METRICS` (name, kind ``cpu`` / ``bytes`` / ``ratio``, unit, doc) and
:data:`TRIAL_COLUMNS` are the schema both sides share: :mod:`bench.gate.trials` writes
it, :mod:`bench.gate.verdict` reads and compares it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chatcap.results import (
    Column,
)
from chatcap.scenario import CODEC_NAMES

Kind = Literal["cpu", "bytes", "ratio"]
Alternative = Literal["worse", "two-sided"]
Normalise = Literal["trial", "run", "none"]
NORMALISE_MODES: tuple[Normalise, ...] = ("trial", "run", "none")
NORMALISE_DOC = {
    "trial": "÷ the speed factor of their own trial (norm.)",
    "run": "÷ the median speed factor of their run (norm.)",
    "none": "raw, not normalised",
}
TRIALS_FILE = "trials.csv"

ROOM_SIZE = 20
N_BOOT = 2000
MIN_TRIALS = 3
PROBES_PER_GAP = 3  # probe runs before each server case and after the last one
DEFAULT_BASELINE = Path("results/baseline")


@dataclass(frozen=True)
class Metric:
    name: str  # the column in trials.csv
    kind: Kind
    unit: str
    doc: str


def _metrics() -> tuple[Metric, ...]:
    out = []
    for c in CODEC_NAMES:
        out.append(Metric(f"echo_{c}_cpu_us_per_msg", "cpu", "µs/msg", f"echo, {c}"))
    for c in CODEC_NAMES:
        doc = f"fan-out to a room of {ROOM_SIZE}, {c}"
        out.append(Metric(f"fanout_{c}_cpu_us_per_delivery", "cpu", "µs/delivery", doc))
    for c in CODEC_NAMES:
        out.append(Metric(f"deliver_{c}_bytes", "bytes", "bytes", f"encoded chat Deliver, {c}"))
    for c in CODEC_NAMES:
        for op in ("encode", "decode"):
            doc = f"our {c} {op} / the bare library's (chat Deliver)"
            out.append(Metric(f"{c}_{op}_ratio", "ratio", "×", doc))
    return tuple(out)


METRICS: tuple[Metric, ...] = _metrics()
BY_NAME = {m.name: m for m in METRICS}

TRIAL_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier."),
    Column("trial", "int", "Trial index within the run, from 0."),
    Column("started_utc", "str", "When the trial started, ISO-8601."),
    Column(
        "probe_cpu_ms", "float", "Median CPU ms of the trial's probe runs (bench/gate/probe.py)."
    ),
    Column("speed_factor", "float", "probe_cpu_ms / the probe's reference: CPU metrics ÷ it."),
    *(
        Column(m.name, "int" if m.kind == "bytes" else "float", f"{m.doc}, {m.unit} (raw).")
        for m in METRICS
    ),
)


class GateError(ValueError):
    """Bad input to the gate (a folder, a column, an option); one line for the user."""
