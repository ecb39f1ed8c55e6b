"""Numbered senders and recording receivers under load, and the audit of what survived.

A :class:`Sender` sends to one room messages numbered 1, 2, 3, …: the client_msg_id is
``<sender>-<n>`` and the body starts with ``<sender>#<n>``, so every stored row says who
sent it and which message it is. Sends are pipelined (up to ``window`` unanswered, as a
real client would) and every answer is written down. A send that was refused, or got no
answer because the server went away, is sent again with the **same** client_msg_id before
any new one, in number order: so each sender's stored messages are always the prefix
1..m of its numbers, and a message committed but never acked comes back as the same row.

A :class:`Receiver` joins one room and records every Deliver; on each new server life it
rejoins with ``since_seq`` = the last seq it saw.

A :class:`Load` runs them on threads (the sync websockets client; no asyncio in this
process) for one server life at a time — ``start(server)``, wait for a moment, the server
dies or drains, ``join()``, ``start(next)`` … — and ``finish()`` stops new sends and waits
until every message is acked. :func:`audit` then holds the history, read over REST, against
every sender's ledger and every receiver's stream; :func:`store_snapshot` reads the
database file itself (read-only), e.g. between a kill and the restart.
"""

from __future__ import annotations

import heapq
import random
import sqlite3
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from chatcap.protocol import CODECS, Ack, Deliver, Envelope, Error, HistoryPage, Join, Joined, Send
from tests.server.conftest import scaled
from tests.server.support_chat import ChatClient, ServerProcess

# Codes after which the send was not stored and may be sent again (README "Error frames").
RETRYABLE = frozenset({"unavailable", "overloaded", "store_busy", "internal", "rate_limited"})
ABNORMAL_CLOSE = 1006  # the connection ended without a close frame (the server died)
FILLER = "abcdefghij é✓ж𝄞 "  # multi-byte UTF-8 too: both codecs carry it
RECV_QUEUE_FRAMES = 1 << 16  # see Client


class Client(ChatClient):
    """A :class:`ChatClient` whose receive buffer holds many more frames than the default 16.

    The sync client stops reading its socket while 16 frames wait unread. A thread that is
    then in ``send()`` on a connection the server is closing waits for the reading thread,
    which waits for it, until ``close_timeout`` (10 s; websockets issue #1555): the
    server's 1001 would never be read. Our threads read all they are sent and the loads
    are bounded, so the buffer stays small anyway.
    """

    def __init__(self, server: ServerProcess, user: str, codec: str) -> None:
        self.server, self.user, self.codec = server, user, CODECS[codec]
        self.token = server.token(user)
        self.ws = connect(
            server.ws_url,
            subprotocols=[self.codec.subprotocol],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {self.token}"},
            open_timeout=10 * server.factor,
            max_queue=RECV_QUEUE_FRAMES,
        ).__enter__()


def cid_of(sender: str, n: int) -> str:
    return f"{sender}-{n}"


def parse_body(body: str) -> tuple[str, int]:
    """``(sender, n)`` from a body written by :meth:`Sender.body`."""
    head = body.split(" ", 1)[0]
    sender, _, n = head.rpartition("#")
    return sender, int(n)


@dataclass(frozen=True)
class Answer:
    """One answer to one send, as the sender saw it."""

    sender: str
    n: int
    outcome: str  # "ack" or an error code
    latency_s: float  # from writing the Send to reading its answer
    at_s: float  # time.monotonic() when read
    seq: int = 0
    retry_after_ms: int = 0


@dataclass
class Life:
    """How one connection (one server life) ended for one participant."""

    close_code: int | None = None  # None: we closed it ourselves
    unanswered: list[int] = field(default_factory=list)  # numbers in flight at the end


class Tally:
    """Answers from every sender, in the order read; waitable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.answers: list[Answer] = []
        self.acks = 0

    def note(self, answer: Answer) -> None:
        with self.cond:
            self.answers.append(answer)
            self.acks += answer.outcome == "ack"
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout=scaled(timeout_s))

    def since(self, index: int) -> list[Answer]:
        with self.cond:
            return self.answers[index:]


class Sender:
    """One user sending numbered messages to one room; see the module docstring."""

    def __init__(self, name: str, room: str, codec: str, window: int, rng: random.Random) -> None:
        self.name, self.room, self.codec, self.window = name, room, codec, window
        self.filler = "".join(rng.choice(FILLER) for _ in range(rng.randint(8, 160)))
        self.next_n = 1
        self.retry: list[int] = []  # heap: refused or unanswered numbers, sent first
        self.in_flight: dict[str, tuple[int, float]] = {}  # cid -> (n, perf_counter at send)
        self.acked: dict[int, int] = {}  # n -> seq
        self.refused: Counter[str] = Counter()
        self.lives: list[Life] = []
        self.anomalies: list[str] = []

    def body(self, n: int) -> str:
        return f"{self.name}#{n} {self.filler}"

    @property
    def sent(self) -> int:
        """Numbers handed out so far (each is sent at least once)."""
        return self.next_n - 1

    def run(
        self, server: ServerProcess, tally: Tally, stop_new: threading.Event, ready: threading.Event
    ) -> None:
        life = Life()
        self.lives.append(life)
        try:
            client = Client(server, self.name, self.codec)
        except Exception as exc:  # the server was alive: connecting must work
            self.anomalies.append(f"connect failed: {exc!r}")
            ready.set()
            return
        with client:
            try:
                client.send(Join(room=self.room))
                while not isinstance(self._read(client, tally), Joined):
                    pass
                ready.set()
                self._pump(client, tally, stop_new)
            except ConnectionClosed:
                life.close_code = self._leftovers(client, tally)
            except TimeoutError:
                self.anomalies.append(f"no answer within the deadline, {len(self.in_flight)} out")
            except Exception as exc:  # never let a thread die silently
                self.anomalies.append(f"failed: {exc!r}")
            finally:
                ready.set()
        life.unanswered = sorted(n for n, _ in self.in_flight.values())
        for n in life.unanswered:
            heapq.heappush(self.retry, n)
        self.in_flight.clear()

    def _pump(self, client: ChatClient, tally: Tally, stop_new: threading.Event) -> None:
        """Keep ``window`` sends out; stop once told to and everything is acked."""
        while True:
            while len(self.in_flight) < self.window and (self.retry or not stop_new.is_set()):
                self._send_one(client)
            if not self.in_flight:
                return  # stop_new is set and nothing is left to (re)send
            self._read(client, tally)

    def _send_one(self, client: ChatClient) -> None:
        if self.retry:
            n = heapq.heappop(self.retry)
        else:
            n, self.next_n = self.next_n, self.next_n + 1
        cid = cid_of(self.name, n)
        self.in_flight[cid] = (n, time.perf_counter())
        client.send(
            Send(
                client_msg_id=cid,
                room=self.room,
                body=self.body(n),
                sent_at_us=time.time_ns() // 1000,
            )
        )

    def _read(self, client: ChatClient, tally: Tally, timeout_s: float = 10.0) -> Envelope:
        msg = client.recv(timeout_s)
        self._handle(msg, tally)
        return msg

    def _leftovers(self, client: ChatClient, tally: Tally) -> int:
        """Read what arrived before the close (answers!); return the close code."""
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                frame = client.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd is not None else ABNORMAL_CLOSE
            except TimeoutError:
                self.anomalies.append("the connection neither closed nor answered")
                return ABNORMAL_CLOSE
            self._handle(client.codec.decode(frame), tally)

    def _handle(self, msg: Envelope, tally: Tally) -> None:
        if isinstance(msg, Ack):
            self._answered(msg.client_msg_id, "ack", tally, seq=msg.seq)
        elif isinstance(msg, Error):
            if msg.code not in RETRYABLE or not msg.client_msg_id:
                self.anomalies.append(f"unexpected error {msg.code}: {msg.message}")
                return
            self._answered(msg.client_msg_id, msg.code, tally, retry_after_ms=msg.retry_after_ms)
        elif not isinstance(msg, Deliver | Joined):
            self.anomalies.append(f"unexpected frame {msg!r}")

    def _answered(
        self, cid: str, outcome: str, tally: Tally, seq: int = 0, retry_after_ms: int = 0
    ) -> None:
        now = time.perf_counter()
        entry = self.in_flight.pop(cid, None)
        if entry is None:
            self.anomalies.append(f"{outcome} for {cid}, which is not in flight")
            return
        n, sent_at = entry
        if outcome == "ack":
            if self.acked.setdefault(n, seq) != seq:
                self.anomalies.append(f"{cid} acked as seq {seq} and as seq {self.acked[n]}")
        else:
            self.refused[outcome] += 1
            heapq.heappush(self.retry, n)
        tally.note(
            Answer(self.name, n, outcome, now - sent_at, time.monotonic(), seq, retry_after_ms)
        )


class Receiver:
    """One member of a room recording every Deliver; rejoins with ``since_seq``."""

    def __init__(self, name: str, room: str, codec: str) -> None:
        self.name, self.room, self.codec = name, room, codec
        self.seen: list[Deliver] = []
        self.joins: list[tuple[int, int]] = []  # (since_seq, Joined.last_seq)
        self.replayed = 0
        self.lives: list[Life] = []
        self.anomalies: list[str] = []
        self.cond = threading.Condition()
        self.client: ChatClient | None = None

    @property
    def last_seq(self) -> int:
        return self.seen[-1].seq if self.seen else 0

    def run(self, server: ServerProcess, ready: threading.Event, idle_limit_s: float) -> None:
        life = Life()
        self.lives.append(life)
        try:
            self.client = client = Client(server, self.name, self.codec)
        except Exception as exc:
            self.anomalies.append(f"connect failed: {exc!r}")
            ready.set()
            return
        since = self.last_seq
        joined_last = -1
        with client:
            try:
                client.send(Join(room=self.room, since_seq=since))
                while True:
                    if joined_last >= 0 and self.last_seq >= joined_last:
                        ready.set()  # joined and caught up: from here on deliveries are live
                    msg = client.recv(idle_limit_s)
                    if isinstance(msg, Joined):
                        joined_last = msg.last_seq
                        self.joins.append((since, msg.last_seq))
                    elif isinstance(msg, Deliver):
                        self.replayed += msg.seq <= joined_last
                        with self.cond:
                            self.seen.append(msg)
                            self.cond.notify_all()
                    else:
                        self.anomalies.append(f"unexpected frame {msg!r}")
            except ConnectionClosed as closed:
                life.close_code = closed.rcvd.code if closed.rcvd is not None else ABNORMAL_CLOSE
            except TimeoutError:
                self.anomalies.append(f"nothing received for {idle_limit_s} s")
            except Exception as exc:  # never let a thread die silently
                self.anomalies.append(f"failed: {exc!r}")
            finally:
                ready.set()

    def wait_through(self, seq: int, timeout_real_s: float) -> bool:
        """Wait until ``seq`` was seen (the timeout is in real, already scaled, seconds)."""
        with self.cond:
            return self.cond.wait_for(lambda: self.last_seq >= seq, timeout=timeout_real_s)

    def hang_up(self) -> None:
        """Close our side (from another thread: the sync client allows it)."""
        if self.client is not None:
            self.client.ws.close()


class Load:
    """Senders and receivers across server lives; see the module docstring."""

    def __init__(self, senders: list[Sender], receivers: list[Receiver]) -> None:
        self.senders, self.receivers = senders, receivers
        self.tally = Tally()
        self.stop_new = threading.Event()
        self._threads: list[threading.Thread] = []
        self.life_started_acks = 0

    @classmethod
    def build(
        cls, rng: random.Random, prefix: str, rooms: int, senders_per_room: int, window: int
    ) -> Load:
        """Per room: ``senders_per_room`` senders and two receivers; codecs alternate."""
        codecs = ("json", "protobuf")
        senders, receivers = [], []
        for r in range(rooms):
            room = f"{prefix}-room{r}"
            for s in range(senders_per_room):
                codec = codecs[(r + s) % 2]
                senders.append(Sender(f"{prefix}-s{r}x{s}", room, codec, window, rng))
            receivers += [Receiver(f"{prefix}-rcv{r}{c}", room, c) for c in codecs]
        return cls(senders, receivers)

    @property
    def rooms(self) -> list[str]:
        return sorted({s.room for s in self.senders})

    @property
    def participants(self) -> list[Sender | Receiver]:
        return [*self.senders, *self.receivers]

    @property
    def anomalies(self) -> list[str]:
        return [f"{p.name}: {a}" for p in self.participants for a in p.anomalies]

    def start(self, server: ServerProcess, timeout_s: float = 10.0) -> None:
        """Receivers (re)join first and catch up (replay), then senders join; returns then."""
        self.life_started_acks = self.tally.acks
        for group in (self.receivers, self.senders):
            readies = []
            for p in group:
                ready = threading.Event()
                if isinstance(p, Receiver):
                    args: tuple[object, ...] = (server, ready, 60.0)
                else:
                    args = (server, self.tally, self.stop_new, ready)
                thread = threading.Thread(target=p.run, args=args, name=p.name, daemon=True)
                thread.start()
                self._threads.append(thread)
                readies.append(ready)
            for ready in readies:
                assert ready.wait(scaled(timeout_s)), "a participant did not join in time"

    def wait_acks(self, n: int, timeout_s: float = 30.0) -> bool:
        """Wait until ``n`` sends were acked in this server life."""
        base = self.life_started_acks
        return self.tally.wait(lambda: self.tally.acks - base >= n, timeout_s)

    def join(self, timeout_s: float = 15.0) -> None:
        """Wait for every thread of this life to end (the server went away, or finish())."""
        deadline = time.monotonic() + scaled(timeout_s)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), f"{thread.name} still running"
        self._threads.clear()

    def finish(self, last_seqs: Callable[[], dict[str, int]], timeout_s: float = 30.0) -> None:
        """No new messages; wait until every sender's are acked and every receiver has the
        room's last seq (``last_seqs()`` is read once the senders are done); hang up."""
        self.stop_new.set()
        deadline = time.monotonic() + scaled(timeout_s)
        sender_threads = [t for t in self._threads if t.name in {s.name for s in self.senders}]
        for thread in sender_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), f"{thread.name} did not finish"
        last = last_seqs()
        for rcv in self.receivers:
            left = max(0.0, deadline - time.monotonic())
            assert rcv.wait_through(last[rcv.room], left), f"{rcv.name} stuck at {rcv.last_seq}"
            rcv.hang_up()
        self.join(timeout_s)


# -- reading what survived ------------------------------------------------------------


def read_history(server: ServerProcess, room: str, codec: str = "json") -> list[Deliver]:
    """Every message of ``room`` over REST, page by page, in either format."""
    headers = {"Authorization": f"Bearer {server.token('auditor')}"}
    if codec == "protobuf":
        headers["Accept"] = "application/x-protobuf"
    rows: list[Deliver] = []
    after = 0
    while True:
        status, _, body = server.get(f"/api/v1/rooms/{room}/messages?after_seq={after}", headers)
        assert status == 200, body
        page = CODECS[codec].decode(body)
        assert isinstance(page, HistoryPage)
        rows.extend(page.messages)
        if not page.has_more:
            return rows
        after = page.next_after_seq


@dataclass
class StoreSnapshot:
    integrity: str
    rows: dict[str, tuple[str, int]]  # client_msg_id -> (room, seq)


def store_snapshot(db: Path) -> StoreSnapshot:
    """``PRAGMA integrity_check`` and every stored row's id, from the file, read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        integrity = "\n".join(str(r[0]) for r in con.execute("PRAGMA integrity_check"))
        rows = {
            cid: (room, seq)
            for cid, room, seq in con.execute("SELECT client_msg_id, room, seq FROM messages")
        }
    finally:
        con.close()
    return StoreSnapshot(integrity, rows)


def acked_not_stored(load: Load, snap: StoreSnapshot) -> list[str]:
    """``sender#n`` of every acked message the store does not hold under its ack's seq."""
    return [
        f"{s.name}#{n}"
        for s in load.senders
        for n, seq in s.acked.items()
        if snap.rows.get(cid_of(s.name, n)) != (s.room, seq)
    ]


@dataclass
class Audit:
    """What the history says about the ledgers; every list names its offenders."""

    acked: int = 0
    stored: int = 0
    lost: list[str] = field(default_factory=list)  # acked, but not in history as acked
    duplicated: list[str] = field(default_factory=list)  # ids of messages with several rows
    gaps: list[str] = field(default_factory=list)  # a room's seqs are not 1..N
    foreign: list[str] = field(default_factory=list)  # rows no sender can account for
    not_prefix: list[str] = field(default_factory=list)  # a sender's rows are not 1..m
    out_of_order: list[str] = field(default_factory=list)  # a sender's rows not in n order
    streams: list[str] = field(default_factory=list)  # a receiver's stream != history
    unacked: list[str] = field(default_factory=list)  # sent but never acked (after finish)


def audit(load: Load, history: dict[str, list[Deliver]], *, ordered: bool = True) -> Audit:
    """Hold the history against every ledger and receiver stream.

    ``ordered``: each sender's rows must be its numbers 1..m in seq order (true whenever
    refused sends are only retried after a restart; not when they are retried at once).
    """
    out = Audit()
    by_sender: dict[str, list[tuple[int, int]]] = {s.name: [] for s in load.senders}
    copies: Counter[tuple[str, int]] = Counter()
    for room, rows in history.items():
        out.stored += len(rows)
        if [m.seq for m in rows] != list(range(1, len(rows) + 1)):
            out.gaps.append(f"{room}: seqs are not 1..{len(rows)}")
        for m in rows:
            sender, n = parse_body(m.body)
            copies[sender, n] += 1
            if (
                sender != m.sender
                or m.client_msg_id != cid_of(sender, n)
                or sender not in by_sender
            ):
                out.foreign.append(f"{room}#{m.seq}: {m.sender} {m.client_msg_id} {m.body[:40]!r}")
                continue
            by_sender[sender].append((m.seq, n))
    out.duplicated = [cid_of(s, n) for (s, n), c in copies.items() if c > 1]
    for s in load.senders:
        stored = {n: seq for seq, n in by_sender[s.name]}
        out.acked += len(s.acked)
        out.unacked += [f"{s.name}#{n}" for n in range(1, s.sent + 1) if n not in s.acked]
        out.lost += [
            f"{s.name}#{n} acked as seq {q}" for n, q in s.acked.items() if stored.get(n) != q
        ]
        if ordered:
            ns = [n for _, n in sorted(by_sender[s.name])]
            if sorted(ns) != list(range(1, len(ns) + 1)):
                out.not_prefix.append(f"{s.name}: {len(ns)} rows are not 1..{len(ns)}")
            elif ns != sorted(ns):
                out.out_of_order.append(f"{s.name}: rows not in send order")
    for rcv in load.receivers:
        want = [(m.seq, m.client_msg_id, m.body) for m in history.get(rcv.room, [])]
        got = [(m.seq, m.client_msg_id, m.body) for m in rcv.seen]
        if got != want:
            first = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None
            )
            out.streams.append(
                f"{rcv.name}: {len(got)} seen vs {len(want)} stored; first diff {first}"
            )
    return out


def median(values: Iterable[float]) -> float:
    data = list(values)
    assert data, "no samples"
    return statistics.median(data)


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set (VmHWM), MiB; 0.0 where /proc does not say."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def last_seqs(history: dict[str, list[Deliver]]) -> dict[str, int]:
    return {room: rows[-1].seq if rows else 0 for room, rows in history.items()}
