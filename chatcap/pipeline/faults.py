"""Injected store trouble: how slow a commit is and whether it fails, at a moment.

Testing aids, all off by default (``[server.faults]`` in the scenario). Three layers add
up, most specific last:

* the scenario's constant values (``store_latency_ms``, ``store_error_rate``,
  ``cpu_burn_us_per_msg``);
* runtime values (:meth:`FaultPlan.set_runtime`, the server's admin route), which
  *replace* the constant ones while set, until :meth:`FaultPlan.clear_runtime`;
* timed episodes (``[[server.faults.episodes]]``, relative to ``started_at``), which add
  on top of whichever of the two is in force; an episode is active on
  ``[start, start + duration)``.

Latencies add. Error rates combine as independent failure sources,
``1 - (1 - a) * (1 - b)``: a commit fails if any source says so, and two sources at 0.5
make 0.75 rather than a certain failure. A failure is one draw from the ``rng`` passed
in, made only when the rate is above 0 — so the server and the model, seeded alike, draw
alike. Burning the CPU itself is the driver's business (it *is* the fault).
"""

from __future__ import annotations

import math
import random
from typing import Any

from chatcap.scenario import FaultEpisode, FaultsConfig

__all__ = ["CPU_BURN_MAX_US", "FaultPlan"]

CPU_BURN_MAX_US = 1e6  # the scenario's upper bound for cpu_burn_us_per_msg

_RUNTIME_UPPER = {
    "store_latency_ms": math.inf,
    "store_error_rate": 1.0,
    "cpu_burn_us_per_msg": CPU_BURN_MAX_US,
}


class FaultPlan:
    """Answers "how slow, does it fail, how much CPU" for a moment of the run."""

    def __init__(self, cfg: FaultsConfig, started_at: float, rng: random.Random) -> None:
        self.cfg = cfg
        self.started_at = started_at
        self._rng = rng
        self._runtime: dict[str, float] = {}
        self._update_flags()

    # -- questions the write path asks ------------------------------------------------

    @property
    def has_latency(self) -> bool:
        """Whether any source can add latency now or later (False: skip the question)."""
        return self._has_latency

    @property
    def has_errors(self) -> bool:
        """Whether any source can fail a commit now or later."""
        return self._has_errors

    def store_latency_s(self, now: float) -> float:
        """Seconds to add to a store commit starting at ``now``."""
        latency_ms = self._base("store_latency_ms")
        for episode in self._active(now):
            latency_ms += episode.store_latency_ms
        return latency_ms / 1000.0

    def store_error_rate(self, now: float) -> float:
        """The share of commits that fail at ``now``, all sources combined."""
        passes = 1.0 - self._base("store_error_rate")
        for episode in self._active(now):
            passes *= 1.0 - episode.store_error_rate
        return 1.0 - passes

    def store_fails(self, now: float) -> bool:
        """Whether a store commit at ``now`` fails (a seeded draw; no draw at rate 0)."""
        rate = self.store_error_rate(now)
        return rate > 0.0 and self._rng.random() < rate

    @property
    def cpu_burn_us(self) -> float:
        """Busy CPU to spend per handled send, µs (episodes do not touch it)."""
        return self._base("cpu_burn_us_per_msg")

    # -- runtime overrides ------------------------------------------------------------

    def set_runtime(
        self,
        store_latency_ms: float | None = None,
        store_error_rate: float | None = None,
        cpu_burn_us_per_msg: float | None = None,
    ) -> None:
        """Override constant values until :meth:`clear_runtime`; None leaves one as it is.

        Raises ValueError (naming the value and its range) for a value outside the
        scenario's range; then nothing is applied.
        """
        given = {
            "store_latency_ms": store_latency_ms,
            "store_error_rate": store_error_rate,
            "cpu_burn_us_per_msg": cpu_burn_us_per_msg,
        }
        checked = {}
        for name, value in given.items():
            if value is None:
                continue
            upper = _RUNTIME_UPPER[name]
            if not (isinstance(value, int | float) and 0 <= value <= upper and value < math.inf):
                raise ValueError(f"{name} must be a number in [0, {upper:g}], got {value!r}")
            checked[name] = float(value)
        self._runtime.update(checked)
        self._update_flags()

    def clear_runtime(self) -> None:
        """Back to the scenario's constant values."""
        self._runtime.clear()
        self._update_flags()

    def snapshot(self, now: float) -> dict[str, Any]:
        """What is in force at ``now``, as plain JSON-ready data."""
        return {
            "store_latency_ms": self.store_latency_s(now) * 1000.0,
            "store_error_rate": self.store_error_rate(now),
            "cpu_burn_us_per_msg": self.cpu_burn_us,
            "runtime": dict(self._runtime),
            "configured": {
                "store_latency_ms": self.cfg.store_latency_ms,
                "store_error_rate": self.cfg.store_error_rate,
                "cpu_burn_us_per_msg": self.cfg.cpu_burn_us_per_msg,
            },
            "active_episodes": [
                index
                for index, episode in enumerate(self.cfg.episodes)
                if self._is_active(episode, now)
            ],
            "elapsed_s": now - self.started_at,
        }

    # -- internals --------------------------------------------------------------------

    def _base(self, name: str) -> float:
        value = self._runtime.get(name)
        return float(getattr(self.cfg, name)) if value is None else value

    def _update_flags(self) -> None:
        episodes = self.cfg.episodes
        self._has_latency = self._base("store_latency_ms") > 0 or any(
            e.store_latency_ms > 0 for e in episodes
        )
        self._has_errors = self._base("store_error_rate") > 0 or any(
            e.store_error_rate > 0 for e in episodes
        )

    def _active(self, now: float) -> list[FaultEpisode]:
        if not self.cfg.episodes:  # the common case: no list built on the hot path
            return []
        return [e for e in self.cfg.episodes if self._is_active(e, now)]

    def _is_active(self, episode: FaultEpisode, now: float) -> bool:
        start_s = self.started_at + episode.start_s
        return start_s <= now < start_s + episode.duration_s
