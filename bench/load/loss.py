"""Message-loss accounting for the load generator, per room by seq, in bounded memory.

A room's messages carry seq 1, 2, 3, … without gaps (the server numbers them at commit).
Each receiver — a user joined to a room — should see every seq once. The ledger keeps,
per ``(receiver, room)``, the seqs received as a short list of disjoint ranges, so a
receiver that gets everything in order costs one range however long the run.

Definitions (simple on purpose, so measured and modelled loss mean the same thing):

* **sent** — messages submitted (``record_sent``; a retry of the same ``client_msg_id``
  is counted in ``retries``, not as a new message);
* **acked** — acks received for them (``record_acked``; a second ack for the same
  ``client_msg_id`` is not counted again); **unacked** — sent, neither acked nor given
  up on (``record_failed``) when the report is taken; **failed** — given up on;
* **delivered** — Deliver frames received (duplicates included). The server does not
  deliver a message back to the connection that sent it (its Ack carries the seq), so
  the sender reports its own acked seqs with ``record_own``: received, not delivered;
* **missing** — per ``(receiver, room)``, the seqs between the first and the last seq
  that receiver saw which it never got. Messages before a receiver's first or after its
  last delivery are not counted: it may not have been a member then;
* **duplicated** — a seq received again by the same receiver in the same room.

Memory: ranges per ``(receiver, room)`` are capped at ``max_ranges``; past it the oldest
gap is *sealed*: counted as missing for good and merged into the range around it (a
seq arriving into a sealed gap later counts as a duplicate — the server delivers in
order, so that does not happen in practice).
In-flight ``client_msg_id``\\ s are kept only until acked or failed.

Pure: no clock, no I/O. A report is a plain dict of counts; reports of several
processes add up key by key (:func:`merge_reports`) because each receiver lives in one
process.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Mapping

__all__ = ["REPORT_KEYS", "LossLedger", "ReceiverLog", "merge_reports"]

REPORT_KEYS = (
    "sent",
    "retries",
    "acked",
    "failed",
    "unacked",
    "delivered",
    "missing",
    "duplicated",
    "receivers",
)
"""The keys of :meth:`LossLedger.report`, all integer counts."""


class ReceiverLog:
    """The seqs one receiver got in one room, as sorted disjoint ``[lo, hi]`` ranges."""

    __slots__ = ("_his", "_los", "duplicated", "max_ranges", "sealed_missing")

    def __init__(self, max_ranges: int = 64) -> None:
        if max_ranges < 1:
            raise ValueError(f"max_ranges must be >= 1, got {max_ranges!r}")
        self.max_ranges = max_ranges
        self._los: list[int] = []
        self._his: list[int] = []
        self.duplicated = 0
        self.sealed_missing = 0

    def add(self, seq: int) -> bool:
        """Record ``seq``; False when it was already received (a duplicate)."""
        los, his = self._los, self._his
        if his and seq == his[-1] + 1:  # the common case: the next seq, in order
            his[-1] = seq
            return True
        i = bisect.bisect_right(los, seq) - 1  # the range starting at or before seq
        if i >= 0 and seq <= his[i]:
            self.duplicated += 1  # also a seq inside a sealed gap: counted missing already
            return False
        if i >= 0 and seq == his[i] + 1:
            his[i] = seq
            self._join_at(i)
        elif i + 1 < len(los) and seq == los[i + 1] - 1:
            los[i + 1] = seq
        else:
            los.insert(i + 1, seq)
            his.insert(i + 1, seq)
            self._seal_excess()
        return True

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        i = bisect.bisect_right(self._los, seq) - 1
        return i >= 0 and seq <= self._his[i]

    def _join_at(self, i: int) -> None:
        """Merge range ``i`` with range ``i + 1`` when they now touch."""
        los, his = self._los, self._his
        if i + 1 < len(los) and his[i] + 1 >= los[i + 1]:
            his[i] = his[i + 1]
            del los[i + 1]
            del his[i + 1]

    def _seal_excess(self) -> None:
        """Count the oldest gap as missing for good while there are too many ranges."""
        los, his = self._los, self._his
        while len(los) > self.max_ranges:
            self.sealed_missing += los[1] - his[0] - 1
            his[0] = his[1]
            del los[1]
            del his[1]

    @property
    def received(self) -> int:
        """Distinct seqs received (sealed gaps, merged into a range, are taken out)."""
        spans = sum(hi - lo + 1 for lo, hi in zip(self._los, self._his, strict=True))
        return spans - self.sealed_missing

    @property
    def missing(self) -> int:
        """Seqs between the first and the last received that never arrived."""
        gaps = sum(self._los[i + 1] - self._his[i] - 1 for i in range(len(self._los) - 1))
        return gaps + self.sealed_missing

    @property
    def last_seq(self) -> int:
        """The highest seq received; 0 when none."""
        return self._his[-1] if self._his else 0

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """The received ranges (a copy), for tests and debugging."""
        return list(zip(self._los, self._his, strict=True))


class LossLedger:
    """Sent / acked / delivered / missing / duplicated counts of one generator process."""

    __slots__ = (
        "_in_flight",
        "_logs",
        "_max_ranges",
        "acked",
        "delivered",
        "failed",
        "retries",
        "sent",
    )

    def __init__(self, max_ranges: int = 64) -> None:
        self._max_ranges = max_ranges
        self._logs: dict[tuple[Hashable, str], ReceiverLog] = {}
        self._in_flight: set[str] = set()
        self.sent = 0
        self.retries = 0
        self.acked = 0
        self.failed = 0
        self.delivered = 0

    def record_sent(self, client_msg_id: str) -> None:
        """A Send went out; the same id again counts as a retry."""
        if client_msg_id in self._in_flight:
            self.retries += 1
        else:
            self._in_flight.add(client_msg_id)
            self.sent += 1

    def record_acked(self, room: str, seq: int, client_msg_id: str) -> bool:
        """An Ack arrived; False (and not counted) when that id was not in flight."""
        if client_msg_id not in self._in_flight:
            return False
        self._in_flight.discard(client_msg_id)
        self.acked += 1
        return True

    def record_failed(self, client_msg_id: str) -> None:
        """The sender gave up on ``client_msg_id`` (final error or timeout, no retry)."""
        if client_msg_id in self._in_flight:
            self._in_flight.discard(client_msg_id)
            self.failed += 1

    def record_delivered(self, receiver: Hashable, room: str, seq: int) -> bool:
        """A Deliver (or replayed message) of ``seq`` reached ``receiver``; False = dup."""
        self.delivered += 1
        return self._log(receiver, room).add(seq)

    def record_own(self, receiver: Hashable, room: str, seq: int) -> None:
        """``receiver`` sent ``seq`` itself: the server acks it instead of delivering it
        back to the sending connection, so it is received, but not a delivery. A retry's
        Ack repeats the seq legitimately: never a duplicate."""
        log = self._log(receiver, room)
        if seq not in log:
            log.add(seq)

    def _log(self, receiver: Hashable, room: str) -> ReceiverLog:
        key = (receiver, room)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = ReceiverLog(self._max_ranges)
        return log

    def last_seq(self, receiver: Hashable, room: str) -> int:
        """The highest seq ``receiver`` got in ``room`` (for ``Join{since_seq}``); 0 = none."""
        log = self._logs.get((receiver, room))
        return log.last_seq if log is not None else 0

    def report(self) -> dict[str, int]:
        """The counts of :data:`REPORT_KEYS` as of now."""
        logs = self._logs.values()
        return {
            "sent": self.sent,
            "retries": self.retries,
            "acked": self.acked,
            "failed": self.failed,
            "unacked": len(self._in_flight),
            "delivered": self.delivered,
            "missing": sum(log.missing for log in logs),
            "duplicated": sum(log.duplicated for log in logs),
            "receivers": len(self._logs),
        }


def merge_reports(reports: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Sum reports of several processes key by key (receivers never span processes)."""
    total = dict.fromkeys(REPORT_KEYS, 0)
    for report in reports:
        for key in REPORT_KEYS:
            total[key] += int(report.get(key, 0))
    return total
