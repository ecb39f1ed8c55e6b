"""The statistical CI regression gate: did this change make the server slower or fatter?

``python -m bench regress --baseline DIR --candidate DIR [--threshold 0.10] [--alpha 0.05]
[--alternative worse|two-sided] [--update-baseline]``
    compare two run folders, print a Markdown table, exit 1 on a regression (0 otherwise,
    2 on bad input). ``--update-baseline`` then copies the candidate into ``--baseline``
    (default ``results/baseline``, committed) instead of comparing.

``python -m bench regress --run [--trials 7] [--out DIR] [--scenario FILE] [--set KEY=VALUE …]
[--quick] [--server-cpus LIST] [--generator-cpus LIST]``
    measure a run folder (``trials.csv`` + ``manifest.json``) on this machine; with
    ``--baseline DIR`` compare it at once. The server (with the probe and the codec
    timings) runs on the server's CPUs, the load clients on the generator's (default: the
    last CPU for the server, the others for the clients; :mod:`bench._support.cpus`); the
    manifest records both and each side's CPU use (``--quality`` takes the same options).

``python -m bench regress --quality [--pairs 10] [--trials 7] [--burn-us X] [--out DIR]``
    how good is the gate here? ``--pairs`` pairs with the CPU-burn fault
    (``server.faults.cpu_burn_us_per_msg = X``, by default 15 % of the echo CPU measured
    first) and as many unchanged pairs; prints how many of each the gate flags.

The modules: :mod:`~bench.gate.metrics` (what is measured), :mod:`~bench.gate.trials`
(measuring), :mod:`~bench.gate.verdict` (comparing), :mod:`~bench.gate.quality` (the
gate's own flag rates), :mod:`~bench.gate.probe` (the machine-speed probe).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench._support.args import BadInput
from bench._support.cpus import add_cpu_arguments, cpu_plan_from_args
from bench._support.host import raise_nofile_limit
from bench._support.servers import (
    sigterm_as_exit,
)
from bench.gate.metrics import DEFAULT_BASELINE, MIN_TRIALS, NORMALISE_MODES, TRIALS_FILE, GateError
from bench.gate.probe import probe
from bench.gate.quality import quality_command
from bench.gate.trials import (
    QUICK_SIZES,
    TrialSizes,
    cpus_line,
    prepare_config,
    run_interleaved,
    say,
    write_run_folder,
)
from bench.gate.verdict import gate, update_baseline
from chatcap.results import (
    new_run_id,
)
from chatcap.scenario import ScenarioError


def run_command(args: argparse.Namespace, argv: Sequence[str]) -> Path:
    """``--run``: measure ``--trials`` trials into ``--out``; returns the folder."""
    cpus = cpu_plan_from_args(args)
    created = datetime.now(UTC)
    run_id = new_run_id(created, "regress")
    out = Path(args.out) if args.out else Path("results/regress") / run_id
    sizes = QUICK_SIZES if args.quick else TrialSizes()
    raise_nofile_limit()
    probe(1)  # warm the probe's code once per process
    with tempfile.TemporaryDirectory(prefix="chatcap-regress-") as tmp:
        workdir = Path(tmp)
        config = prepare_config("run", run_id, args.scenario, args.set, workdir, cpus)
        say(f"[regress] {run_id}: {args.trials} trial(s) into {out}; {cpus_line(cpus)}")
        run_interleaved([config], args.trials, sizes, workdir)
    write_run_folder(out, config, ["python", "-m", "bench", "regress", *argv], created, sizes)
    say(f"[regress] wrote {out}/{{manifest.json,{TRIALS_FILE}}}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench regress", description=(__doc__ or "").split("\n")[0]
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--run", action="store_true", help="measure a run folder")
    mode.add_argument("--quality", action="store_true", help="measure the gate's flag rates")
    p.add_argument("--baseline", help=f"baseline run folder (update target: {DEFAULT_BASELINE})")
    p.add_argument("--candidate", help="candidate run folder")
    p.add_argument("--update-baseline", action="store_true", help="copy candidate to baseline")
    p.add_argument("--threshold", type=float, default=0.10, help="magnitude floor (0.10 = 10%%)")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="significance for all metrics together (Bonferroni)",
    )
    p.add_argument("--alternative", choices=("worse", "two-sided"), default="worse")
    p.add_argument(
        "--normalise",
        choices=NORMALISE_MODES,
        default="trial",
        help="CPU metrics ÷ the trial's speed factor (trial), the run's median (run), or raw",
    )
    p.add_argument("--trials", type=int, default=7, help="trials per run (--run, --quality)")
    p.add_argument("--pairs", type=int, default=10, help="--quality: pairs of each kind")
    p.add_argument("--burn-us", type=float, help="--quality: CPU burn µs/msg (default: 15%% echo)")
    p.add_argument("--out", help="run folder to write (--run) / quality folder")
    p.add_argument("--scenario", default="scenarios/baseline.toml", help="server scenario")
    p.add_argument("--quick", action="store_true", help="tiny trials (smoke runs only)")
    add_cpu_arguments(p)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override for our server, e.g. server.faults.cpu_burn_us_per_msg=10",
    )
    return p


def check_args(args: argparse.Namespace) -> None:
    if not 0 <= args.threshold < 10:
        raise GateError(f"--threshold {args.threshold}: must be in [0, 10)")
    if not 0 < args.alpha < 1:
        raise GateError(f"--alpha {args.alpha}: must be in (0, 1)")
    if (args.run or args.quality) and args.trials < MIN_TRIALS:
        raise GateError(f"--trials {args.trials}: need {MIN_TRIALS}+")
    if args.quality and args.pairs < 1:
        raise GateError(f"--pairs {args.pairs}: must be >= 1")
    if not (args.run or args.quality):
        if args.candidate is None:
            raise GateError("give --candidate DIR (with --baseline DIR), or --run / --quality")
        if args.baseline is None and not args.update_baseline:
            raise GateError("give --baseline DIR to compare with")


def main(argv: list[str] | None = None) -> int:
    """Exit 0: no regression; 1: regression; 2: bad input (one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        cpu_plan_from_args(args)  # a bad CPU list is bad input, said before anything runs
        if args.quality:
            with sigterm_as_exit():
                return quality_command(args, argv)
        candidate = Path(args.candidate) if args.candidate else None
        if args.run:
            with sigterm_as_exit():
                candidate = run_command(args, argv)
        assert candidate is not None
        if args.update_baseline:
            target = Path(args.baseline) if args.baseline else DEFAULT_BASELINE
            update_baseline(candidate, target)
            print(f"[regress] baseline updated: {candidate} → {target}")
            return 0
        if args.baseline is None:
            return 0
        results, table = gate(
            Path(args.baseline),
            candidate,
            args.threshold,
            args.alpha,
            args.alternative,
            args.normalise,
        )
    except (GateError, ScenarioError, BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a server or a load client failed
        print(f"error: measurement failed: {exc}", file=sys.stderr)
        return 2
    print(table)
    return 1 if any(r.regressed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
