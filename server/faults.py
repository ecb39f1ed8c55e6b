"""Fault injection for the write path: store latency, store errors and CPU burn.

Testing aids, all off by default (``[server.faults]`` in the scenario). The rules — the
scenario's constants, runtime overrides from the admin route, timed episodes, how
latencies add and error rates combine — are :class:`chatcap.pipeline.faults.FaultPlan`'s,
shared with the model. This module adds the server's two pieces:

* :class:`FaultInjector`, a plan whose failure draws come from a ``random.Random``
  seeded with the scenario's seed;
* :func:`burn_cpu`, the one clock read here, which *is* the fault: it keeps the CPU busy
  for wall time.

Time is passed in (``now`` on the server's clock, :mod:`server.clock`), like the policies.
"""

from __future__ import annotations

import random
import time

from chatcap.pipeline.faults import FaultPlan
from chatcap.scenario import FaultsConfig

__all__ = ["FaultInjector", "burn_cpu"]


class FaultInjector(FaultPlan):
    """The server's fault plan: ``FaultPlan`` with an rng seeded from ``seed``."""

    def __init__(self, cfg: FaultsConfig, started_at: float, seed: int) -> None:
        super().__init__(cfg, started_at, random.Random(seed))

    @property
    def cpu_burn_us(self) -> float:
        """The plan's CPU burn per send, kept current by ``_update_flags`` (which every
        runtime change calls): the session reads it for every Send."""
        return self._cpu_burn_us

    def _update_flags(self) -> None:
        super()._update_flags()
        self._cpu_burn_us = float(FaultPlan.cpu_burn_us.fget(self))  # type: ignore[attr-defined]


def burn_cpu(us: float) -> None:
    """Keep this thread busy for ``us`` microseconds of wall time (a CPU fault)."""
    if us <= 0:
        return
    until = time.perf_counter() + us / 1e6
    while time.perf_counter() < until:
        pass
