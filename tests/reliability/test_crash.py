"""Crash durability: ``kill -9`` under load, restart on the same file, count what survived.

Numbered senders (half of them JSON, half Protobuf; see ``support_senders.py``) keep several sends
in flight each while two receivers per room record their deliveries. At a moment drawn
from the seed — after a random number of acks in this server life — the server gets
SIGKILL. Before it restarts on the same ``--db``, the file is opened read-only:
``PRAGMA integrity_check`` must say ok and every message acked so far must be there
under the seq of its ack. Then the next life: receivers rejoin with ``since_seq``,
senders first resend what was in flight at the kill (same client_msg_id), then go on.

After the last kill the load finishes (every message acked) and the history, read over
REST, must hold: every ack at its seq (``lost`` = 0), each room's seqs 1..N, each sender's
rows exactly its numbers 1..m in send order, and each receiver's stream — live plus
replays — equal to the room's history (so each replay was exactly what was missed).

Duplicates: a send in flight at a kill may have been committed without its ack reaching
the client; its retry must find that row, not make a second one. The in-memory dedup map
dies with the process, but the store's unique index on (sender, client_msg_id) is the
durable backstop, so the expected count is 0; any duplicate must at least be one of those
ambiguous sends.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from tests.reliability.conftest import Record, Scale
from tests.reliability.support_fast_sender import FastSender
from tests.reliability.support_senders import (
    ABNORMAL_CLOSE,
    Load,
    acked_not_stored,
    audit,
    cid_of,
    last_seqs,
    median,
    peak_rss_mib,
    read_history,
    store_snapshot,
)
from tests.server.support_chat import ServerProcess

OVERRIDES = {"server.rate_limit.algorithm": "none"}
KILL_AFTER_ACKS = (0, 400)  # a life is killed after this many acks, drawn per kill
ROOMS, SENDERS_PER_ROOM, WINDOW = 3, 2, 16


def test_kill_9_under_load_loses_no_acked_message(
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
    scale: Scale,
    rng: random.Random,
    record: Record,
) -> None:
    db = tmp_path / "crash.db"
    load = Load.build(rng, "crash", ROOMS, SENDERS_PER_ROOM, WINDOW)
    ambiguous: set[str] = set()  # client_msg_ids in flight at a kill
    committed_unacked = 0
    rss_mib = 0.0
    for kill in range(scale.kills):
        server = start_server(OVERRIDES, db=db)
        load.start(server)
        moment = rng.randint(*KILL_AFTER_ACKS)
        assert load.wait_acks(moment), f"life {kill}: {moment} acks never came"
        rss_mib = max(rss_mib, peak_rss_mib(server.proc.pid))
        server.proc.kill()
        server.proc.wait()
        load.join()
        assert load.anomalies == []
        closes = {p.name: p.lives[-1].close_code for p in load.participants}
        assert set(closes.values()) == {ABNORMAL_CLOSE}, closes

        snap = store_snapshot(db)
        assert snap.integrity == "ok", f"after kill {kill}: {snap.integrity}"
        lost = acked_not_stored(load, snap)
        assert lost == [], f"after kill {kill} (moment {moment} acks): acked but not stored"
        in_flight = {cid_of(s.name, n) for s in load.senders for n in s.lives[-1].unanswered}
        committed_unacked += len(in_flight & snap.rows.keys())
        ambiguous |= in_flight

    server = start_server(OVERRIDES, db=db)
    load.start(server)
    load.finish(lambda: last_seqs({r: read_history(server, r) for r in load.rooms}))
    assert load.anomalies == []
    codecs = {room: rng.choice(("json", "protobuf")) for room in load.rooms}
    history = {room: read_history(server, room, codecs[room]) for room in load.rooms}
    result = audit(load, history)
    record("acked", result.acked)
    record("lost", len(result.lost))
    record("duplicated", len(result.duplicated))
    record("kills", scale.kills)
    record("in_flight_at_kill", len(ambiguous))
    record("committed_unacked", committed_unacked)
    record("replayed", sum(r.replayed for r in load.receivers))
    record("crash_server_rss_mib", round(rss_mib, 1))

    assert result.lost == []
    unexplained = [
        d for d in result.duplicated if d.split(" ")[0].replace("#", "-") not in ambiguous
    ]
    assert unexplained == [], "a duplicate that no lost ack explains"
    assert result.duplicated == [], "retries after a restart made second rows"
    assert (result.gaps, result.foreign, result.unacked) == ([], [], [])
    assert (result.not_prefix, result.out_of_order) == ([], [])
    assert result.streams == [], "a receiver's live + replayed stream differs from history"
    assert result.stored == sum(s.sent for s in load.senders)
    for rcv in load.receivers:  # each rejoin asked for exactly what followed its last seq
        assert len(rcv.joins) == scale.kills + 1
        assert all(last >= since for since, last in rcv.joins), rcv.joins


# -- kill -9 near capacity ---------------------------------------------------------------

FAST_KILL_AFTER_ACKS = (200, 3000)  # load-phase acks before the kill, drawn per life


def test_kill_9_at_80_percent_of_capacity_loses_no_acked_message(
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
    scale: Scale,
    rng: random.Random,
    record: Record,
) -> None:
    """One sender in its own process (``support_fast_sender``) probes the server's
    capacity closed loop, then sends open loop at 80 % of it; after a drawn number of
    acks the server gets SIGKILL. Every ack the client was told of must be in the file,
    under its seq, and the file must pass integrity_check — life after life on one file
    (the same number of kills as the case above)."""
    db = tmp_path / "fast.db"
    acked_total = 0
    per_kill, shares, capacities = [], [], []
    for life in range(scale.kills):
        server = start_server(OVERRIDES, db=db)
        codec = ("json", "protobuf")[life % 2]
        moment = rng.randint(*FAST_KILL_AFTER_ACKS)
        run = FastSender.start(server, f"fast{life}", codec)
        try:
            assert run.wait_load_acks(moment), f"life {life}: {moment} load acks never came"
            server.proc.kill()
            server.proc.wait()
            run.finish()
        finally:
            run.stop()
        assert run.done is not None, f"life {life}: the sender did not say done"
        snap = store_snapshot(db)
        assert snap.integrity == "ok", f"after kill {life}: {snap.integrity}"
        lost = [cid for cid, seq in run.acked if snap.rows.get(cid) != (run.room, seq)]
        assert lost == [], f"after kill {life}: acked but not stored: {lost[:10]}"
        acked_total += len(run.acked)
        per_kill.append(len(run.acked))
        shares.append(run.done["achieved_per_s"] / run.capacity_per_s)
        capacities.append(run.capacity_per_s)
    record("acked", acked_total)
    record("lost", 0)
    record("kills", scale.kills)
    record("fast_acked_per_kill_min", min(per_kill))
    record("fast_acked_per_kill_median", median(per_kill))
    record("fast_capacity_per_s_median", round(median(capacities)))
    record("fast_load_share_of_capacity_median", round(median(shares), 3))
