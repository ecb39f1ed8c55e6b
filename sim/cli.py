"""Command line of the SimPy model: ``python -m sim --scenario FILE --out DIR``.

Options: ``--replications R`` (default ``sim.replications``), ``--seed S`` (root seed,
default the scenario's), ``--set KEY=VALUE`` (override the scenario), ``--sweep
KEY=V1,V2,…`` (repeatable: a cartesian grid; values read as TOML), ``--replay
requests.csv`` (replay measured send times instead of the scenario's arrivals),
``--workers N`` (processes; default all CPUs).

The run folder (``chatcap.results`` schema, readable by ``read_run``):

* ``manifest.json`` — the resolved scenario, root seed, grid, replications, calibration;
* ``summary.csv`` — every (point, codec, replication) row, ``source = sim``;
* ``sweep.csv`` — per point and codec, mean and 95 % CI of each numeric column;
* ``requests.csv`` — the attempts of replication 0 of the first point only (one
  replication keeps the file bounded; at most 1,000,000 rows);
* ``timeseries.csv`` — replication 0 of every point, with the point's keys as columns.

Progress goes to stderr, updated in place; a short table ends the run. Bad input is
one line ``error: …`` and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import pandas as pd

from chatcap.results import REQUEST_COLUMNS, new_manifest, new_run_id, write_run
from chatcap.scenario import Scenario, load_scenario, parse_value
from sim import api
from sim.theory import theory_for_scenario
from sim.workload import load_replay

REQUESTS_MAX_ROWS = 1_000_000


class UsageError(ValueError):
    """Bad command-line input (reported as one ``error:`` line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sim", description="chatcap SimPy model")
    p.add_argument("--scenario", required=True, help="scenario TOML file")
    p.add_argument("--out", default=None, help="run folder (default results/<run-id>)")
    p.add_argument("--replications", type=int, default=None, help="replications per point")
    p.add_argument("--seed", type=int, default=None, help="root seed (default the scenario's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2", help="grid axis")
    p.add_argument("--replay", default=None, help="requests.csv whose send times to replay")
    p.add_argument("--workers", type=int, default=None, help="worker processes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except (UsageError, ValueError, OSError) as exc:  # ScenarioError etc. are ValueErrors
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    scenario = load_scenario(args.scenario)
    if args.set:
        scenario = scenario.with_overrides(dict(parse_assignment(s) for s in args.set))
    grid = dict(parse_axis(s) for s in args.sweep)
    reps = scenario.sim.replications if args.replications is None else args.replications
    if reps < 1:
        raise UsageError(f"--replications must be ≥ 1, got {reps}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be ≥ 1, got {args.workers}")
    if args.replay and grid:
        raise UsageError("--replay runs one scenario; it cannot be combined with --sweep")
    root = scenario.seed if args.seed is None else args.seed
    now = datetime.now(UTC)
    run_id = new_run_id(now, f"{scenario.name}-sim")
    out = Path(args.out) if args.out else Path("results") / run_id
    if args.replay:
        load_replay(args.replay, scenario.workload)  # fail before any work
    bar = ProgressBar(sys.stderr)
    started = time.perf_counter()
    if args.replay:
        outputs = _replay_runs(scenario, args.replay, reps, root, bar)
    else:
        outputs = _grid_runs(scenario, grid, reps, root, args.workers, bar)
    wall_s = time.perf_counter() - started
    bar.close()
    runs = _write(out, run_id, now, argv, scenario, grid, reps, root, outputs, wall_s)
    print(format_table(runs, list(grid)))
    if not grid and not args.replay:
        print(theory_line(scenario, runs))
    print(f"wrote {out}/ ({len(outputs)} runs in {wall_s:.1f} s)")
    return 0


def theory_line(scenario: Scenario, runs: pd.DataFrame) -> str:
    """One line holding the model against theory when the scenario is a classic case."""
    verdict = theory_for_scenario(scenario)
    if not verdict.applies:
        return f"theory: not a classic queue ({verdict.reason.split(';')[0]})"
    predicted = verdict.summary_fields()
    mix = runs[runs["codec"] == "mix"] if "mix" in set(runs["codec"]) else runs
    if verdict.model == "Erlang B":
        model, theory, what = mix["error_rate"].mean(), predicted["error_rate"], "blocking"
        return (
            f"theory ({verdict.model}, c = {verdict.servers}): {what} {theory:.4f}; "
            f"model {model:.4f} ({(model / theory - 1) * 100:+.1f}%)"
        )
    model, theory = mix["ack_mean_ms"].mean(), predicted["ack_mean_ms"]
    return (
        f"theory ({verdict.model}, c = {verdict.servers}): mean response "
        f"{theory:.4f} ms; model {model:.4f} ms ({(model / theory - 1) * 100:+.1f}%)"
    )


def parse_assignment(text: str) -> tuple[str, Any]:
    """``server.pool.size=8`` → ``("server.pool.size", 8)``; the value read as TOML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise UsageError(f"{text!r}: expected KEY=VALUE, e.g. server.pool.size=8")
    return key.strip(), parse_value(raw)


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """``server.pool.size=2,4,8`` → ``("server.pool.size", [2, 4, 8])``; each value read
    as TOML (comma-separated scalars)."""
    key, sep, raw = text.partition("=")
    values = [parse_value(v) for v in raw.split(",") if v.strip()]
    if not sep or not key.strip() or not values:
        raise UsageError(f"--sweep {text!r}: expected KEY=V1,V2,…, e.g. server.pool.size=2,4")
    return key.strip(), values


def _grid_runs(
    scenario: Scenario,
    grid: dict[str, list[Any]],
    reps: int,
    root: int,
    workers: int | None,
    bar: ProgressBar,
) -> list[tuple[dict[str, Any], int, dict[str, Any]]]:
    points = len(api.grid_points(scenario, grid))
    executor = None
    if workers is not None and points * reps > 1:
        executor = ProcessPoolExecutor(max_workers=workers)
    try:
        return api.run_grid(
            scenario,
            grid,
            reps,
            executor,
            root,
            bar.update,
            keep_frames=lambda point, replication: replication == 0,
        )
    finally:
        if executor is not None:
            executor.shutdown()


def _replay_runs(
    scenario: Scenario, replay: str, reps: int, root: int, bar: ProgressBar
) -> list[tuple[dict[str, Any], int, dict[str, Any]]]:
    outputs: list[tuple[dict[str, Any], int, dict[str, Any]]] = []
    for r in range(reps):
        result = api.run(scenario, api.replication_seed(root, r), replay=replay, replication=r)
        out: dict[str, Any] = {"rows": result.summary(replication=r)}
        if r == 0:
            out.update(requests=result.requests, timeseries=result.timeseries)
        outputs.append(({}, r, out))
        bar.update(r + 1, reps)
    return outputs


def _write(
    out: Path,
    run_id: str,
    now: datetime,
    argv: list[str],
    scenario: Scenario,
    grid: dict[str, list[Any]],
    reps: int,
    root: int,
    outputs: list[tuple[dict[str, Any], int, dict[str, Any]]],
    wall_s: float,
) -> pd.DataFrame:
    rows = [{**row, "run_id": run_id} for _, _, o in outputs for row in o["rows"]]
    requests = outputs[0][2]["requests"]
    truncated = len(requests) > REQUESTS_MAX_ROWS
    manifest = new_manifest(
        run_id,
        ["python", "-m", "sim", *argv],
        now.isoformat(),
        scenario=scenario.to_dict(),
        seed=root,
        source="sim",
        grid=grid,
        replications=reps,
        calibration=scenario.sim.calibration or "built-in defaults",
        wall_s=round(wall_s, 3),
        requests_file=(
            f"replication 0 of the first point; first {REQUESTS_MAX_ROWS} of "
            f"{len(requests)} attempts"
            if truncated
            else "replication 0 of the first point"
        ),
    )
    write_run(out, manifest, rows)
    head = requests.head(REQUESTS_MAX_ROWS).assign(run_id=run_id)
    head[[c.name for c in REQUEST_COLUMNS]].to_csv(out / "requests.csv", index=False, na_rep="nan")
    series = [
        o["timeseries"].assign(point=i // reps, **{k: str(p[k]) for k in grid})
        for i, (p, r, o) in enumerate(outputs)
        if r == 0
    ]
    pd.concat(series, ignore_index=True).to_csv(out / "timeseries.csv", index=False)
    runs = _runs_frame(outputs, list(grid))
    api.summarize_runs(runs, list(grid)).to_csv(out / "sweep.csv", index=False)
    return runs


def _runs_frame(
    outputs: list[tuple[dict[str, Any], int, dict[str, Any]]], keys: list[str]
) -> pd.DataFrame:
    return pd.DataFrame.from_records(
        [{**{k: p[k] for k in keys}, **row} for p, _, o in outputs for row in o["rows"]]
    )


_TABLE_COLUMNS = {
    "offered_per_s": ("offered/s", "{:,.0f}"),
    "acked_per_s": ("acked/s", "{:,.0f}"),
    "ack_p50_ms": ("ack p50 ms", "{:.3g}"),
    "ack_p99_ms": ("ack p99 ms", "{:.3g}"),
    "deliver_p99_ms": ("deliver p99 ms", "{:.3g}"),
    "error_rate": ("errors", "{:.1%}"),
    "server_cpu_us_per_msg": ("cpu µs/msg", "{:.1f}"),
}


def format_table(runs: pd.DataFrame, keys: list[str]) -> str:
    """Means over replications, one line per (point, codec)."""
    means = api.summarize_runs(runs, keys)
    header = [*keys, "codec", "n", *(label for label, _ in _TABLE_COLUMNS.values())]
    lines = [header]
    for _, row in means.iterrows():
        cells = [str(row[k]) for k in keys] + [str(row["codec"]), str(row["n"])]
        for col, (_, fmt) in _TABLE_COLUMNS.items():
            value = row[f"{col}_mean"]
            cells.append("—" if pd.isna(value) else fmt.format(value))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    )


class ProgressBar:
    """``sim [#####-----] 12/40 runs 3.1 s`` on one line of ``stream``, redrawn in place."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.perf_counter()
        self.drawn = False
        self.last_draw = 0.0

    def update(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last_draw < 0.1:
            return  # redraw at most ten times a second
        self.last_draw = now
        filled = round(self.width * done / total) if total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"\rsim [{bar}] {done}/{total} runs {now - self.started:.1f} s"
        self.stream.write(text)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
