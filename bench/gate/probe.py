"""Machine-speed probe: how fast this machine runs plain Python *right now*.

``python -m bench.gate.probe [--repeat N]`` prints the probe's CPU time and speed factor.

A fixed pure-Python workload (dict updates, string building and slicing, a sort — the
kind of work the server's Python code does per frame, without any of our packages) is
timed as **CPU seconds** of this process (:func:`time.process_time`), median of
``repeat`` runs. CPU time, not wall time: on a shared machine another process taking the
core makes wall time jump, while CPU time moves only with what slows the work itself
(frequency scaling, a neighbour thrashing the caches, a slower or faster host).

``speed_factor = median CPU s / REFERENCE_CPU_S``: 1.0 on the machine the reference was
taken on (a 2-core Python 3.11 VM, ≈ 50 ms per run); 1.2 means "20 % slower now". The
regression gate (:mod:`bench.gate`) divides each trial's server CPU figures by the
speed factor measured in the same trial, so runs taken on a busier or slower machine
compare with a baseline taken on a quieter one.

The workload never changes between versions of chatcap (change it and every committed
baseline's speed factors stop being comparable): it uses only builtins.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["REFERENCE_CPU_S", "ProbeResult", "probe", "probe_once"]

REFERENCE_CPU_S = 0.050
"""Median CPU seconds of one probe run on the reference machine (speed factor 1.0)."""

_ROUNDS = 72_000  # fixed: sizes the workload to ≈ 50 ms on the reference machine
_WORDS = tuple(f"user-{i:04d}" for i in range(257))


def _workload(rounds: int) -> int:
    """Dict/str work with a data-dependent result (so nothing can be skipped)."""
    counts: dict[str, int] = {}
    total = 0
    for i in range(rounds):
        word = _WORDS[i % len(_WORDS)]
        key = f"{word}:{i % 61}"
        counts[key] = counts.get(key, 0) + len(word)
        text = "|".join((word, key, str(i)))
        total += len(text.split("|")[1]) + (1 if text.endswith("7") else 0)
    ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return total + len(ordered) + ordered[-1][1]


def probe_once(rounds: int = _ROUNDS) -> float:
    """CPU seconds of one run of the fixed workload."""
    start = time.process_time()
    _workload(rounds)
    return time.process_time() - start


@dataclass(frozen=True)
class ProbeResult:
    """The probe's samples (CPU s) and what they say."""

    samples_s: tuple[float, ...]

    @property
    def cpu_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def speed_factor(self) -> float:
        """> 1: slower than the reference machine; divide CPU figures by it."""
        return self.cpu_s / REFERENCE_CPU_S


def probe(repeat: int = 5) -> ProbeResult:
    """Run the workload ``repeat`` times (after one untimed warm-up run)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    _workload(_ROUNDS // 10)
    return ProbeResult(tuple(probe_once() for _ in range(repeat)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gate.probe", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="runs (median)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        print("error: --repeat must be >= 1", file=sys.stderr)
        return 2
    result = probe(args.repeat)
    runs = ", ".join(f"{s * 1e3:.1f}" for s in result.samples_s)
    print(
        f"probe: median {result.cpu_s * 1e3:.1f} ms CPU (runs {runs}); "
        f"speed factor {result.speed_factor:.3f} (reference {REFERENCE_CPU_S * 1e3:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
