"""chatcap.pipeline.dedup: in flight -> stored -> duplicate answer; a failure forgets."""

from __future__ import annotations

import pytest

from chatcap.pipeline.dedup import JOIN, NEW, REPLAY, DedupTable


class Handle:
    """An in-flight write, compared by identity."""


def table(max_entries: int | None = None) -> DedupTable[str, Handle, int]:
    return DedupTable(max_entries)


def test_unknown_key_is_new_and_counts_no_hit() -> None:
    t = table()
    assert t.answer("k") == NEW and t.hits == 0


def test_retry_while_in_flight_joins_the_first_attempt() -> None:
    t, h = table(), Handle()
    t.begin("k", h)
    assert t.answer("k") == JOIN and t.in_flight("k") is h and t.hits == 1


def test_retry_after_the_commit_replays_the_same_ack() -> None:
    t, h = table(), Handle()
    t.begin("k", h)
    assert t.settle("k", h, 42)
    assert t.answer("k") == REPLAY and t.stored("k") == 42


def test_failed_first_attempt_is_forgotten_so_the_retry_is_new() -> None:
    t, h = table(), Handle()
    t.begin("k", h)
    assert t.fail("k", h)
    assert t.answer("k") == NEW and len(t) == 0


def test_an_old_attempt_does_not_touch_a_newer_one() -> None:
    t, old, new = table(), Handle(), Handle()
    t.begin("k", old)
    t.fail("k", old)
    t.begin("k", new)
    assert t.settle("k", old, 1) is False and t.fail("k", old) is False
    assert t.in_flight("k") is new


def test_asking_for_the_wrong_state_is_a_key_error() -> None:
    t, h = table(), Handle()
    t.begin("k", h)
    with pytest.raises(KeyError, match="in flight"):
        t.stored("k")
    t.settle("k", h, 7)
    with pytest.raises(KeyError, match="stored"):
        t.in_flight("k")


def test_bounded_table_evicts_the_least_recently_used_key() -> None:
    t = table(max_entries=2)
    for key in ("a", "b"):
        h = Handle()
        t.begin(key, h)
        t.settle(key, h, 0)
    assert t.answer("a") == REPLAY  # refreshes "a"
    t.begin("c", Handle())
    assert t.answer("b") == NEW and t.answer("a") == REPLAY and len(t) == 2


def test_unbounded_table_keeps_keys_until_discarded() -> None:
    t = table()
    for i in range(100):
        t.begin(str(i), Handle())
    t.discard("5")
    t.discard("missing")
    assert len(t) == 99 and t.answer("5") == NEW


def test_table_rejects_a_bound_below_one() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        DedupTable(0)


def test_a_none_ack_replays_as_none() -> None:
    t: DedupTable[str, Handle, None] = DedupTable()
    h = Handle()
    t.begin("k", h)
    assert t.settle("k", h, None)
    assert t.answer("k") == REPLAY and t.stored("k") is None


def test_a_key_stored_again_replays_its_newest_ack() -> None:
    t = table()
    first, second = Handle(), Handle()
    t.begin("k", first)
    t.settle("k", first, 1)
    t.discard("k")
    assert t.answer("k") == NEW
    t.begin("k", second)
    assert t.in_flight("k") is second
    t.settle("k", second, 2)
    assert t.stored("k") == 2


def test_evicted_and_discarded_keys_leave_no_ack_behind() -> None:
    t = table(max_entries=3)
    for i in range(50):
        h = Handle()
        t.begin(str(i), h)
        t.settle(str(i), h, i)
    assert len(t) == 3 and [t.stored(k) for k in ("47", "48", "49")] == [47, 48, 49]
    for k in ("47", "48", "49"):
        t.discard(k)
    assert len(t) == 0 and not t._acks  # the acks are kept beside the entries
