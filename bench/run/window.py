"""The measured window: in-run samples of ``/metrics`` and ``/proc``, and the cut.

:func:`choose_window` keeps from ``warm-up`` seconds after the first sample that saw
95 % of the users connected to the last that still did (see :mod:`bench.run`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench._support.metrics_scrape import Scrape
from bench.run.points import NAN

FULL_SHARE = 0.95
"""The share of the users that must be connected for the load to count as on."""


@dataclass(frozen=True)
class Sample:
    """One look at the run: the server's metrics, the generator's CPU, the machine's."""

    t_s: float
    server: Scrape
    generator_cpu_s: Mapping[int, float] = field(default_factory=dict)
    machine: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Window:
    """The measured interval between two samples."""

    start: Sample
    end: Sample
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.end.t_s - self.start.t_s

    def server(self) -> Scrape:
        """What the server counted in the window (counters: end − start)."""
        return self.end.server.minus(self.start.server)

    def generator_cpu_pct(self) -> dict[int, float]:
        """Each generator process's CPU in the window, % of one core."""
        if self.seconds <= 0:
            return {}
        a, b = self.start.generator_cpu_s, self.end.generator_cpu_s
        return {pid: 100.0 * (b[pid] - a[pid]) / self.seconds for pid in b if pid in a}

    def server_cpu_pct(self) -> float:
        """The server process's CPU in the window (its own ``/metrics`` counter), % of one
        core; NaN when the window has no length."""
        return 100.0 * self.server().cpu_s / self.seconds if self.seconds > 0 else NAN

    def machine_busy_pct(self) -> float:
        """All CPUs' busy share in the window, % (NaN when unknown)."""
        busy = self.end.machine[0] - self.start.machine[0]
        total = self.end.machine[1] - self.start.machine[1]
        return 100.0 * busy / total if total > 0 else NAN


def choose_window(samples: Sequence[Sample], users: int, warmup_s: float) -> Window | None:
    """The window of the module docstring; None when no two samples saw the load on."""
    if not samples:
        return None
    need = max(1, math.ceil(FULL_SHARE * users))
    peak = max(s.server.connections for s in samples)
    notes = []
    if peak < need:
        if peak <= 0:
            return None
        notes.append(f"only {peak:.0f} of {users} users connected")
        need = math.ceil(peak)
    on = [i for i, s in enumerate(samples) if s.server.connections >= need]
    first, last = on[0], on[-1]
    if last == first:
        return None
    start = next(
        (i for i in range(first, last) if samples[i].t_s >= samples[first].t_s + warmup_s), None
    )
    if start is None or samples[last].t_s - samples[start].t_s < 1.0:
        start = first
        notes.append("warm-up not cut (run too short)")
    return Window(samples[start], samples[last], "; ".join(notes))
