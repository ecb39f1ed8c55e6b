"""Circuit breaker: whole state-transition traces on injected time, plus its table."""

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcap.policy import (
    TRANSITIONS,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    IllegalTransition,
    Transition,
    next_state,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
Entry = tuple[str, float, str]


class Script:
    """Drives a breaker and logs (event, now, state) — transitions included, as they fire."""

    def __init__(self, **config: object) -> None:
        self.log: list[Entry] = []
        self.breaker = CircuitBreaker(BreakerConfig(**config), listeners=[self._transition])  # type: ignore[arg-type]

    def _transition(self, change: Transition) -> None:
        self.log.append((change.reason, change.at_s, change.to_state.name))

    def _note(self, event: str, now: float) -> None:
        self.log.append((event, now, self.breaker.state.name))

    def acquire(self, now: float) -> None:
        decision = self.breaker.try_acquire(now)
        self._note("allow" if decision.allowed else f"refuse {decision.retry_after_s:g}", now)

    def success(self, now: float, duration_s: float = 0.01) -> None:
        self.breaker.on_success(now, duration_s)
        self._note("success", now)

    def error(self, now: float, duration_s: float = 0.01) -> None:
        self.breaker.on_error(now, duration_s)
        self._note("error", now)


SMALL = {"window_size": 4, "minimum_calls": 4, "open_duration_s": 10.0, "half_open_calls": 2}


def test_breaker_defaults_are_resilience4j_defaults() -> None:
    assert dataclasses.asdict(BreakerConfig()) == {
        "window_type": "count",  # slidingWindowType COUNT_BASED
        "window_size": 100,  # slidingWindowSize
        "minimum_calls": 100,  # minimumNumberOfCalls
        "failure_rate_pct": 50.0,  # failureRateThreshold
        "slow_call_duration_s": 60.0,  # slowCallDurationThreshold 60000 ms
        "slow_call_rate_pct": 100.0,  # slowCallRateThreshold
        "open_duration_s": 60.0,  # waitDurationInOpenState 60000 ms
        "half_open_calls": 10,  # permittedNumberOfCallsInHalfOpenState
        "max_half_open_wait_s": 0.0,  # maxWaitDurationInHalfOpenState 0 = wait forever
    }


def test_breaker_stays_closed_below_minimum_calls_whatever_the_failures() -> None:
    script = Script(**SMALL)
    for now in (1.0, 2.0, 3.0):
        script.error(now)
    assert script.log == [
        ("error", 1.0, "CLOSED"),
        ("error", 2.0, "CLOSED"),
        ("error", 3.0, "CLOSED"),
    ]
    assert script.breaker.failure_rate_pct(3.0) == -1.0


def test_breaker_opens_after_min_calls_at_threshold() -> None:
    script = Script(**SMALL)
    script.success(1.0)
    script.success(2.0)
    script.error(3.0)
    script.error(4.0)  # 2 of 4 = 50 %: at the threshold opens
    script.acquire(5.0)
    assert script.log == [
        ("success", 1.0, "CLOSED"),
        ("success", 2.0, "CLOSED"),
        ("error", 3.0, "CLOSED"),
        ("failure_threshold_exceeded", 4.0, "OPEN"),
        ("error", 4.0, "OPEN"),
        ("refuse 9", 5.0, "OPEN"),
    ]


def test_breaker_count_window_slides_so_old_outcomes_drop_out() -> None:
    script = Script(**{**SMALL, "failure_rate_pct": 75.0})
    for now, failed in enumerate([True, False, False, False, True, True, True], start=1):
        (script.error if failed else script.success)(float(now))
    assert script.breaker.state is OPEN
    assert script.log[-2:] == [("failure_threshold_exceeded", 7.0, "OPEN"), ("error", 7.0, "OPEN")]
    assert [entry[2] for entry in script.log[:-2]] == ["CLOSED"] * 6  # 1 F of 4 … 2 F of 4


def test_breaker_count_window_needs_no_more_calls_than_it_holds() -> None:
    script = Script(window_size=3, minimum_calls=100, open_duration_s=1.0)
    for now in (1.0, 2.0, 3.0):
        script.error(now)
    assert script.log == [
        ("error", 1.0, "CLOSED"),
        ("error", 2.0, "CLOSED"),
        ("failure_threshold_exceeded", 3.0, "OPEN"),
        ("error", 3.0, "OPEN"),
    ]


def test_breaker_time_window_ages_out_old_seconds() -> None:
    script = Script(window_type="time", window_size=10, minimum_calls=3, open_duration_s=5.0)
    script.error(0.0)
    script.error(1.5)
    script.success(12.0)  # the window is seconds 3..12: both errors aged out
    script.error(12.5)
    assert script.breaker.failure_rate_pct(12.5) == -1.0  # 2 calls in the window
    script.error(13.0)  # 2 errors of 3 within 10 s
    assert script.log == [
        ("error", 0.0, "CLOSED"),
        ("error", 1.5, "CLOSED"),
        ("success", 12.0, "CLOSED"),
        ("error", 12.5, "CLOSED"),
        ("failure_threshold_exceeded", 13.0, "OPEN"),
        ("error", 13.0, "OPEN"),
    ]


def test_breaker_time_window_opens_on_failures_inside_the_window() -> None:
    script = Script(window_type="time", window_size=10, minimum_calls=3, open_duration_s=5.0)
    script.error(0.0)
    script.error(5.0)
    script.error(9.9)
    assert script.log[-2:] == [("failure_threshold_exceeded", 9.9, "OPEN"), ("error", 9.9, "OPEN")]


def test_breaker_time_window_rates_age_when_read() -> None:
    breaker = CircuitBreaker(BreakerConfig(window_type="time", window_size=5, minimum_calls=1))
    breaker.on_success(0.0, 0.01)
    breaker.on_error(1.0, 0.01)
    assert breaker.failure_rate_pct(2.0) == 50.0
    assert breaker.failure_rate_pct(5.5) == 100.0  # second 0 has left the window
    assert breaker.failure_rate_pct(6.0) == -1.0  # everything has


def test_breaker_opens_on_slow_successes() -> None:
    script = Script(
        window_size=2, minimum_calls=2, slow_call_duration_s=1.0, slow_call_rate_pct=50.0
    )
    script.success(1.0, duration_s=1.0)  # exactly at the threshold is not slow
    script.success(2.0, duration_s=0.5)
    script.success(3.0, duration_s=1.5)
    assert script.log == [
        ("success", 1.0, "CLOSED"),
        ("success", 2.0, "CLOSED"),
        ("slow_call_threshold_exceeded", 3.0, "OPEN"),
        ("success", 3.0, "OPEN"),
    ]


def test_breaker_counts_slow_errors_as_both_errors_and_slow_calls() -> None:
    breaker = CircuitBreaker(
        BreakerConfig(
            window_size=4, minimum_calls=4, slow_call_duration_s=1.0, failure_rate_pct=100.0
        )
    )
    for now in (1.0, 2.0, 3.0):
        breaker.on_success(now, 0.1)
    breaker.on_error(4.0, 2.0)
    assert breaker.state is CLOSED
    assert (breaker.failure_rate_pct(4.0), breaker.slow_call_rate_pct(4.0)) == (25.0, 25.0)


def test_breaker_half_open_success_closes() -> None:
    script = Script(**SMALL)
    script.breaker.transition_to_open(0.0)
    script.acquire(9.0)
    script.acquire(10.0)  # the open period is over: this call is the first trial
    script.acquire(10.5)
    script.acquire(10.6)  # both trial permits are out
    script.success(11.0)
    script.success(11.5)
    script.acquire(12.0)
    assert script.log == [
        ("transition_to_open", 0.0, "OPEN"),
        ("refuse 1", 9.0, "OPEN"),
        ("open_duration_elapsed", 10.0, "HALF_OPEN"),
        ("allow", 10.0, "HALF_OPEN"),
        ("allow", 10.5, "HALF_OPEN"),
        ("refuse 10", 10.6, "HALF_OPEN"),
        ("success", 11.0, "HALF_OPEN"),
        ("half_open_calls_passed", 11.5, "CLOSED"),
        ("success", 11.5, "CLOSED"),
        ("allow", 12.0, "CLOSED"),
    ]
    assert script.breaker.failure_rate_pct(12.0) == -1.0  # a fresh window


def test_breaker_half_open_failure_reopens_for_the_full_duration() -> None:
    script = Script(**SMALL)
    script.breaker.transition_to_open(0.0)
    script.acquire(10.0)
    script.acquire(10.0)
    script.success(10.5)
    script.error(11.0)  # 1 of 2 = 50 %: the trial failed
    script.acquire(11.0)
    script.acquire(21.0)
    assert script.log == [
        ("transition_to_open", 0.0, "OPEN"),
        ("open_duration_elapsed", 10.0, "HALF_OPEN"),
        ("allow", 10.0, "HALF_OPEN"),
        ("allow", 10.0, "HALF_OPEN"),
        ("success", 10.5, "HALF_OPEN"),
        ("half_open_calls_failed", 11.0, "OPEN"),
        ("error", 11.0, "OPEN"),
        ("refuse 10", 11.0, "OPEN"),
        ("open_duration_elapsed", 21.0, "HALF_OPEN"),
        ("allow", 21.0, "HALF_OPEN"),
    ]


def test_breaker_half_open_trial_fails_on_slow_calls_too() -> None:
    script = Script(**SMALL, slow_call_duration_s=1.0, slow_call_rate_pct=50.0)
    script.breaker.transition_to_open(0.0)
    script.breaker.transition_to_half_open(1.0)
    script.success(2.0, duration_s=5.0)
    script.success(3.0)
    assert script.log == [
        ("transition_to_open", 0.0, "OPEN"),
        ("transition_to_half_open", 1.0, "HALF_OPEN"),
        ("success", 2.0, "HALF_OPEN"),
        ("half_open_calls_failed", 3.0, "OPEN"),
        ("success", 3.0, "OPEN"),
    ]


def test_breaker_release_permission_returns_an_unused_half_open_permit() -> None:
    script = Script(**SMALL)
    script.breaker.transition_to_open(0.0)
    script.acquire(10.0)
    script.acquire(10.0)
    script.acquire(10.0)
    script.breaker.release_permission()
    script.breaker.release_permission()
    script.breaker.release_permission()  # never more than half_open_calls
    script.acquire(10.1)
    script.acquire(10.2)
    script.acquire(10.3)
    outcomes = [entry[0] for entry in script.log if entry[0] not in ("transition_to_open",)]
    assert outcomes == [
        "open_duration_elapsed",
        "allow",
        "allow",
        "refuse 10",
        "allow",
        "allow",
        "refuse 10",
    ]


def test_breaker_release_permission_outside_half_open_does_nothing() -> None:
    breaker = CircuitBreaker(BreakerConfig(**SMALL))  # type: ignore[arg-type]
    breaker.release_permission()
    assert breaker.try_acquire(0.0).allowed


def test_breaker_max_half_open_wait_reopens_at_the_due_time() -> None:
    script = Script(**SMALL, max_half_open_wait_s=5.0)
    script.breaker.transition_to_open(0.0)
    script.acquire(10.0)
    script.acquire(14.0)
    script.acquire(15.5)  # noticed late; the transition is dated 15
    script.success(16.0)  # a trial outcome arriving while open is ignored
    script.acquire(25.0)
    assert script.log == [
        ("transition_to_open", 0.0, "OPEN"),
        ("open_duration_elapsed", 10.0, "HALF_OPEN"),
        ("allow", 10.0, "HALF_OPEN"),
        ("allow", 14.0, "HALF_OPEN"),
        ("max_half_open_wait_elapsed", 15.0, "OPEN"),
        ("refuse 9.5", 15.5, "OPEN"),
        ("success", 16.0, "OPEN"),
        ("open_duration_elapsed", 25.0, "HALF_OPEN"),
        ("allow", 25.0, "HALF_OPEN"),
    ]


def test_breaker_max_half_open_wait_is_checked_when_an_outcome_arrives() -> None:
    script = Script(**SMALL, max_half_open_wait_s=5.0)
    script.breaker.transition_to_open(0.0)
    script.acquire(10.0)
    script.success(16.0)
    assert script.log[-2:] == [
        ("max_half_open_wait_elapsed", 15.0, "OPEN"),
        ("success", 16.0, "OPEN"),
    ]


def test_breaker_ignores_outcomes_while_open_and_keeps_the_rates_that_opened_it() -> None:
    script = Script(**SMALL)
    for now in (1.0, 2.0, 3.0, 4.0):
        script.error(now)
    script.success(5.0)
    script.success(6.0)
    assert script.breaker.state is OPEN
    assert script.breaker.failure_rate_pct(6.0) == 100.0
    assert script.breaker.not_permitted_calls == 0
    script.acquire(7.0)
    assert script.breaker.not_permitted_calls == 1


def test_breaker_metrics_are_minus_one_below_minimum_calls() -> None:
    breaker = CircuitBreaker(BreakerConfig(window_size=10, minimum_calls=3))
    rates = []
    for now in (1.0, 2.0, 3.0):
        breaker.on_error(now, 0.0) if now == 1.0 else breaker.on_success(now, 0.0)
        rates.append((breaker.failure_rate_pct(now), breaker.slow_call_rate_pct(now)))
    assert rates == [(-1.0, -1.0), (-1.0, -1.0), (pytest.approx(100 / 3), 0.0)]


def test_breaker_manual_controls_and_reset_fire_their_own_events() -> None:
    script = Script(**SMALL)
    script.breaker.transition_to_open(1.0)
    script.breaker.transition_to_open(2.0)  # restarts the open period
    script.acquire(11.0)
    script.breaker.transition_to_half_open(11.5)
    script.breaker.transition_to_closed(12.0)
    script.breaker.reset(13.0)  # reset fires even from CLOSED
    assert script.log == [
        ("transition_to_open", 1.0, "OPEN"),
        ("transition_to_open", 2.0, "OPEN"),
        ("refuse 1", 11.0, "OPEN"),
        ("transition_to_half_open", 11.5, "HALF_OPEN"),
        ("transition_to_closed", 12.0, "CLOSED"),
        ("reset", 13.0, "CLOSED"),
    ]


def test_breaker_half_open_from_closed_is_illegal_as_in_resilience4j() -> None:
    breaker = CircuitBreaker(BreakerConfig())
    with pytest.raises(IllegalTransition, match=r"'transition_to_half_open'.*CLOSED"):
        breaker.transition_to_half_open(0.0)
    assert breaker.state is CLOSED


def test_illegal_transition_names_the_event_state_and_legal_events() -> None:
    with pytest.raises(IllegalTransition) as raised:
        next_state(CLOSED, "open_duration_elapsed")
    assert str(raised.value) == (
        "event 'open_duration_elapsed' is not allowed in state CLOSED; allowed there: "
        "failure_threshold_exceeded, reset, slow_call_threshold_exceeded, "
        "transition_to_closed, transition_to_open"
    )


def test_transition_table_is_the_documented_state_machine() -> None:
    automatic = {
        key: value
        for key, value in TRANSITIONS.items()
        if not key[1].startswith(("transition_to", "reset"))
    }
    assert automatic == {
        (CLOSED, "failure_threshold_exceeded"): OPEN,
        (CLOSED, "slow_call_threshold_exceeded"): OPEN,
        (OPEN, "open_duration_elapsed"): HALF_OPEN,
        (HALF_OPEN, "half_open_calls_passed"): CLOSED,
        (HALF_OPEN, "half_open_calls_failed"): OPEN,
        (HALF_OPEN, "max_half_open_wait_elapsed"): OPEN,
    }
    assert all(TRANSITIONS[state, "reset"] is CLOSED for state in BreakerState)
    assert (CLOSED, "transition_to_half_open") not in TRANSITIONS


def test_every_listener_gets_every_transition() -> None:
    first: list[Transition] = []
    second: list[Transition] = []
    breaker = CircuitBreaker(BreakerConfig(**SMALL), listeners=[first.append, second.append])  # type: ignore[arg-type]
    for now in (1.0, 2.0, 3.0, 4.0):
        breaker.on_error(now, 0.0)
    breaker.try_acquire(14.0)
    breaker.try_acquire(14.0)
    breaker.on_success(15.0, 0.0)
    breaker.on_success(15.0, 0.0)
    expected = [
        Transition(CLOSED, OPEN, 4.0, "failure_threshold_exceeded"),
        Transition(OPEN, HALF_OPEN, 14.0, "open_duration_elapsed"),
        Transition(HALF_OPEN, CLOSED, 15.0, "half_open_calls_passed"),
    ]
    assert first == expected
    assert second == expected


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("window_type", "sliding", "window_type must be 'count' or 'time'"),
        ("window_size", 0, "window_size must be a whole number >= 1"),
        ("minimum_calls", 2.5, "minimum_calls must be a whole number >= 1"),
        ("failure_rate_pct", 0.0, r"failure_rate_pct must be in \(0, 100\]"),
        ("slow_call_rate_pct", 101.0, r"slow_call_rate_pct must be in \(0, 100\]"),
        ("slow_call_duration_s", 0.0, "slow_call_duration_s must be a finite number > 0"),
        ("open_duration_s", -1.0, "open_duration_s must be a finite number > 0"),
        ("half_open_calls", 0, "half_open_calls must be a whole number >= 1"),
        ("max_half_open_wait_s", -1.0, "max_half_open_wait_s must be a finite number >= 0"),
        ("max_half_open_wait_s", math.inf, "max_half_open_wait_s"),
    ],
)
def test_breaker_config_rejects_bad_values_naming_the_field_and_range(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BreakerConfig(**{field: value})  # type: ignore[arg-type]


def test_breaker_config_takes_whole_floats_from_toml_as_ints() -> None:
    config = BreakerConfig(window_size=20.0, minimum_calls=5.0, half_open_calls=3.0)  # type: ignore[arg-type]
    assert (config.window_size, config.minimum_calls, config.half_open_calls) == (20, 5, 3)
    assert isinstance(config.window_size, int)


operations = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "success", "error", "slow", "release"]),
        st.floats(min_value=0.0, max_value=3.0),
    ),
    max_size=300,
)


@settings(deadline=None)
@given(
    ops=operations,
    half_open_calls=st.integers(min_value=1, max_value=5),
    max_wait_s=st.sampled_from([0.0, 2.0]),
    window_type=st.sampled_from(["count", "time"]),
    with_release=st.booleans(),
)
def test_breaker_never_lets_more_than_half_open_calls_through_in_one_episode(
    ops: list[tuple[str, float]],
    half_open_calls: int,
    max_wait_s: float,
    window_type: str,
    with_release: bool,
) -> None:
    episodes: list[int] = []  # net permits handed out per half-open episode

    def on_transition(change: Transition) -> None:
        if change.to_state is HALF_OPEN:
            episodes.append(0)

    config = BreakerConfig(
        window_type=window_type,
        window_size=4,
        minimum_calls=2,
        open_duration_s=1.0,
        slow_call_duration_s=1.0,
        half_open_calls=half_open_calls,
        max_half_open_wait_s=max_wait_s,
    )
    breaker = CircuitBreaker(config, listeners=[on_transition])
    now = 0.0
    for op, delta in ops:
        now += delta
        if op == "acquire":
            allowed = breaker.try_acquire(now).allowed
            if allowed and breaker.state is HALF_OPEN:
                episodes[-1] += 1
        elif op == "release" and with_release:
            if breaker.state is HALF_OPEN and episodes[-1] > 0:
                breaker.release_permission()
                episodes[-1] -= 1
        elif op in ("success", "slow"):
            breaker.on_success(now, 2.0 if op == "slow" else 0.1)
        elif op == "error":
            breaker.on_error(now, 0.1)
        assert all(0 <= permits <= half_open_calls for permits in episodes)
