"""How good is the regression gate on this machine? ``python -m bench regress --quality``.

``python -m bench regress --quality [--pairs 10] [--trials 7] [--burn-us X] [--out DIR]
[--threshold …] [--alpha …] [--set KEY=VALUE …]``

A **pair** is two run folders (baseline and candidate, :func:`bench.gate.trials.run_trial`
trials each) measured with their trials taking turns — baseline, candidate, baseline, …
— so drift on a shared machine hits both sides alike. In a **fault** pair the
candidate's server burns ``X`` µs of CPU per handled send
(``server.faults.cpu_burn_us_per_msg``; by default 15 % of the raw echo CPU per message
measured in a few sizing trials first); in an **unchanged** pair both sides are the
same. Fault and unchanged pairs alternate. A good gate flags (nearly) every fault pair
and (nearly) no unchanged pair.

Every pair is judged with each normalisation mode of the gate (``trial``, ``run``,
``none``: see :func:`bench.gate.verdict.metric_samples`), from the same trials. Files, in
``OUT`` (default ``results/gate-quality/<run-id>/``): ``manifest.json`` (settings and the
flag counts), ``quality.csv`` (:data:`QUALITY_COLUMNS`, one row per pair and mode) and
``pairs/<kind>-<i>/{baseline,candidate}/`` — ordinary run folders, so
``python -m bench regress --baseline … --candidate …`` re-judges any pair.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._support.cpus import CpuPlan, cpu_plan_from_args
from bench._support.host import raise_nofile_limit
from bench.gate.metrics import MIN_TRIALS, NORMALISE_MODES, Normalise
from bench.gate.probe import probe
from bench.gate.trials import (
    QUICK_SIZES,
    Config,
    TrialSizes,
    cpus_line,
    prepare_config,
    run_interleaved,
    say,
    write_run_folder,
)
from bench.gate.verdict import MetricResult, compare_runs
from chatcap.results import Column, new_manifest, new_run_id, write_manifest, write_table

__all__ = ["QUALITY_COLUMNS", "format_quality", "quality_command", "quality_summary"]

BURN_SHARE = 0.15  # of the echo CPU per message

QUALITY_COLUMNS: tuple[Column, ...] = (
    Column("pair", "int", "Pair index, from 0."),
    Column("kind", "str", "`fault` (the candidate burns CPU per message) or `unchanged`."),
    Column("burn_us_per_msg", "float", "server.faults.cpu_burn_us_per_msg of the candidate."),
    Column("normalise", "str", "How CPU metrics were normalised: `trial`, `run` or `none`."),
    Column("flagged", "bool", "The gate would exit 1 (some metric regressed)."),
    Column("regressed_metrics", "str", "Metrics that regressed, `;`-separated.", required=False),
    Column("echo_json_ratio", "float", "Median ratio candidate/baseline, echo json CPU."),
    Column("echo_protobuf_ratio", "float", "Same for echo protobuf CPU."),
)


def quality_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the pairs, print the flag counts per normalisation mode, write the folder
    (rewritten after every pair, so an interrupted run keeps what it measured)."""
    created = datetime.now(UTC)
    run_id = new_run_id(created, "gate-quality")
    out = Path(args.out) if args.out else Path("results/gate-quality") / run_id
    sizes = QUICK_SIZES if args.quick else TrialSizes()
    command = ["python", "-m", "bench", "regress", *argv]
    cpus = cpu_plan_from_args(args)
    raise_nofile_limit()
    probe(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chatcap-quality-") as tmp:
        workdir = Path(tmp)
        burn = args.burn_us
        if burn is None:
            burn = size_burn(args, f"{run_id}-sizing", sizes, workdir, cpus)
        fault_sets = [*args.set, f"server.faults.cpu_burn_us_per_msg={burn}"]
        say(
            f"[regress] quality: {args.pairs} fault and {args.pairs} unchanged pair(s), "
            f"burn {burn} µs/msg, {args.trials} trials a side; {cpus_line(cpus)}"
        )
        for pair in range(args.pairs):
            for kind, cand_sets in (("fault", fault_sets), ("unchanged", args.set)):
                tag = f"{run_id}-{kind}{pair}"
                base = prepare_config(
                    f"{kind} {pair} baseline", f"{tag}-a", args.scenario, args.set, workdir, cpus
                )
                cand = prepare_config(
                    f"{kind} {pair} candidate", f"{tag}-b", args.scenario, cand_sets, workdir, cpus
                )
                run_interleaved([base, cand], args.trials, sizes, workdir)
                folder = out / "pairs" / f"{kind}-{pair}"
                write_run_folder(folder / "baseline", base, command, created, sizes)
                write_run_folder(folder / "candidate", cand, command, created, sizes)
                rows += judge_pair(args, pair, kind, burn if kind == "fault" else 0.0, base, cand)
                manifest = new_manifest(
                    run_id,
                    command,
                    created.isoformat(),
                    burn_us_per_msg=burn,
                    burn_share_of_echo=BURN_SHARE if args.burn_us is None else None,
                    trials=args.trials,
                    pairs=args.pairs,
                    threshold=args.threshold,
                    alpha=args.alpha,
                    alternative=args.alternative,
                    gate_normalise=args.normalise,
                    sizes=sizes.__dict__,
                    extra_overrides=args.set,
                    summary=quality_summary(rows),
                    cpus=cpus.describe() | {"server_cores": cpus.server_cores()},
                )
                write_manifest(out, manifest)
                write_table(out / "quality.csv", rows, QUALITY_COLUMNS)
    print(format_quality(quality_summary(rows), burn, args.normalise))
    say(f"[regress] wrote {out}/{{manifest.json,quality.csv,pairs/}}")
    return 0


def size_burn(
    args: argparse.Namespace, run_id: str, sizes: TrialSizes, workdir: Path, cpus: CpuPlan
) -> float:
    """:data:`BURN_SHARE` of the median raw echo (json) CPU per message, sizing trials."""
    sizing = prepare_config("sizing", run_id, args.scenario, args.set, workdir, cpus)
    run_interleaved([sizing], MIN_TRIALS, sizes, workdir)
    echo = statistics.median(float(r["echo_json_cpu_us_per_msg"]) for r in sizing.rows)
    return round(BURN_SHARE * echo, 1)


def judge_pair(
    args: argparse.Namespace, pair: int, kind: str, burn: float, base: Config, cand: Config
) -> list[dict[str, Any]]:
    """One quality row per normalisation mode."""
    rows = []
    for mode in NORMALISE_MODES:
        results = compare_runs(
            base.rows, cand.rows, args.threshold, args.alpha, args.alternative, mode
        )
        rows.append(quality_row(pair, kind, burn, mode, results))
        said = "FLAGGED " + rows[-1]["regressed_metrics"] if rows[-1]["flagged"] else "passed"
        say(f"[regress] {kind} pair {pair}, normalise {mode}: {said}")
    return rows


def quality_row(
    pair: int, kind: str, burn: float, mode: Normalise, results: Sequence[MetricResult]
) -> dict[str, Any]:
    by_name = {r.metric: r for r in results}
    regressed = [r.metric for r in results if r.regressed]
    return {
        "pair": pair,
        "kind": kind,
        "burn_us_per_msg": burn,
        "normalise": mode,
        "flagged": bool(regressed),
        "regressed_metrics": ";".join(regressed),
        "echo_json_ratio": by_name["echo_json_cpu_us_per_msg"].ratio,
        "echo_protobuf_ratio": by_name["echo_protobuf_cpu_us_per_msg"].ratio,
    }


def quality_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{mode: {fault_pairs, fault_flagged, unchanged_pairs, unchanged_flagged}}``."""
    summary: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = summary.setdefault(
            row["normalise"],
            {"fault_pairs": 0, "fault_flagged": 0, "unchanged_pairs": 0, "unchanged_flagged": 0},
        )
        counts[f"{row['kind']}_pairs"] += 1
        counts[f"{row['kind']}_flagged"] += int(row["flagged"])
    return summary


def format_quality(summary: Mapping[str, Mapping[str, int]], burn: float, default: str) -> str:
    """The flag counts as a Markdown table, the gate's own mode marked."""
    lines = [
        f"Gate quality (fault pairs: the candidate burns {burn:g} µs of CPU per message):",
        "",
        "| normalisation | fault pairs flagged | unchanged pairs flagged |",
        "|---|---:|---:|",
    ]
    for mode, c in summary.items():
        name = f"{mode} (gate default)" if mode == default else mode
        lines.append(
            f"| {name} | {c['fault_flagged']}/{c['fault_pairs']} "
            f"| {c['unchanged_flagged']}/{c['unchanged_pairs']} |"
        )
    return "\n".join(lines)
