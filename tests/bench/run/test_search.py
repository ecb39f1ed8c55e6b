"""The capacity search on synthetic load curves: no processes, no clocks.

A curve is a function offered → :class:`StepResult`; the tests assert which offers the
search asked for and what it concluded.
"""

from __future__ import annotations

import math

import pytest

from bench.run.search import (
    SLO,
    SearchPlan,
    StepResult,
    find_capacity,
    mean_ci,
    midpoint,
    verdict,
)

SLO_50 = SLO(50.0, 0.001)


class Curve:
    """A synthetic server and generator; ``asked`` logs every offer, in order."""

    def __init__(
        self,
        knee: float = math.inf,
        *,
        generator_max: float = math.inf,
        saturate_at: float = math.inf,
        noise: tuple[float, ...] = (0.0,),
    ) -> None:
        self.knee, self.generator_max, self.saturate_at = knee, generator_max, saturate_at
        self.noise = noise
        self.asked: list[float] = []

    def __call__(self, offered: float) -> StepResult:
        wobble = self.noise[len(self.asked) % len(self.noise)]
        self.asked.append(offered)
        acked = min(offered, self.saturate_at) * (1.0 + wobble)
        p99 = 5.0 if offered <= self.knee else 200.0
        limits = ("a Locust process used 99% of a core",) if offered > self.generator_max else ()
        return StepResult(
            offered, acked, p99, p99 * 1.2, 0.0, limits,
            server_cpu_pct=min(100.0, 100 * offered / max(self.knee, 1.0)),
            generator_cpu_pct=min(100.0, 100 * offered / self.generator_max),
        )  # fmt: skip


PLAN = SearchPlan(slo=SLO_50, ladder=(100, 200, 400, 800, 1600), rel_tol=0.1, repeats=3)


@pytest.mark.parametrize("knee", [130.0, 555.0, 1000.0, 1234.0, 3000.0])
def test_a_known_knee_is_found_within_one_step(knee: float) -> None:
    measure = Curve(knee)
    found = find_capacity(measure, PLAN)
    lo, hi = found.capacity_offered_per_s, found.knee_per_s
    assert lo <= knee < hi  # the knee is bracketed …
    assert hi - lo <= PLAN.rel_tol * lo  # … to within one step of the resolution
    assert found.limited_by == "slo" and "ack_p99_ms 200 > 50 ms" in found.why
    assert found.capacity_per_s == pytest.approx(lo)  # acked = offered below the knee
    assert found.repeats == 3 and len(found.at(hi)) == 3  # both ends confirmed
    assert len(found.steps) <= PLAN.max_steps


def test_the_ladder_comes_first_then_bisection_then_the_confirmations() -> None:
    measure = Curve(555.0)
    found = find_capacity(measure, PLAN)
    phases = [(s.phase, s.result.offered_per_s) for s in found.steps]
    assert phases == [
        ("ladder", 100), ("ladder", 200), ("ladder", 400), ("ladder", 800),
        ("bisect", 600), ("bisect", 500), ("bisect", 550),  # 600 − 550 ≤ 10 % of 550
        ("confirm", 550), ("confirm", 550), ("confirm", 600), ("confirm", 600),
    ]  # fmt: skip
    assert measure.asked == [o for _, o in phases]


def test_past_the_ladder_the_offer_grows_until_the_maximum_load() -> None:
    plan = SearchPlan(slo=SLO_50, ladder=(100, 200), max_load_per_s=1000.0, repeats=2)
    found = find_capacity(Curve(), plan)
    assert [s.result.offered_per_s for s in found.steps] == [100, 200, 400, 800, 1000, 1000]
    assert found.limited_by == "max_load" and found.capacity_offered_per_s == 1000
    assert math.isnan(found.knee_per_s)


def test_a_generator_bound_step_is_never_counted_as_server_capacity() -> None:
    # the server would hold 3,000/s but the generator cannot offer more than 700/s
    measure = Curve(3000.0, generator_max=700.0)
    found = find_capacity(measure, PLAN)
    assert found.limited_by == "generator" and "99% of a core" in found.why
    assert found.capacity_offered_per_s <= 700.0 < found.knee_per_s
    for step in found.steps:  # no bound step ever became lo
        if step.result.generator_limits:
            assert step.result.offered_per_s > found.capacity_offered_per_s
    bound = found.at(found.knee_per_s)
    assert len(bound) == 1  # a generator-bound offer is not repeated: it cannot count


def test_a_bound_repeat_makes_the_whole_offer_generator_bound() -> None:
    ok = StepResult(500, 500, 5, 6, 0.0)
    bound = StepResult(500, 500, 5, 6, 0.0, ("sends left late: schedule lag p99 80 ms",))
    assert verdict([ok, ok, bound], SLO_50, 0.9).kind == "generator"


def test_a_latency_miss_with_the_lag_caution_is_the_generators_not_the_servers() -> None:
    late = StepResult(500, 500, 60, 70, 0.0, lag_caution=True)
    assert verdict([late], SLO_50, 0.9).kind == "generator"
    erring = StepResult(500, 500, 60, 70, 0.01, lag_caution=True)
    assert verdict([erring], SLO_50, 0.9).kind == "slo"  # errors are the server's


def test_throughput_that_stops_following_the_offer_ends_the_climb() -> None:
    # latency never breaks the SLO here: only the acked rate stops at 900/s
    measure = Curve(saturate_at=900.0)
    found = find_capacity(measure, PLAN)
    assert found.limited_by == "throughput"
    assert "acked 900/s < 90% of" in found.why
    assert found.capacity_offered_per_s <= 1000.0 < found.knee_per_s  # 900 ÷ 0.9 = 1,000
    assert found.knee_per_s - found.capacity_offered_per_s <= 0.1 * found.capacity_offered_per_s


def test_a_capacity_step_that_fails_on_its_repeats_moves_the_knee_down() -> None:
    # at 550/s the first measurement passes, the repeats lose 20 % of the acks
    class Flaky(Curve):
        def __call__(self, offered: float) -> StepResult:
            r = super().__call__(offered)
            seen = self.asked.count(offered)
            if offered == 550 and seen > 1:
                return StepResult(offered, 0.5 * offered, 5.0, 6.0, 0.0)
            return r

    found = find_capacity(Flaky(555.0), PLAN)
    assert found.capacity_offered_per_s < 550 and found.knee_per_s == 550
    assert found.limited_by == "throughput" and found.repeats == 3


def test_a_first_rung_that_fails_makes_the_search_descend() -> None:
    found = find_capacity(Curve(30.0), PLAN)
    assert [s.phase for s in found.steps][:3] == ["ladder", "descend", "descend"]
    assert found.capacity_offered_per_s <= 30.0 < found.knee_per_s


def test_nothing_passing_down_to_the_minimum_is_zero_capacity() -> None:
    plan = SearchPlan(slo=SLO_50, ladder=(8.0,), min_load_per_s=2.0)
    found = find_capacity(Curve(0.5), plan)
    assert [s.result.offered_per_s for s in found.steps] == [8.0, 4.0, 2.0]
    assert found.capacity_per_s == 0.0 and found.repeats == 0 and found.knee_per_s == 2.0
    assert found.limited_by == "slo"


def test_the_step_budget_bounds_the_search_and_says_so() -> None:
    plan = SearchPlan(slo=SLO_50, ladder=(100, 200, 400, 800), max_steps=5)
    found = find_capacity(Curve(555.0), plan)
    assert len(found.steps) == 5 and "step budget" in found.note
    assert found.limited_by == "slo"  # still the bracket it had: 500 … 600


def test_the_capacity_interval_is_student_t_on_the_repeats_mean() -> None:
    mean, low, high = mean_ci([98.0, 100.0, 102.0])
    # sd = 2, n = 3: t(0.975, 2) = 4.303 → half-width 4.303 × 2 / √3 = 4.97
    assert mean == 100.0 and low == pytest.approx(95.03, abs=0.01)
    assert high == pytest.approx(104.97, abs=0.01)
    one = mean_ci([100.0])
    assert one[0] == 100.0 and math.isnan(one[1]) and math.isnan(one[2])


def test_the_reported_interval_comes_from_the_capacity_steps_repeats() -> None:
    found = find_capacity(Curve(555.0, noise=(0.0, 0.01, -0.01)), PLAN)
    acks = [r.acked_per_s for r in found.at(found.capacity_offered_per_s)]
    assert len(acks) == 3
    assert (found.capacity_per_s, found.ci_low_per_s, found.ci_high_per_s) == mean_ci(acks)
    assert found.ci_low_per_s < found.capacity_per_s < found.ci_high_per_s


def test_midpoints_are_round_numbers_strictly_inside_the_bracket() -> None:
    assert midpoint(400, 800) == 600
    assert midpoint(500, 600) == 550
    assert midpoint(1600, 3200) == 2400
    assert 1000 < midpoint(1000, 1001) < 1001


@pytest.mark.parametrize(
    ("field", "value"),
    [("grow", 1.0), ("rel_tol", 0.0), ("repeats", 0), ("ladder", ()), ("follow_min", 1.5)],
)
def test_a_bad_plan_names_the_field_and_the_allowed_range(field: str, value: object) -> None:
    plan = SearchPlan(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^{field} = .*must be"):
        find_capacity(Curve(100.0), plan)
