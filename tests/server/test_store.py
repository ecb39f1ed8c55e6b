"""The SQLite message store: gap-free per-room seqs, idempotent retries, history, durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.store import PendingSend, StoreConnection, StoredMessage, StoreError
from tests.server.support_writepath import open_store, scaled, send

ROOT = Path(__file__).resolve().parents[2]


def seqs(rows: list[StoredMessage]) -> list[tuple[str, int, bool]]:
    return [(r.room, r.seq, r.duplicate) for r in rows]


def test_seqs_start_at_1_per_room_in_input_order(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        rows = store.commit_batch(
            [send("a", "u1", "1"), send("b", "u1", "2"), send("a", "u2", "1")], ts_us=10
        )
        assert seqs(rows) == [("a", 1, False), ("b", 1, False), ("a", 2, False)]
        assert [r.ts_us for r in rows] == [10, 10, 10]
        rows = store.commit_batch([send("a", "u1", "3")], ts_us=11)
        assert seqs(rows) == [("a", 3, False)]
        assert (store.last_seq("a"), store.last_seq("b"), store.last_seq("empty")) == (3, 1, 0)


def test_retry_in_the_same_batch_shares_the_first_copys_row(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        rows = store.commit_batch(
            [send("a", "u1", "x", "first"), send("a", "u2", "y"), send("a", "u1", "x", "again")],
            ts_us=5,
        )
        assert seqs(rows) == [("a", 1, False), ("a", 2, False), ("a", 1, True)]
        assert rows[2].body == "first"  # the stored row answers, not the retry's copy
        assert store.last_seq("a") == 2


@pytest.mark.parametrize("retry_batch_size", [1, 3])
def test_retry_across_batches_is_a_duplicate_and_consumes_no_seq(
    tmp_path: Path, retry_batch_size: int
) -> None:
    with open_store(tmp_path / "s.db") as store:
        (first,) = store.commit_batch([send("a", "u1", "x", "hello", sent_at_us=7)], ts_us=100)
        others = [send("a", "u9", f"o{i}") for i in range(retry_batch_size - 1)]
        rows = store.commit_batch([send("a", "u1", "x", "hello"), *others], ts_us=200)
        assert rows[0] == StoredMessage("a", 1, "u1", "x", "hello", 100, 7, duplicate=True)
        assert [r.seq for r in rows[1:]] == list(range(2, retry_batch_size + 1))
        assert store.last_seq("a") == retry_batch_size
        assert first.seq == 1 and not first.duplicate


def test_a_retry_names_its_first_room_even_if_the_retry_says_another(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        store.commit_batch([send("a", "u1", "x")], ts_us=1)
        (row,) = store.commit_batch([send("b", "u1", "x")], ts_us=2)
        assert (row.room, row.seq, row.duplicate) == ("a", 1, True)
        assert store.last_seq("b") == 0


def test_an_empty_batch_commits_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        assert store.commit_batch([], ts_us=1) == []


def test_a_failed_batch_rolls_back_entirely_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    with open_store(tmp_path / "s.db") as store:
        bad = PendingSend("a", "u1", "2", None, 1)  # type: ignore[arg-type]  # NOT NULL body
        with pytest.raises(StoreError, match="commit failed"):
            store.commit_batch([send("a", "u1", "1"), bad], ts_us=1)
        assert store.last_seq("a") == 0
        assert seqs(store.commit_batch([send("a", "u1", "1")], ts_us=2)) == [("a", 1, False)]


def test_batches_larger_than_one_lookup_chunk_with_many_rooms(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        store.commit_batch([send(f"r{i}", "old", f"c{i}") for i in range(300)], ts_us=1)
        batch = [send(f"r{i % 400}", "new", f"c{i}") for i in range(700)]
        batch += [send(f"r{i}", "old", f"c{i}") for i in range(300)]  # all retries
        rows = store.commit_batch(batch, ts_us=2)
        assert all(r.duplicate for r in rows[700:])
        assert [r.seq for r in rows[700:]] == [1] * 300
        for room in range(400):
            expected = (room < 300) + len(range(room, 700, 400))
            assert store.last_seq(f"r{room}") == expected
        assert store.integrity_ok()


def test_history_pages_through_a_room_in_seq_order(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        for start in range(0, 10, 4):
            batch = [send("a", "u", f"{i}", f"m{i}") for i in range(start, min(start + 4, 10))]
            store.commit_batch([*batch, send("b", "u", f"b{start}")], ts_us=start)
        pages, after = [], 0
        while page := store.history("a", after_seq=after, limit=4):
            pages.append([(m.seq, m.body) for m in page])
            after = page[-1].seq
        assert pages == [
            [(1, "m0"), (2, "m1"), (3, "m2"), (4, "m3")],
            [(5, "m4"), (6, "m5"), (7, "m6"), (8, "m7")],
            [(9, "m8"), (10, "m9")],
        ]
        assert store.history("a", after_seq=3, limit=1)[0] == StoredMessage(
            "a", 4, "u", "3", "m3", 0, 1
        )
        assert store.history("nobody", after_seq=0, limit=10) == []


def test_committed_messages_are_there_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path, synchronous="FULL") as store:
        store.commit_batch([send("a", "u", str(i)) for i in range(5)], ts_us=1)
    with open_store(path) as store:
        assert store.last_seq("a") == 5
        assert store.integrity_ok()


def test_invalid_synchronous_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="synchronous must be one of"):
        StoreConnection(":memory:", synchronous="NORMAL; DROP TABLE messages")


def test_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        StoreConnection(tmp_path / "missing-dir" / "s.db")


def _write_concurrently(path: Path, writers: int, batches: int, batch_size: int) -> None:
    """``writers`` threads, each with its own connection, committing into rooms a and b."""
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(w: int) -> None:
        try:
            with open_store(path) as store:
                start.wait(timeout=scaled(30))
                for b in range(batches):
                    batch = [
                        send("ab"[(w + i) % 2], f"w{w}", f"{b}-{i}") for i in range(batch_size)
                    ]
                    store.commit_batch(batch, ts_us=b)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)
            start.abort()  # never leave the others waiting at the barrier

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("writers", [2, 4])
def test_connections_sharing_one_file_keep_every_room_gap_free(
    tmp_path: Path, writers: int
) -> None:
    path = tmp_path / "s.db"
    _write_concurrently(path, writers, batches=30, batch_size=5)
    with open_store(path) as store:
        total = 0
        for room in "ab":
            got = [m.seq for m in store.history(room, after_seq=0, limit=10_000)]
            assert got == list(range(1, len(got) + 1))
            total += len(got)
        assert total == writers * 30 * 5
        assert store.integrity_ok()


_KILL_CHILD = """
import sys
from server.store import PendingSend, StoreConnection
store = StoreConnection(sys.argv[1], synchronous="NORMAL")
for b in range(1_000_000):
    rows = store.commit_batch([PendingSend("a", "u", f"{b}-{i}", "x", 1) for i in range(8)], b)
    print(rows[-1].seq, flush=True)  # the "ack": printed only after COMMIT returned
"""


def test_acked_messages_survive_kill_9_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    with child.stdout:
        acked = [int(child.stdout.readline()) for _ in range(50)]
        child.send_signal(signal.SIGKILL)
        child.wait()
    with open_store(path) as store:
        assert store.last_seq("a") >= acked[-1]
        got = [m.seq for m in store.history("a", after_seq=0, limit=1_000_000)]
        assert got == list(range(1, len(got) + 1))
        assert store.integrity_ok()


# A differential check against a plain-Python model: per-room counters plus a dict of keys.
sends = st.builds(
    PendingSend,
    room=st.sampled_from(["a", "b", "c"]),
    sender=st.sampled_from(["u1", "u2"]),
    client_msg_id=st.sampled_from([str(i) for i in range(8)]),
    body=st.just("x"),
    sent_at_us=st.just(0),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(sends, min_size=1, max_size=6), min_size=1, max_size=6))
def test_store_matches_a_model_of_counters_and_keys(batches: list[list[PendingSend]]) -> None:
    next_seq: dict[str, int] = {}
    stored: dict[tuple[str, str], tuple[str, int]] = {}
    with StoreConnection(":memory:") as store:
        for ts, batch in enumerate(batches):
            rows = store.commit_batch(batch, ts_us=ts)
            for p, row in zip(batch, rows, strict=True):
                key = (p.sender, p.client_msg_id)
                duplicate = key in stored
                if not duplicate:
                    next_seq[p.room] = next_seq.get(p.room, 0) + 1
                    stored[key] = (p.room, next_seq[p.room])
                assert (row.room, row.seq, row.duplicate) == (*stored[key], duplicate)
        for room, last in next_seq.items():
            assert store.last_seq(room) == last


def test_connections_opening_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """SQLite answers 'database is locked' without waiting when two connections race to
    switch a new file to WAL; the pool opens connections concurrently, so the store must
    ride that out."""
    failures: list[BaseException] = []
    for round_ in range(20):
        path = tmp_path / f"new-{round_}.db"
        start = threading.Barrier(6)

        def opener(path: Path = path, start: threading.Barrier = start) -> None:
            try:
                start.wait(timeout=scaled(30))
                StoreConnection(path).close()
            except BaseException as exc:
                failures.append(exc)
                start.abort()

        threads = [threading.Thread(target=opener) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
