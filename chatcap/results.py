"""The results schema shared by measured, simulated and theoretical runs.

A run is a folder ``results/<run-id>/`` holding

* ``manifest.json`` — who/what/when: run id, creation time, git sha, command line,
  the fully resolved scenario, seed, machine and package versions;
* ``summary.csv`` — one row per (source, codec, offered load, replication), with the
  columns of :data:`SUMMARY_COLUMNS`;
* optionally ``requests.csv`` — one row per send attempt (:data:`REQUEST_COLUMNS`),
  ``capacity.csv`` — one row per codec from a capacity search (:data:`CAPACITY_COLUMNS`),
  and any other files a driver adds beside them (histograms, reports).

Every column is documented here once, with its unit; ``results/README.md`` renders the
same table for people (a test keeps the two in step). Reading a folder validates it and
names the file, the column and the row of anything missing or malformed.

This module touches files (that is its job) but never reads a clock: times are passed in.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from chatcap.pipeline.stages import GC_GENERATIONS

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
SUMMARY_FILE = "summary.csv"
REQUESTS_FILE = "requests.csv"

Kind = Literal["str", "int", "float", "bool"]
SOURCES = ("measured", "sim", "theory")
OUTCOMES = ("acked", "rate_limited", "overloaded", "store_busy", "unavailable", "timeout", "error")


class ResultsError(ValueError):
    """A run folder (or a row about to be written) does not follow the schema."""


@dataclass(frozen=True, slots=True)
class Column:
    """One documented column: name (with its unit), value kind, meaning."""

    name: str
    kind: Kind
    doc: str
    required: bool = True


SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier, same as the folder name."),
    Column("scenario", "str", "Scenario name (`name` in the TOML file)."),
    Column("source", "str", "Where the row comes from: `measured`, `sim` or `theory`."),
    Column("codec", "str", "Wire codec: `json`, `protobuf`, or `mix` for a codec mix."),
    Column("replication", "int", "Replication index within the run, from 0."),
    Column("seed", "int", "Seed of this replication (derived per replication)."),
    Column("offered_per_s", "float", "Offered send rate, messages per second."),
    Column("acked_per_s", "float", "Acked sends per second after warm-up (goodput)."),
    Column("delivered_per_s", "float", "Deliveries to room members per second."),
    Column("ack_mean_ms", "float", "Mean ack latency, ms, from intended send time."),
    Column("ack_p50_ms", "float", "Median ack latency, ms."),
    Column("ack_p99_ms", "float", "99th-percentile ack latency, ms."),
    Column("deliver_p50_ms", "float", "Median delivery latency (sender stamp to receipt), ms."),
    Column("deliver_p99_ms", "float", "99th-percentile delivery latency, ms."),
    Column("error_rate", "float", "Share of send attempts not acked (0..1)."),
    Column("server_cpu_us_per_msg", "float", "Server CPU time per acked message, µs."),
    Column("bytes_per_msg", "float", "Encoded Deliver frame size, bytes."),
    Column("duration_s", "float", "Measured interval after warm-up, s.", required=False),
    Column("sent_total", "int", "Send attempts in the measured interval.", required=False),
    Column("acked_total", "int", "Acks in the measured interval.", required=False),
    Column("ack_p999_ms", "float", "99.9th-percentile ack latency, ms.", required=False),
    Column(
        "server_ack_p50_ms",
        "float",
        "Server-side median ack latency (Send received → Ack sent), ms, interpolated within "
        "the buckets of `chatcap_ack_latency_seconds` (measured runs); the model's rows: "
        "the median of its requests' `server_ack_ms`.",
        required=False,
    ),
    Column(
        "server_ack_p99_ms",
        "float",
        "Server-side 99th-percentile ack latency, ms, as `server_ack_p50_ms`.",
        required=False,
    ),
    Column(
        "server_ack_mean_ms",
        "float",
        "Server-side mean ack latency, ms: Δ sum ÷ Δ count of `chatcap_ack_latency_seconds` "
        "(measured runs; the model's rows: the mean of its requests' `server_ack_ms`).",
        required=False,
    ),
    Column(
        "server_stage_ingress_ms",
        "float",
        "Mean time of a Send's `ingress` stage (frame read → write queue: decode, limiter, "
        "checks, dedup), ms: Δ sum ÷ Δ count of `chatcap_send_stage_seconds{stage}`; in "
        "the model's rows the same stage as the model charges it (`sim.model.STAGES`).",
        required=False,
    ),
    Column(
        "server_stage_queue_ms",
        "float",
        "Mean `queue` stage (write queue → its batch cut), ms, as `server_stage_ingress_ms`.",
        required=False,
    ),
    Column(
        "server_stage_commit_ms",
        "float",
        "Mean `commit` stage (batch cut → rows settled: pool wait, commit turn, commit), ms, "
        "as `server_stage_ingress_ms`.",
        required=False,
    ),
    Column(
        "server_stage_fanout_ms",
        "float",
        "Mean `fanout` stage (Delivers to the room's other members), ms, as "
        "`server_stage_ingress_ms`.",
        required=False,
    ),
    Column(
        "server_stage_ack_ms",
        "float",
        "Mean `ack` stage (encoding and writing the Ack), ms, as `server_stage_ingress_ms`; "
        "`server_ack_mean_ms` less the five stages is the loop's wait between commit and Ack.",
        required=False,
    ),
    *(
        Column(
            f"server_gc{g}_per_kmsg",
            "float",
            f"Generation-{g} collections of the garbage collector per 1,000 acked messages: "
            "Δ count of `chatcap_gc_pause_seconds{generation}` (measured runs; `bench."
            "analysis.collector_table` holds them against the calibration's rates).",
            required=False,
        )
        for g in GC_GENERATIONS
    ),
    *(
        Column(
            f"server_gc{g}_pause_ms",
            "float",
            f"Mean pause of a generation-{g} collection, ms: Δ sum ÷ Δ count of "
            "`chatcap_gc_pause_seconds{generation}` (measured runs; NaN: none collected).",
            required=False,
        )
        for g in GC_GENERATIONS
    ),
    Column(
        "generator_bound",
        "bool",
        "True when the load generator, not the server, limited the run.",
        required=False,
    ),
    Column("note", "str", "Free text: why a row is special.", required=False),
)

REQUEST_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier."),
    Column("source", "str", "`measured` or `sim`."),
    Column("codec", "str", "Wire codec of the sender."),
    Column("replication", "int", "Replication index."),
    Column("offered_per_s", "float", "Offered load of the row's sweep point, msgs/s."),
    Column("user", "int", "Sender index."),
    Column("room", "int", "Room index."),
    Column("msg", "int", "Message index of the sender (shared by its retries)."),
    Column("attempt", "int", "Attempt number, 1 = first try."),
    Column("intended_s", "float", "Scheduled send time, s from run start (open loop)."),
    Column("sent_s", "float", "Actual send time, s from run start."),
    Column("done_s", "float", "Time of the ack or final outcome, s from run start."),
    Column("outcome", "str", "One of: " + ", ".join(OUTCOMES) + "."),
    Column("ack_ms", "float", "done_s − intended_s in ms (NaN unless acked)."),
    Column(
        "server_ack_ms",
        "float",
        "The model's server-side ack latency, ms: done_s less the frame's arrival stamp on "
        "the server (its t_in; NaN unless acked; model rows only).",
        required=False,
    ),
)

CAPACITY_FILE = "capacity.csv"
LIMITS = ("slo", "throughput", "failed", "generator", "max_load", "none")

CAPACITY_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier, same as the folder name."),
    Column("scenario", "str", "Scenario name (`name` in the TOML file)."),
    Column("source", "str", "`measured` (`bench run --find-capacity`)."),
    Column("codec", "str", "Wire codec of every user in the search."),
    Column(
        "capacity_per_s",
        "float",
        "Capacity: mean acked sends/s over the repeats at the highest offered load that met "
        "the SLO and kept acked ÷ offered ≥ `follow_min` (0 when none did).",
    ),
    Column(
        "ci_low_per_s",
        "float",
        "Lower end of the 95 % Student-t interval of `capacity_per_s` over its repeats "
        "(nan for one repeat).",
    ),
    Column("ci_high_per_s", "float", "Upper end of that interval (nan for one repeat)."),
    Column("capacity_offered_per_s", "float", "The offered load of the capacity step, sends/s."),
    Column(
        "knee_per_s",
        "float",
        "The lowest offered load above it that did not pass (nan when none): the knee lies "
        "between `capacity_offered_per_s` and this, the search's resolution.",
    ),
    Column("server_cores", "int", "Cores the server could use: min(its CPU set, its processes)."),
    Column("per_server_core_per_s", "float", "`capacity_per_s` ÷ `server_cores`."),
    Column("per_core_ci_low_per_s", "float", "`ci_low_per_s` ÷ `server_cores`."),
    Column("per_core_ci_high_per_s", "float", "`ci_high_per_s` ÷ `server_cores`."),
    Column("server_cpus", "str", "The server's CPU set (kernel cpu-list, e.g. `1`)."),
    Column("generator_cpus", "str", "The load generator's CPU set (e.g. `0`)."),
    Column("isolated", "bool", "True when the two CPU sets were disjoint."),
    Column(
        "limited_by",
        "str",
        "What ended the climb: " + ", ".join(f"`{x}`" for x in LIMITS) + " (see the README).",
    ),
    Column("why", "str", "The limiting step's reason, in words.", required=False),
    Column(
        "limit_offered_per_s",
        "float",
        "The offered load of the limiting step (= `knee_per_s`; for `generator`: the load "
        "the generator could not keep).",
        required=False,
    ),
    Column(
        "limit_server_cpu_pct",
        "float",
        "Server CPU at the limiting step, % of its `server_cores` (mean over its repeats).",
        required=False,
    ),
    Column(
        "limit_generator_cpu_pct",
        "float",
        "Load generator CPU at the limiting step, % of the cores its processes could use.",
        required=False,
    ),
    Column(
        "capacity_server_cpu_us_per_msg",
        "float",
        "Server CPU per acked message at the capacity step, µs (mean over its repeats).",
        required=False,
    ),
    Column("slo_p99_ms", "float", "The SLO: p99 of ack and of delivery latency ≤ this, ms."),
    Column("slo_error_rate", "float", "The SLO: error rate ≤ this (0..1)."),
    Column("follow_min", "float", "Acked ÷ offered below this: throughput stopped following."),
    Column("repeats", "int", "Measurements at the capacity step."),
    Column("steps", "int", "Measurements the search took for this codec."),
    Column("duration_s", "float", "Run length of each step (before the window's cut), s."),
    Column("warmup_s", "float", "Warm-up cut from each step's measured window, s."),
    Column("note", "str", "Free text: why a row is special.", required=False),
)

_MANIFEST_REQUIRED = ("schema_version", "run_id", "created_utc", "git_sha", "command")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_run_id(now_utc: datetime, label: str = "") -> str:
    """``20261126T194500Z`` or ``20261126T194500Z-label``; time is passed in."""
    stamp = now_utc.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")
    return f"{stamp}-{slug}" if slug else stamp


def git_sha(cwd: Path | None = None) -> str:
    """The checkout's commit (``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


_PACKAGES = ("websockets", "simpy", "numpy", "pandas", "protobuf", "msgspec", "locust", "uvloop")


def machine_info() -> dict[str, Any]:
    """Host, CPU count, Python and the versions of the packages that shape the figures."""
    import os

    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
    }


def new_manifest(
    run_id: str,
    command: Sequence[str],
    created_utc: str,
    scenario: Mapping[str, Any] | None = None,
    seed: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A manifest dict; ``created_utc`` is an ISO-8601 string the caller took."""
    if not _RUN_ID.match(run_id):
        raise ResultsError(f"run id {run_id!r}: use letters, digits, '.', '_' or '-'")
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created_utc": created_utc,
        "git_sha": git_sha(),
        "command": list(command),
        "scenario": dict(scenario) if scenario is not None else None,
        "seed": seed,
        "machine": machine_info(),
    }
    manifest.update(extra)
    return manifest


def write_manifest(run_dir: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` (creating the folder) and return its path."""
    missing = [k for k in _MANIFEST_REQUIRED if k not in manifest]
    if missing:
        raise ResultsError(f"manifest: missing key(s) {', '.join(missing)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing (every run folder has a manifest)") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in _MANIFEST_REQUIRED if k not in data]
    if missing:
        raise ResultsError(f"{path}: missing key(s) {', '.join(missing)}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: schema_version {data['schema_version']!r}, this chatcap reads "
            f"{SCHEMA_VERSION}"
        )
    return data


# ---------------------------------------------------------------------------- tables


def _format(value: Any, col: Column, where: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if col.kind in ("float",):
            return "nan"
        if col.required:
            raise ResultsError(f"{where}: column {col.name!r} is required, got {value!r}")
        return ""
    if col.kind == "bool":
        return "true" if bool(value) else "false"
    if col.kind == "float":
        return repr(float(value))
    if col.kind == "int":
        return str(int(value))
    return str(value)


def _parse(text: str, col: Column, where: str) -> Any:
    if text == "" and not col.required:
        return None
    try:
        if col.kind == "float":
            return float(text)
        if col.kind == "int":
            return int(text)
        if col.kind == "bool":
            if text not in ("true", "false"):
                raise ValueError(text)
            return text == "true"
    except ValueError:
        raise ResultsError(
            f"{where}: column {col.name!r} must be {col.kind}, got {text!r}"
        ) from None
    return text


def _check_row(row: Mapping[str, Any], columns: Sequence[Column], where: str) -> None:
    names = {c.name for c in columns}
    unknown = sorted(set(row) - names)
    if unknown:
        raise ResultsError(f"{where}: unknown column(s) {', '.join(unknown)}")
    missing = [c.name for c in columns if c.required and c.name not in row]
    if missing:
        raise ResultsError(f"{where}: missing column(s) {', '.join(missing)}")
    for key, allowed in (("source", SOURCES), ("outcome", OUTCOMES), ("limited_by", LIMITS)):
        if key in row and row[key] not in allowed:
            raise ResultsError(
                f"{where}: column {key!r} is {row[key]!r}; allowed: {', '.join(allowed)}"
            )


def write_table(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> Path:
    """Write rows as CSV with the schema's column order; validates every row first."""
    rows = list(rows)
    present = {k for r in rows for k in r}
    cols = [c for c in columns if c.required or c.name in present]
    lines = []
    for i, row in enumerate(rows):
        where = f"{path.name} row {i + 1}"
        _check_row(row, columns, where)
        lines.append([_format(row.get(c.name), c, where) for c in cols])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([c.name for c in cols])
        out.writerows(lines)
    return path


def read_table(path: Path, columns: Sequence[Column]) -> list[dict[str, Any]]:
    """Read and validate a CSV written by :func:`write_table`; errors name file/row/column."""
    try:
        fh = path.open(newline="")
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing") from None
    by_name = {c.name: c for c in columns}
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise ResultsError(f"{path}: empty file (expected a header row)")
        missing = [c.name for c in columns if c.required and c.name not in header]
        if missing:
            raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}")
        unknown = [h for h in header if h not in by_name]
        if unknown:
            raise ResultsError(f"{path}: unknown column(s) {', '.join(unknown)}")
        rows = []
        for lineno, record in enumerate(reader, start=2):
            where = f"{path} line {lineno}"
            if len(record) != len(header):
                raise ResultsError(f"{where}: {len(record)} fields, header has {len(header)}")
            row = {h: _parse(v, by_name[h], where) for h, v in zip(header, record, strict=True)}
            _check_row({k: v for k, v in row.items() if v is not None}, columns, where)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------- run folders


@dataclass(frozen=True, slots=True)
class Run:
    """A validated run folder: its manifest, summary rows and (optional) request rows."""

    path: Path
    manifest: dict[str, Any]
    summary: list[dict[str, Any]]

    def summary_frame(self) -> Any:
        """The summary as a pandas DataFrame (pandas imported only when asked for)."""
        import pandas as pd

        return pd.DataFrame(self.summary)

    def requests(self) -> list[dict[str, Any]]:
        """Per-attempt rows (validated); an empty list when the run wrote none."""
        path = self.path / REQUESTS_FILE
        return read_table(path, REQUEST_COLUMNS) if path.exists() else []


def write_run(
    run_dir: Path,
    manifest: Mapping[str, Any],
    summary: Iterable[Mapping[str, Any]],
    requests: Iterable[Mapping[str, Any]] | None = None,
) -> Path:
    """Write a complete run folder; returns the folder."""
    write_manifest(run_dir, manifest)
    write_table(run_dir / SUMMARY_FILE, summary, SUMMARY_COLUMNS)
    if requests is not None:
        write_table(run_dir / REQUESTS_FILE, requests, REQUEST_COLUMNS)
    return run_dir


def read_run(run_dir: Path) -> Run:
    """Read and validate a run folder; errors name the file, the line and the column."""
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir}: not a run folder (no such directory)")
    manifest = read_manifest(run_dir)
    summary = read_table(run_dir / SUMMARY_FILE, SUMMARY_COLUMNS)
    return Run(run_dir, manifest, summary)


def schema_markdown(columns: Sequence[Column]) -> str:
    """The column table as Markdown (results/README.md embeds it; a test compares)."""
    lines = ["| column | type | required | meaning |", "|---|---|---|---|"]
    for c in columns:
        lines.append(f"| `{c.name}` | {c.kind} | {'yes' if c.required else 'no'} | {c.doc} |")
    return "\n".join(lines)
