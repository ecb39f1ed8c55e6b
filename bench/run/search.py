"""Capacity found by search: the highest offered load the server holds at its SLO.

Pure: :func:`find_capacity` is handed ``measure(offered_per_s) -> StepResult`` and decides
which load to offer next; it starts no process and reads no clock, so a test drives it
with a synthetic load curve and ``bench run --find-capacity`` with real Locust points.

Theory of operation
-------------------
A *step* is one measurement at an offered load. An offer's **verdict** comes from every
measurement taken at it (its repeats), in this order:

* ``generator`` — some repeat the generator could not keep (``generator_limits``
  non-empty), or a latency miss while the generator's own schedule lag was a large part
  of the ack tail (``lag_caution``). Never counted as server capacity, either way;
* ``failed`` — some repeat could not be measured (its reason);
* ``throughput`` — mean acked ÷ offered below :attr:`SearchPlan.follow_min`: acked
  throughput stopped following the offer;
* ``slo`` — the means break the :class:`SLO` (p99 ack, p99 delivery, error rate);
* ``pass`` — none of these.

With *lo* the highest passing offer and *hi* the lowest offer above *lo* that did not
pass (failures below *lo* are noise and ignored), the next offer is:

1. no *hi* — **climb**: the next rung of the coarse ladder above *lo*, past the ladder
   *lo* × ``grow``, at most ``max_load_per_s`` (a pass there ends it: ``max_load``);
2. no *lo* — **descend**: the lowest offer ÷ ``grow``, not below ``min_load_per_s``;
3. ``hi − lo > rel_tol × lo`` — **bisect** at a rounded midpoint;
4. else **confirm**: *lo* is measured again until it has ``repeats`` measurements, then
   *hi* (unless generator-bound). Verdicts are recomputed from all repeats, so a *lo*
   that fails on its repeats becomes the new *hi* and the search goes on below it.

``max_steps`` bounds the measurements; reaching it ends the search with what it has.

**The result.** The capacity is the mean acked throughput at *lo* over its repeats, with
a 95 % Student-t interval on that mean (``n − 1`` degrees of freedom; NaN for one
repeat) — the repeats are independent runs, each against a fresh server. The knee lies
between *lo* and *hi*: that bracket, at most ``rel_tol`` wide, is the search's
resolution and is reported beside the interval, not folded into it. ``limited_by`` is
*hi*'s verdict (``slo``, ``throughput``, ``failed``, ``generator``), or ``max_load``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAN = math.nan
SLO_P99_MS = 50.0
"""The default service level: p99 ack and delivery latency, ms …"""
SLO_ERROR_RATE = 0.001
"""… and share of send attempts not acked (the demo's and capacity-planning's defaults)."""
FOLLOW_MIN = 0.9
"""Acked ÷ offered below this means throughput stopped following the offer (short steps
carry Poisson noise of a few per cent, so not 0.99)."""
CONFIDENCE = 0.95


@dataclass(frozen=True)
class SLO:
    """A service level: every metric's p99 ≤ ``p99_ms`` and error rate ≤ ``error_rate``.

    Shared by the measured search and the model's (:mod:`bench.analysis.capacity`).
    """

    p99_ms: float
    error_rate: float = 0.01  # bench.analysis.comparison.ERROR_MAX, the model's default
    metrics: tuple[str, ...] = ("ack_p99_ms", "deliver_p99_ms")

    def misses(self, row: Mapping[str, Any]) -> list[str]:
        """What ``row`` (summary or aggregated) breaks; empty when it meets the SLO."""
        out = []
        for metric in self.metrics:
            value = float(row.get(f"{metric}_mean", row.get(metric, math.nan)))
            if not value <= self.p99_ms:
                out.append(f"{metric} {value:.3g} > {self.p99_ms:g} ms")
        err = float(row.get("error_rate_mean", row.get("error_rate", math.nan)))
        if not err <= self.error_rate:
            out.append(f"error rate {err:.2%} > {self.error_rate:.2%}")
        return out

    def describe(self) -> str:
        names = " and ".join(m.removesuffix("_p99_ms") for m in self.metrics)
        return f"p99 of {names} ≤ {self.p99_ms:g} ms, error rate ≤ {self.error_rate:.2%}"


@dataclass(frozen=True)
class StepResult:
    """One measurement at an offered load, as the search needs it.

    CPU shares are % of the cores each side could use (a process uses one core at most).
    """

    offered_per_s: float
    acked_per_s: float
    ack_p99_ms: float
    deliver_p99_ms: float
    error_rate: float
    generator_limits: tuple[str, ...] = ()
    lag_caution: bool = False
    failed: str = ""
    server_cpu_pct: float = NAN
    generator_cpu_pct: float = NAN
    server_cpu_us_per_msg: float = NAN


@dataclass(frozen=True)
class Verdict:
    kind: str  # pass | slo | throughput | failed | generator
    why: str = ""

    @property
    def passed(self) -> bool:
        return self.kind == "pass"


def verdict(results: Sequence[StepResult], slo: SLO, follow_min: float) -> Verdict:
    """An offer's verdict from all its measurements (the module docstring's order)."""
    bound = [r for r in results if r.generator_limits]
    if bound:
        return Verdict("generator", "; ".join(bound[0].generator_limits))
    failed = [r for r in results if r.failed]
    if failed:
        return Verdict("failed", failed[0].failed)
    offered = results[0].offered_per_s
    acked = _mean([r.acked_per_s for r in results])
    if not acked >= follow_min * offered:
        return Verdict("throughput", f"acked {acked:,.0f}/s < {follow_min:.0%} of {offered:,g}/s")
    means = {
        name: _mean([getattr(r, name) for r in results])
        for name in ("ack_p99_ms", "deliver_p99_ms", "error_rate")
    }
    misses = slo.misses(means)
    if misses and any(r.lag_caution for r in results) and all("rate" not in m for m in misses):
        return Verdict("generator", "the generator's schedule lag is much of the ack tail")
    return Verdict("slo", "; ".join(misses)) if misses else Verdict("pass")


@dataclass(frozen=True)
class SearchPlan:
    """How to search (see the module docstring)."""

    slo: SLO = field(default_factory=lambda: SLO(SLO_P99_MS, SLO_ERROR_RATE))
    ladder: tuple[float, ...] = (100.0, 200.0, 400.0, 800.0, 1600.0)
    grow: float = 2.0
    max_load_per_s: float = 100_000.0
    min_load_per_s: float = 1.0
    rel_tol: float = 0.1
    repeats: int = 3
    max_steps: int = 20
    follow_min: float = FOLLOW_MIN

    def check(self) -> None:
        """Raises ValueError naming the bad field, its value and the allowed range."""
        rules = (
            ("ladder", bool(self.ladder) and all(x > 0 for x in self.ladder), "positive loads"),
            ("grow", self.grow > 1, "> 1"),
            ("max_load_per_s", self.max_load_per_s >= max(self.ladder or (0,)), "≥ the ladder"),
            ("min_load_per_s", 0 < self.min_load_per_s <= min(self.ladder or (1,)), "(0, ladder]"),
            ("rel_tol", 0 < self.rel_tol < 1, "(0, 1)"),
            ("repeats", self.repeats >= 1, "≥ 1"),
            ("max_steps", self.max_steps >= 1, "≥ 1"),
            ("follow_min", 0 < self.follow_min <= 1, "(0, 1]"),
        )
        for name, ok, allowed in rules:
            if not ok:
                raise ValueError(f"{name} = {getattr(self, name)!r}: must be {allowed}")


@dataclass(frozen=True)
class Step:
    """A measurement the search asked for, in order."""

    index: int
    phase: str  # ladder | descend | bisect | confirm
    result: StepResult


@dataclass(frozen=True)
class SearchResult:
    """What the search found; capacity figures in sends/s (NaN when nothing passed)."""

    steps: tuple[Step, ...]
    verdicts: dict[float, Verdict]
    limited_by: str  # slo | throughput | failed | generator | max_load | none
    capacity_offered_per_s: float  # lo
    knee_per_s: float  # hi (NaN when none)
    capacity_per_s: float
    ci_low_per_s: float
    ci_high_per_s: float
    repeats: int  # measurements at lo
    why: str  # hi's reason
    note: str = ""

    def at(self, offered: float) -> list[StepResult]:
        return [s.result for s in self.steps if s.result.offered_per_s == offered]


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): a Student-t interval on the mean; NaN bounds for fewer than 2."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return NAN, NAN, NAN
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, NAN, NAN
    from scipy.stats import t  # type: ignore[import-untyped]  # a search without repeats needs none

    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    half = float(t.ppf(0.5 + confidence / 2, len(vals) - 1)) * sd / math.sqrt(len(vals))
    return mean, mean - half, mean + half


def midpoint(lo: float, hi: float) -> float:
    """A round offer between ``lo`` and ``hi`` (two significant figures of the gap)."""
    mid = (lo + hi) / 2
    quantum = 10 ** math.floor(math.log10((hi - lo) / 4)) if hi > lo else 1.0
    nice = round(mid / quantum) * quantum
    return float(nice) if lo < nice < hi else mid


class _State:
    """The measurements so far and what they imply (lo, hi)."""

    def __init__(self, plan: SearchPlan) -> None:
        self.plan = plan
        self.by_offer: dict[float, list[StepResult]] = {}
        self.steps: list[Step] = []

    def add(self, phase: str, result: StepResult) -> None:
        self.by_offer.setdefault(result.offered_per_s, []).append(result)
        self.steps.append(Step(len(self.steps) + 1, phase, result))

    def verdicts(self) -> dict[float, Verdict]:
        p = self.plan
        return {o: verdict(rs, p.slo, p.follow_min) for o, rs in sorted(self.by_offer.items())}

    def bracket(self) -> tuple[float | None, float | None, dict[float, Verdict]]:
        v = self.verdicts()
        passing = [o for o, x in v.items() if x.passed]
        lo = max(passing) if passing else None
        above = [o for o, x in v.items() if not x.passed and (lo is None or o > lo)]
        return lo, (min(above) if above else None), v


def next_offer(state: _State) -> tuple[str, float] | None:
    """The next (phase, offer), or None when the search is done."""
    plan = state.plan
    lo, hi, verdicts = state.bracket()
    if lo is None and hi is None:
        return "ladder", plan.ladder[0]
    if hi is None:
        assert lo is not None
        if lo >= plan.max_load_per_s:
            return _confirm(state, lo, None, verdicts)
        rungs = [x for x in sorted(plan.ladder) if x > lo]
        return "ladder", rungs[0] if rungs else min(lo * plan.grow, plan.max_load_per_s)
    if lo is None:
        down = min(state.by_offer) / plan.grow
        return ("descend", down) if down >= plan.min_load_per_s else None
    mid = midpoint(lo, hi)
    if hi - lo > plan.rel_tol * lo and mid not in state.by_offer:
        return "bisect", mid
    return _confirm(state, lo, hi, verdicts)


def _confirm(
    state: _State, lo: float, hi: float | None, verdicts: Mapping[float, Verdict]
) -> tuple[str, float] | None:
    want = state.plan.repeats
    if len(state.by_offer[lo]) < want:
        return "confirm", lo
    if hi is not None and verdicts[hi].kind != "generator" and len(state.by_offer[hi]) < want:
        return "confirm", hi
    return None


def find_capacity(
    measure: Callable[[float], StepResult],
    plan: SearchPlan,
    *,
    announce: Callable[[int, str, float], None] | None = None,
) -> SearchResult:
    """Search with ``measure`` until done or ``plan.max_steps`` measurements (module doc);
    ``announce(step, phase, offered)`` is told each step before it is measured."""
    plan.check()
    state = _State(plan)
    note = ""
    while True:
        nxt = next_offer(state)
        if nxt is None:
            break
        if len(state.steps) >= plan.max_steps:
            note = f"stopped at the step budget ({plan.max_steps} measurements)"
            break
        phase, offer = nxt
        if announce is not None:
            announce(len(state.steps) + 1, phase, offer)
        state.add(phase, measure(offer))
    return _result(state, note)


def _result(state: _State, note: str) -> SearchResult:
    lo, hi, verdicts = state.bracket()
    if hi is not None:
        limited_by, why = verdicts[hi].kind, verdicts[hi].why
    elif lo is not None and lo >= state.plan.max_load_per_s:
        limited_by, why = "max_load", f"passed at the highest offer allowed ({lo:,g}/s)"
    else:
        limited_by, why = "none", "the search ended before it found a bound"
    at_lo = state.by_offer[lo] if lo is not None else []
    mean, low, high = mean_ci([r.acked_per_s for r in at_lo])
    return SearchResult(
        steps=tuple(state.steps),
        verdicts=verdicts,
        limited_by=limited_by,
        capacity_offered_per_s=lo if lo is not None else 0.0,
        knee_per_s=hi if hi is not None else NAN,
        capacity_per_s=mean if at_lo else 0.0,
        ci_low_per_s=low,
        ci_high_per_s=high,
        repeats=len(at_lo),
        why=why,
        note=note,
    )


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else NAN
