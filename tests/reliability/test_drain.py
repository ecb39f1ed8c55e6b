"""Graceful drain: SIGTERM under load, then a restart on the same file.

The same numbered senders and receivers as the crash case (``support_senders.py``), plus a few
connections that joined nothing. At a moment drawn from the seed (a number of acks in this
server life) the server gets SIGTERM. It must exit with status 0 within
``server.drain_timeout_s`` plus a margin, and every connection — sender, receiver or idle —
must be closed with 1001. What the drain leaves behind, read from the file (read-only):

* every acked message is stored under the seq of its ack (``lost`` = 0);
* nothing is ambiguous: a send that got no answer before the 1001 is not stored
  (the queue is flushed and answered before connections close);
* every receiver was delivered everything stored in its room before its 1001.

The next life resends what was refused or unanswered (same client_msg_id) and goes on;
after the last drain the restarted server must serve the full history, and the audit of
``test_crash`` applies unchanged.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from chatcap.protocol import Ack
from tests.reliability.conftest import Record, Scale
from tests.reliability.support_senders import (
    Load,
    acked_not_stored,
    audit,
    cid_of,
    last_seqs,
    peak_rss_mib,
    read_history,
    store_snapshot,
)
from tests.server.conftest import scaled
from tests.server.support_chat import ChatClient, ServerProcess

DRAIN_TIMEOUT_S = 5.0
EXIT_MARGIN_S = 3.0  # interpreter exit after "server.stopped", on a busy machine
OVERRIDES = {"server.rate_limit.algorithm": "none", "server.drain_timeout_s": DRAIN_TIMEOUT_S}
DRAIN_AFTER_ACKS = (1, 600)  # SIGTERM after this many acks in a life, drawn per drain
ROOMS, SENDERS_PER_ROOM, WINDOW, IDLE = 3, 2, 16, 4
GOING_AWAY = 1001


def close_code(client: ChatClient, timeout_s: float = 10.0) -> int | None:
    """Read an idle connection until it closes; the code the server sent (None: none)."""
    try:
        while True:
            client.recv(timeout_s)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


def test_sigterm_under_load_drains_with_1001_and_loses_nothing(
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
    scale: Scale,
    rng: random.Random,
    record: Record,
) -> None:
    db = tmp_path / "drain.db"
    load = Load.build(rng, "drain", ROOMS, SENDERS_PER_ROOM, WINDOW)
    drain_s: list[float] = []
    rss_mib = 0.0
    refused = 0  # messages answered `unavailable` while the server drained (retried later)
    for drain in range(scale.drains):
        server = start_server(OVERRIDES, db=db)
        load.start(server)
        idle = [server.client(f"drain-idle{i}", ("json", "protobuf")[i % 2]) for i in range(IDLE)]
        moment = rng.randint(*DRAIN_AFTER_ACKS)
        answers_before = len(load.tally.answers)
        assert load.wait_acks(moment), f"drain {drain}: {moment} acks never came"
        rss_mib = max(rss_mib, peak_rss_mib(server.proc.pid))
        sent_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        try:
            status = server.proc.wait(timeout=scaled(DRAIN_TIMEOUT_S + EXIT_MARGIN_S))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"drain {drain}: still running after the deadline") from None
        drain_s.append(time.monotonic() - sent_at)
        load.join()
        idle_codes = [close_code(c) for c in idle]
        for c in idle:
            c.ws.close()
        assert status == 0
        assert "event=server.stopped" in server.log()
        assert load.anomalies == []
        closes = {p.name: p.lives[-1].close_code for p in load.participants}
        assert set(closes.values()) | set(idle_codes) == {GOING_AWAY}, (closes, idle_codes)
        refused += len(
            {(a.sender, a.n) for a in load.tally.since(answers_before) if a.outcome != "ack"}
        )

        snap = store_snapshot(db)
        assert snap.integrity == "ok"
        lost = acked_not_stored(load, snap)
        assert lost == [], f"drain {drain} (moment {moment} acks): acked but not stored"
        ambiguous = [
            cid
            for s in load.senders
            for n in s.lives[-1].unanswered
            if (cid := cid_of(s.name, n)) in snap.rows
        ]
        assert ambiguous == [], "stored, but the sender never heard back before the 1001"
        for rcv in load.receivers:
            stored = sorted(seq for room, seq in snap.rows.values() if room == rcv.room)
            assert [m.seq for m in rcv.seen] == stored, f"{rcv.name} missed deliveries"

    server = start_server(OVERRIDES, db=db)
    load.start(server)
    load.finish(lambda: last_seqs({r: read_history(server, r) for r in load.rooms}))
    assert load.anomalies == []
    codecs = {room: rng.choice(("json", "protobuf")) for room in load.rooms}
    history = {room: read_history(server, room, codecs[room]) for room in load.rooms}
    result = audit(load, history)
    record("drains", scale.drains)
    record("acked", result.acked)
    record("lost", len(result.lost))
    record("duplicated", len(result.duplicated))
    record("refused_while_draining", refused)
    record("drain_s_max", round(max(drain_s), 3))
    record("drain_server_rss_mib", round(rss_mib, 1))

    assert result.lost == []
    assert (result.duplicated, result.gaps, result.foreign, result.unacked) == ([], [], [], [])
    assert (result.not_prefix, result.out_of_order, result.streams) == ([], [], [])
    assert result.stored == sum(s.sent for s in load.senders)
    assert all(r.replayed == 0 for r in load.receivers), "a drain left a receiver behind"


def test_a_client_that_stops_reading_cannot_hold_the_exit_past_the_drain_deadline(
    start_server: Callable[..., ServerProcess],
) -> None:
    """Regression: the server logged ``server.stopped`` at the deadline, but the process
    lived on until websockets' close_timeout (10 s) because a peer that had stopped
    reading never answered its close. Past the deadline such connections are aborted."""
    deadline_s = 1.0
    server = start_server(
        {"server.rate_limit.algorithm": "none", "server.drain_timeout_s": deadline_s}
    )
    stuck = server.client("stuck")  # joins, then never reads again
    stuck.join("r")
    with server.client("talker", "protobuf") as talker:
        talker.join("r")
        for i in range(3 * 16):  # over the sync client's 16-frame buffer: it stops reading
            talker.send_text("r", f"m{i}")
        acks = [talker.recv_kind(Ack) for _ in range(3 * 16)]
        assert len(acks) == 3 * 16
        sent_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        status = server.proc.wait(timeout=scaled(deadline_s + EXIT_MARGIN_S + 10))
        took_s = time.monotonic() - sent_at
        assert close_code(talker) == GOING_AWAY  # a reading client still gets its 1001
    close_code(stuck)  # read what it left unread, so that its threads end
    assert status == 0
    assert "event=server.drain_timeout aborted=1" in server.log()
    assert took_s < scaled(deadline_s + EXIT_MARGIN_S), f"exit {took_s:.1f} s after SIGTERM"
