"""HikariCP pool rules: checkout order, retirement, leaks and refill, as whole traces."""

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcap.policy import Checkout, Housekeeping, PoolLedger, PoolRules


def test_pool_defaults_are_hikaricps() -> None:
    rules = PoolRules()
    assert dataclasses.asdict(rules) == {
        "size": 10,  # maximumPoolSize
        "min_idle": None,  # minimumIdle defaults to maximumPoolSize
        "acquire_timeout_s": 30.0,  # connectionTimeout 30000 ms
        "idle_timeout_s": 600.0,  # idleTimeout 600000 ms (10 min)
        "max_lifetime_s": 1800.0,  # maxLifetime 1800000 ms (30 min)
        "leak_detection_s": 0.0,  # leakDetectionThreshold 0 = off
    }
    assert rules.effective_min_idle == 10
    assert not rules.idle_eviction_active  # a fixed-size pool by default


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"size": 0}, "size must be a whole number >= 1"),
        ({"min_idle": 11}, r"min_idle must be an int in \[0, size=10\] or None"),
        ({"min_idle": -1}, "min_idle"),
        ({"acquire_timeout_s": -1.0}, "acquire_timeout_s must be a finite number >= 0"),
        ({"idle_timeout_s": math.inf}, "idle_timeout_s"),
        ({"max_lifetime_s": -5.0}, "max_lifetime_s"),
        ({"leak_detection_s": math.nan}, "leak_detection_s"),
    ],
)
def test_pool_rules_reject_impossible_values_naming_the_field(
    params: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PoolRules(**params)  # type: ignore[arg-type]


def test_pool_rules_keep_values_hikaricp_would_only_warn_about() -> None:
    rules = PoolRules(acquire_timeout_s=0.05, idle_timeout_s=2.0, max_lifetime_s=5.0, min_idle=2)
    assert (rules.acquire_timeout_s, rules.idle_timeout_s, rules.max_lifetime_s) == (0.05, 2.0, 5.0)
    assert rules.idle_eviction_active


def test_checkout_creates_up_to_size_then_waits_until_the_timeout() -> None:
    ledger = PoolLedger(PoolRules(size=2, acquire_timeout_s=3.0))
    trace = [ledger.checkout(now) for now in (0.0, 1.0, 2.0)]
    assert trace == [
        Checkout("create", 1),
        Checkout("create", 2),
        Checkout("wait", deadline_s=5.0),
    ]
    assert (ledger.in_use, ledger.idle, ledger.total) == (2, 0, 2)


def test_zero_acquire_timeout_waits_forever_as_in_hikaricp() -> None:
    ledger = PoolLedger(PoolRules(size=1, acquire_timeout_s=0.0))
    ledger.checkout(0.0)
    assert ledger.checkout(1.0) == Checkout("wait", deadline_s=math.inf)


def test_checkout_reuses_the_most_recently_used_idle_connection_first() -> None:
    ledger = PoolLedger(PoolRules(size=3))
    for now in (0.0, 0.0, 0.0):
        ledger.checkout(now)
    for conn_id, now in ((1, 1.0), (3, 2.0), (2, 3.0)):
        assert ledger.checkin(conn_id, now) == "keep"
    assert [ledger.checkout(4.0) for _ in range(4)] == [
        Checkout("reuse", 2),
        Checkout("reuse", 3),
        Checkout("reuse", 1),
        Checkout("wait", deadline_s=34.0),
    ]


def test_checkin_retires_a_connection_past_its_lifetime() -> None:
    ledger = PoolLedger(PoolRules(size=2, max_lifetime_s=30.0))
    ledger.checkout(0.0)
    ledger.checkout(10.0)
    assert [ledger.checkin(1, 30.0), ledger.checkin(2, 30.0)] == ["retire", "keep"]
    assert (ledger.total, ledger.idle) == (1, 1)


def test_checkout_skips_and_retires_idle_connections_past_their_lifetime() -> None:
    ledger = PoolLedger(PoolRules(size=3, max_lifetime_s=30.0))
    for now in (0.0, 5.0, 20.0):
        ledger.checkout(now)
    for conn_id in (3, 1, 2):
        ledger.checkin(conn_id, 21.0)
    assert ledger.checkout(36.0) == Checkout("reuse", 3, retire=(2, 1))
    assert ledger.checkout(36.0) == Checkout("create", 4)


def test_created_starts_the_lifetime_when_opening_took_time() -> None:
    ledger = PoolLedger(PoolRules(size=1, max_lifetime_s=30.0))
    assert ledger.checkout(0.0) == Checkout("create", 1)
    ledger.created(1, 2.0)  # the connect took 2 s
    assert ledger.checkin(1, 31.0) == "keep"
    assert ledger.checkout(31.5) == Checkout("reuse", 1)
    assert ledger.checkin(1, 32.0) == "retire"


def test_housekeeping_evicts_long_idle_connections_beyond_min_idle_lru_first() -> None:
    rules = PoolRules(size=4, min_idle=1, idle_timeout_s=10.0, max_lifetime_s=0.0)
    ledger = PoolLedger(rules)
    for _ in range(3):
        ledger.checkout(0.0)
    for conn_id, now in ((1, 0.0), (2, 1.0), (3, 2.0)):
        ledger.checkin(conn_id, now)
    trace = [(now, ledger.housekeep(now)) for now in (10.0, 11.5, 100.0)]
    assert trace == [
        (10.0, Housekeeping()),  # idle exactly 10 s is not *longer* than the timeout
        (11.5, Housekeeping(retire=(1, 2))),  # 3 was idle 9.5 s; 1 is kept anyway as min_idle
        (100.0, Housekeeping()),  # min_idle protects the last one
    ]
    assert (ledger.idle, ledger.total) == (1, 1)


def test_housekeeping_never_evicts_idle_connections_of_a_fixed_size_pool() -> None:
    ledger = PoolLedger(PoolRules(size=2, max_lifetime_s=0.0))
    ledger.checkout(0.0)
    ledger.checkin(1, 0.0)
    assert ledger.housekeep(1e6) == Housekeeping(create=1)  # and it refills to min_idle


def test_housekeeping_retires_idle_connections_past_their_lifetime_even_within_min_idle() -> None:
    ledger = PoolLedger(PoolRules(size=2, max_lifetime_s=30.0))
    ledger.checkout(0.0)
    ledger.checkout(0.0)
    ledger.checkin(1, 5.0)
    assert ledger.housekeep(30.0) == Housekeeping(retire=(1,), create=1)
    assert (ledger.in_use, ledger.idle, ledger.total) == (1, 0, 1)


def test_housekeeping_refills_to_min_idle_through_add_idle_and_created() -> None:
    ledger = PoolLedger(PoolRules(size=3, min_idle=2))
    trace: list[object] = [ledger.housekeep(0.0)]
    trace += [ledger.add_idle(0.0), ledger.add_idle(0.0)]
    trace.append(ledger.housekeep(0.5))  # both are still opening: nothing more to create
    ledger.created(1, 1.0)
    ledger.created(2, 1.0)
    trace.append((ledger.opening, ledger.idle, ledger.total))
    trace.append(ledger.checkout(2.0))
    trace.append(ledger.housekeep(3.0))
    trace += [ledger.add_idle(3.0), ledger.add_idle(3.0)]  # the second does not fit
    assert trace == [
        Housekeeping(create=2),
        1,
        2,
        Housekeeping(),
        (0, 2, 2),
        Checkout("reuse", 2),
        Housekeeping(create=1),
        3,
        None,
    ]


def test_housekeeping_reports_each_leak_once_per_borrow() -> None:
    ledger = PoolLedger(PoolRules(size=2, leak_detection_s=5.0))
    ledger.checkout(0.0)
    ledger.checkout(3.0)
    trace = [(now, ledger.housekeep(now).leaks) for now in (4.9, 5.0, 6.0, 8.0, 9.0)]
    ledger.checkin(1, 9.5)
    ledger.checkout(10.0)  # conn 1 again: a new borrow
    trace += [(now, ledger.housekeep(now).leaks) for now in (14.0, 15.0)]
    assert trace == [
        (4.9, ()),
        (5.0, (1,)),
        (6.0, ()),
        (8.0, (2,)),
        (9.0, ()),
        (14.0, ()),
        (15.0, (1,)),
    ]


def test_discard_forgets_a_connection_wherever_it_is() -> None:
    ledger = PoolLedger(PoolRules(size=3))
    ledger.checkout(0.0)
    ledger.checkout(0.0)
    ledger.checkin(2, 1.0)
    opening = ledger.add_idle(1.0)
    assert opening == 3
    for conn_id in (1, 2, opening):
        ledger.discard(conn_id)
    assert (ledger.in_use, ledger.idle, ledger.opening, ledger.total) == (0, 0, 0, 0)
    assert ledger.checkout(2.0) == Checkout("create", 4)


def test_misuse_raises_clear_errors() -> None:
    ledger = PoolLedger(PoolRules(size=1))
    ledger.checkout(0.0)
    ledger.checkin(1, 1.0)
    with pytest.raises(RuntimeError, match="connection 1 is idle, not checked out"):
        ledger.checkin(1, 2.0)
    with pytest.raises(ValueError, match="unknown connection id 7"):
        ledger.checkin(7, 2.0)
    with pytest.raises(ValueError, match="unknown connection id 7"):
        ledger.discard(7)
    with pytest.raises(ValueError, match="unknown connection id 7"):
        ledger.created(7, 2.0)


operations = st.lists(
    st.tuples(
        st.sampled_from(["checkout", "checkin", "discard", "housekeep", "add_idle", "created"]),
        st.floats(0.0, 20.0),
        st.integers(0, 50),
    ),
    max_size=200,
)


@settings(deadline=None)
@given(
    ops=operations,
    size=st.integers(1, 6),
    min_idle=st.integers(0, 6),
    lifetime_s=st.sampled_from([0.0, 30.0, 100.0]),
)
def test_ledger_never_exceeds_size_and_its_counters_add_up(
    ops: list[tuple[str, float, int]], size: int, min_idle: int, lifetime_s: float
) -> None:
    rules = PoolRules(
        size=size,
        min_idle=min(min_idle, size),
        idle_timeout_s=10.0,
        max_lifetime_s=lifetime_s,
        leak_detection_s=15.0,
    )
    ledger = PoolLedger(rules)
    borrowed: set[int] = set()
    opening: set[int] = set()
    reported: set[int] = set()
    now = 0.0
    for op, delta, pick in ops:
        now += delta
        if op == "checkout":
            answer = ledger.checkout(now)
            assert not set(answer.retire) & borrowed
            assert (answer.action == "wait") == (answer.conn_id is None)
            if answer.conn_id is not None:
                assert answer.conn_id not in borrowed
                borrowed.add(answer.conn_id)
                reported.discard(answer.conn_id)
        elif op == "checkin" and borrowed:
            conn_id = sorted(borrowed)[pick % len(borrowed)]
            borrowed.remove(conn_id)
            ledger.checkin(conn_id, now)
        elif op == "discard" and borrowed:
            conn_id = sorted(borrowed)[pick % len(borrowed)]
            borrowed.remove(conn_id)
            ledger.discard(conn_id)
        elif op == "housekeep":
            report = ledger.housekeep(now)
            assert not set(report.retire) & borrowed
            assert not set(report.leaks) & reported  # each leak reported once per borrow
            assert set(report.leaks) <= borrowed
            reported |= set(report.leaks)
            assert 0 <= report.create <= size - ledger.total
        elif op == "add_idle":
            new_id = ledger.add_idle(now)
            if new_id is not None:
                opening.add(new_id)
        elif op == "created" and opening:
            ledger.created(opening.pop(), now)
        assert ledger.total <= size
        assert ledger.in_use == len(borrowed)
        assert ledger.opening == len(opening)
        assert ledger.in_use + ledger.idle + ledger.opening == ledger.total


def test_pool_size_given_as_a_whole_float_from_toml_becomes_an_int() -> None:
    rules = PoolRules(size=4.0)  # type: ignore[arg-type]
    assert rules.size == 4 and isinstance(rules.size, int)
    assert rules.effective_min_idle == 4
