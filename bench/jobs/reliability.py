"""``python -m bench reliability``: the reliability and security suite, with its report.

Runs ``pytest tests/reliability`` in its own process at **full** size (the counts the
suite promises: ≥ 20 kill -9 cycles, 100,000 malformed frames per codec, 10,000 idle
connections, …; ``--ci`` runs the small size that ``make test`` runs), collects the
figures every case records, and writes a Markdown report — cases tried and passed,
messages acked / lost / duplicated, kills survived (and, for each kill -9 case, the
messages acked per kill), bad inputs tried, RSS figures, and for
every failure the command that replays it with the same seed — to the terminal and to
``results/reliability/<run-id>.md`` (``--out`` to change the folder). The raw lines are
kept beside it as ``<run-id>.jsonl``.

``python -m bench reliability [--ci] [--seed N] [-k EXPR] [--out DIR]``

Exit status: 0 when every case passed, 1 when one failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._support.paths import REPO_ROOT
from chatcap.results import git_sha, new_run_id

ROOT = REPO_ROOT
SUITE = "tests/reliability"

# Figures summed over cases in the totals table, in the order shown.
TOTALS = (
    ("acked", "messages acked"),
    ("lost", "acked messages lost"),
    ("duplicated", "messages duplicated"),
    ("kills", "kill -9 survived"),
    ("drains", "SIGTERM drains"),
    ("bad_inputs", "bad inputs tried"),
    ("bad_tokens", "bad tokens tried"),
    ("autobahn_ok", "Autobahn cases OK"),
    ("autobahn_non_strict", "Autobahn cases non-strict"),
    ("autobahn_failed", "Autobahn cases failed"),
)


@dataclass
class Case:
    nodeid: str
    outcome: str = "not run"
    seconds: float = 0.0
    repro: str = ""
    message: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def read_lines(lines: Iterable[str]) -> list[Case]:
    """The suite's JSON lines → one :class:`Case` per test, in the order first seen."""
    cases: dict[str, Case] = {}
    for raw in lines:
        if not raw.strip():
            continue
        line = json.loads(raw)
        case = cases.setdefault(line["nodeid"], Case(line["nodeid"]))
        if "figure" in line:
            case.figures[line["figure"]] = line["value"]
        elif "outcome" in line:
            if line["when"] == "setup" or case.outcome in ("not run", "passed"):
                case.outcome = line["outcome"]
            case.seconds += float(line["seconds"])
            case.repro = line["repro"]
            case.message = line["message"] or case.message
    return list(cases.values())


def totals(cases: Sequence[Case]) -> dict[str, float]:
    """Named figures summed over cases; ``*_mib`` figures as the largest seen."""
    out: dict[str, float] = {}
    for case in cases:
        for name, value in case.figures.items():
            if not isinstance(value, int | float):
                continue
            if name.endswith("_mib"):
                out[name] = max(out.get(name, float("-inf")), float(value))
            else:
                out[name] = out.get(name, 0.0) + float(value)
    return out


def acked_per_kill(cases: Sequence[Case]) -> list[tuple[str, float]]:
    """``(test name, acked ÷ kills)`` of every case that recorded both figures."""
    out = []
    for case in cases:
        acked, kills = case.figures.get("acked"), case.figures.get("kills")
        if isinstance(acked, int | float) and isinstance(kills, int | float) and kills > 0:
            out.append((case.nodeid.rsplit("::", 1)[-1], float(acked) / float(kills)))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(cases: Sequence[Case], meta: Mapping[str, Any]) -> str:
    """The Markdown report."""
    passed = sum(c.outcome == "passed" for c in cases)
    failed = [c for c in cases if c.outcome == "failed"]
    skipped = sum(c.outcome == "skipped" for c in cases)
    tot = totals(cases)
    out = [
        f"# Reliability report {meta['run_id']}",
        "",
        f"Scale **{meta['scale']}**, seed {meta['seed']}, {meta['seconds']:.0f} s, "
        f"git {meta.get('git_sha', '?')}, command `{meta['command']}`.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| cases tried | {len(cases)} |",
        f"| cases passed | {passed} |",
        f"| cases failed | {len(failed)} |",
    ]
    if skipped:
        out.append(f"| cases skipped | {skipped} |")
    for key, label in TOTALS:
        if key in tot:
            out.append(f"| {label} | {_fmt(int(tot[key]))} |")
    for name, per_kill in acked_per_kill(cases):
        out.append(f"| acked per kill, `{name}` | {_fmt(per_kill)} |")
    for key in sorted(k for k in tot if k.endswith("_mib")):
        out.append(f"| {key.removesuffix('_mib').replace('_', ' ')} (MiB, max) | {tot[key]:.1f} |")
    out += ["", "## Cases", "", "| case | outcome | s | figures |", "|---|---|---|---|"]
    for case in cases:
        figs = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(case.figures.items()))
        name = case.nodeid.removeprefix(SUITE + "/")
        out.append(f"| `{name}` | {case.outcome} | {case.seconds:.1f} | {figs} |")
    if failed:
        out += ["", "## Failures", ""]
        for case in failed:
            out += [f"- `{case.nodeid}`: {case.message}", f"  replay: `{case.repro}`"]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench reliability", description=__doc__)
    parser.add_argument("--ci", action="store_true", help="the small size `make test` runs")
    parser.add_argument("--seed", type=int, help="replay a run (default: a fresh seed)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression: a subset of cases")
    parser.add_argument("--out", default="results/reliability", help="report folder")
    args = parser.parse_args(argv)
    scale = "ci" if args.ci else "full"
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    run_id = new_run_id(datetime.now(UTC), f"reliability-{scale}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_path = out_dir / f"{run_id}.jsonl"
    raw_path.unlink(missing_ok=True)
    env = dict(
        os.environ,
        CHATCAP_RELIABILITY=scale,
        CHATCAP_RELIABILITY_SEED=str(seed),
        CHATCAP_RELIABILITY_REPORT=str(raw_path.resolve()),
    )
    cmd = [sys.executable, "-m", "pytest", SUITE, "-q", "-p", "no:cacheprovider", "-rfE"]
    cmd += ["-m", "not benchmark"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    shown = f"CHATCAP_RELIABILITY={scale} CHATCAP_RELIABILITY_SEED={seed} " + " ".join(
        ["python", *cmd[1:]]
    )
    print(f"[reliability] {shown}", flush=True)
    started = time.monotonic()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    seconds = time.monotonic() - started
    lines = raw_path.read_text(encoding="utf-8").splitlines() if raw_path.exists() else []
    cases = read_lines(lines)
    meta = {
        "run_id": run_id,
        "scale": scale,
        "seed": seed,
        "seconds": seconds,
        "git_sha": git_sha(ROOT),
        "command": shown,
    }
    report = render(cases, meta)
    path = out_dir / f"{run_id}.md"
    path.write_text(report, encoding="utf-8")
    print("\n" + report)
    print(f"[reliability] report: {path}  (raw figures: {raw_path})")
    if rc not in (0, 1) and not cases:
        print(f"[reliability] pytest exited with status {rc} before any case ran", file=sys.stderr)
        return 1
    return 0 if rc == 0 and all(c.outcome != "failed" for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
