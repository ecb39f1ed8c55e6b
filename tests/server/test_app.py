"""The reference server as a black box: a real process, real websockets clients.

Each test starts its own server on a free port with a fresh store (see conftest).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from chatcap.protocol import CODECS, Ack, Deliver, Error, HistoryPage, Join, Joined, chat_pb2
from tests.server.support_chat import ChatClient, ServerProcess

Start = Callable[..., ServerProcess]
BOTH = ["json", "protobuf"]


@pytest.mark.parametrize("codec", BOTH)
def test_send_is_acked_after_commit_and_delivered_to_another_member(
    start_server: Start, codec: str, tmp_path: Path
) -> None:
    server = start_server(db=tmp_path / "one.db")
    other = "protobuf" if codec == "json" else "json"
    with server.client("ann", codec) as ann, server.client("bob", other) as bob:
        assert ann.join("lobby").last_seq == 0
        bob.join("lobby")
        cid = ann.send_text("lobby", "héllo 你好 👋")
        ack = ann.recv_kind(Ack)
        assert (ack.client_msg_id, ack.room, ack.seq) == (cid, "lobby", 1)
        got = bob.recv_kind(Deliver)
        assert (got.seq, got.sender, got.body, got.client_msg_id) == (
            1,
            "ann",
            "héllo 你好 👋",
            cid,
        )
        assert got.ts_us == ack.ts_us
        # the ack came after the commit: the row is in the store file already
        with sqlite3.connect(tmp_path / "one.db") as con:
            rows = con.execute("SELECT seq, sender, client_msg_id FROM messages").fetchall()
        assert rows == [(1, "ann", cid)]
    assert server.metric("chatcap_frames_received_total") == 3  # 2 joins, 1 send


@pytest.mark.parametrize("codec", BOTH)
def test_history_over_rest_in_both_formats(start_server: Start, codec: str) -> None:
    server = start_server()
    with server.client("ann", codec) as ann:
        ann.join("r1")
        for i in range(5):
            ann.send_text("r1", f"m{i}")
            ann.recv_kind(Ack)
    auth = {"Authorization": f"Bearer {server.token('reader')}"}
    status, headers, body = server.get("/api/v1/rooms/r1/messages?after_seq=1&limit=3", auth)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    page = json.loads(body)
    assert [m["seq"] for m in page["messages"]] == [2, 3, 4]
    assert page["has_more"] is True and page["next_after_seq"] == 4
    status, headers, body = server.get(
        "/api/v1/rooms/r1/messages?after_seq=3", {**auth, "Accept": "application/x-protobuf"}
    )
    # one shape on both channels: the Envelope (its `history` case), named in the type
    assert status == 200
    assert headers["Content-Type"] == "application/x-protobuf; proto=chat.v1.Envelope"
    assert chat_pb2.Envelope.FromString(body).WhichOneof("kind") == "history"
    pb = CODECS["protobuf"].decode(body)
    assert isinstance(pb, HistoryPage)
    assert [m.body for m in pb.messages] == ["m3", "m4"] and pb.has_more is False


def test_history_checks_auth_and_bounds(start_server: Start) -> None:
    server = start_server()
    assert server.get("/api/v1/rooms/r1/messages")[0] == 401
    auth = {"Authorization": f"Bearer {server.token('x')}"}
    for query in ("limit=0", "limit=100000", "after_seq=-1", "after_seq=abc"):
        status, _, body = server.get(f"/api/v1/rooms/r1/messages?{query}", auth)
        assert status == 400, query
        assert json.loads(body)["error"] == "bad_request"


def test_a_retried_send_gets_the_same_ack_and_no_second_message(start_server: Start) -> None:
    server = start_server()
    with server.client("ann") as ann, server.client("bob") as bob:
        ann.join("r")
        bob.join("r")
        ann.send_text("r", "once", client_msg_id="c-1")
        first = ann.recv_kind(Ack)
        ann.send_text("r", "once", client_msg_id="c-1")  # the retry
        second = ann.recv_kind(Ack)
        assert (first.seq, first.ts_us) == (second.seq, second.ts_us)
        ann.send_text("r", "next", client_msg_id="c-2")
        assert ann.recv_kind(Ack).seq == first.seq + 1
        delivered = [bob.recv_kind(Deliver).client_msg_id for _ in range(2)]
        assert delivered == ["c-1", "c-2"]
    assert server.metric("chatcap_dedup_hits_total") == 1


def test_reconnect_with_since_seq_gets_exactly_the_missed_messages_in_order(
    start_server: Start,
) -> None:
    server = start_server()
    with server.client("ann") as ann:
        ann.join("r")
        with server.client("bob", "protobuf") as bob:
            bob.join("r")
            ann.send_text("r", "seen")
            seen = bob.recv_kind(Deliver).seq
        for i in range(7):  # bob is away
            ann.send_text("r", f"missed {i}")
            ann.recv_kind(Ack)
        with server.client("bob", "protobuf") as bob:
            joined = bob.join("r", since_seq=seen)
            assert joined.last_seq == seen + 7
            replay = [bob.recv_kind(Deliver) for _ in range(7)]
            assert [m.seq for m in replay] == list(range(seen + 1, seen + 8))
            assert [m.body for m in replay] == [f"missed {i}" for i in range(7)]
            ann.send_text("r", "live")
            live = bob.recv_kind(Deliver)
            assert (live.seq, live.body) == (seen + 8, "live")


def test_rate_limit_answers_with_retry_after(start_server: Start) -> None:
    server = start_server({"server.rate_limit.rate_per_s": 1.0, "server.rate_limit.burst": 2})
    with server.client("ann") as ann:
        ann.join("r")
        for _ in range(3):
            ann.send_text("r", "x")
        frames = [ann.reply() for _ in range(3)]
        errors = [f for f in frames if isinstance(f, Error)]
        assert len([f for f in frames if isinstance(f, Ack)]) == 2
        (err,) = errors
        assert err.code == "rate_limited"
        assert 1 <= err.retry_after_ms <= 1000
    assert server.metric("chatcap_rate_limited_total") == 1


def test_sending_to_a_room_not_joined_is_not_member(start_server: Start) -> None:
    server = start_server()
    with server.client("ann") as ann:
        ann.send_text("elsewhere", "x")
        err = ann.recv_kind(Error)
        assert err.code == "not_member"


def test_store_faults_trip_the_breaker_fail_fast_and_recover(start_server: Start) -> None:
    server = start_server(
        {
            "server.rate_limit.algorithm": "none",
            "server.store.batch_max": 1,
            "server.breaker.window_size": 10,
            "server.breaker.minimum_calls": 4,
            "server.breaker.open_duration_s": 0.5,
            "server.breaker.half_open_calls": 2,
        }
    )
    with server.client("ann") as ann:
        ann.join("r")
        server.admin("store_error_rate=1")
        codes = []
        for i in range(12):
            ann.send_text("r", f"doomed {i}")
            codes.append(ann.recv_kind(Error).code)
        assert codes[:4] == ["internal"] * 4  # the calls that fill the window
        assert set(codes[4:]) == {"unavailable"}  # open: rejected without touching the store
        assert server.metric("chatcap_breaker_state") == 1
        server.admin("clear=1")
        # after the open duration a half-open trial goes through and closes the breaker;
        # the client just keeps trying (no sleep): each try is answered at once
        acked = None
        deadline = time.monotonic() + 10 * server.factor
        while acked is None and time.monotonic() < deadline:
            ann.send_text("r", "hello again")
            msg = ann.reply()
            if isinstance(msg, Ack):
                acked = msg
            else:
                assert isinstance(msg, Error) and msg.code == "unavailable"
                assert msg.retry_after_ms > 0
        assert acked is not None
        ann.send_text("r", "and again")
        assert isinstance(ann.recv_kind(Ack), Ack)
    assert server.metric("chatcap_breaker_state") in (0, 2)


def test_pool_acquire_timeout_answers_store_busy(start_server: Start) -> None:
    server = start_server(
        {
            "server.rate_limit.algorithm": "none",
            "server.breaker.enabled": False,
            "server.pool.size": 1,
            "server.pool.acquire_timeout_ms": 50.0,
            "server.store.batch_max": 1,
            "server.store.max_in_flight_batches": 2,  # one batch more than connections
            "server.faults.store_latency_ms": 400.0,
        }
    )
    with server.client("ann") as ann:
        ann.join("r")
        for i in range(3):
            ann.send_text("r", f"m{i}")
        frames = [ann.reply(timeout_s=10) for _ in range(3)]
    codes = sorted(f.code for f in frames if isinstance(f, Error))
    assert "store_busy" in codes
    assert any(isinstance(f, Ack) for f in frames)
    assert server.metric("chatcap_pool_acquire_timeouts_total") >= 1


def test_a_slow_consumer_is_dropped_while_others_continue(start_server: Start) -> None:
    server = start_server(
        {
            "server.rate_limit.algorithm": "none",
            "server.outbound_buffer_max_bytes": 65536,
            "server.max_message_bytes": 65536,
        }
    )
    body = "x" * 60_000
    with server.client("ann") as ann, server.client("bob") as bob:
        ann.join("r")
        bob.join("r")
        slow = ChatClient(server, "slow")
        slow.join("r")
        # the slow client stops reading; loopback buffers are a few MiB, so ~200 frames
        # of 60 kB overflow them and then the server-side limit
        for i in range(200):
            ann.send_text("r", body, client_msg_id=f"big-{i}")
            ann.recv_kind(Ack, timeout_s=10)
            assert bob.recv_kind(Deliver, timeout_s=10).client_msg_id == f"big-{i}"
            if server.metric("chatcap_slow_consumers_dropped_total") >= 1:
                break
        assert server.metric("chatcap_slow_consumers_dropped_total") == 1
        ann.send_text("r", "still here", client_msg_id="after")
        assert bob.recv_kind(Deliver).client_msg_id == "after"
        slow.ws.close_timeout = 0.1
    assert "event=client.slow_consumer" in server.log()


def test_bad_frames_get_error_frames_and_the_session_goes_on(start_server: Start) -> None:
    server = start_server()
    with server.client("ann") as ann:
        ann.join("r")
        for frame in [
            '{"type": "send"',
            '{"type": "nope"}',
            "[]",
            '{"type":"join","room":""}',
            json.dumps({"type": "join", "room": "x" * 200}),
        ]:
            ann.ws.send(frame)
            assert ann.recv_kind(Error).code == "bad_frame"
        ann.ws.send(b'{"type":"join","room":"r"}')  # binary frame on the JSON subprotocol
        err = ann.recv_kind(Error)
        assert err.code == "bad_frame" and "binary frame" in err.message
        ann.send(Ack(client_msg_id="c", room="r", seq=1, ts_us=1))
        assert ann.recv_kind(Error).code == "bad_request"
        ann.send_text("r", "fine")
        assert ann.recv_kind(Ack).seq == 1
    assert "Traceback" not in server.log()


def test_an_oversized_frame_closes_with_1009(start_server: Start) -> None:
    server = start_server({"server.max_message_bytes": 4096})
    with server.client("ann") as ann:
        ann.ws.send("x" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            ann.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_handshake_needs_a_valid_token_and_a_known_subprotocol(start_server: Start) -> None:
    server = start_server()
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url, subprotocols=["chat.v1.json"])  # type: ignore[list-item]
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url + "?token=garbage", subprotocols=["chat.v1.json"])  # type: ignore[list-item]
    assert info.value.response.status_code == 401
    token = server.token("ann")
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.ws_url}?token={token}")
    assert info.value.response.status_code == 400
    assert b"subprotocol" in info.value.response.body
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.ws_url}?token={token}", subprotocols=["chat.v2"])  # type: ignore[list-item]
    assert info.value.response.status_code == 400
    with connect(f"{server.ws_url}?token={token}", subprotocols=["chat.v1.protobuf"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v1.protobuf"


def test_per_ip_connection_cap_answers_429(start_server: Start) -> None:
    server = start_server({"server.max_connections_per_ip": 2})
    a, b = server.client("a"), server.client("b")
    try:
        a.join("r")
        b.join("r")
        with pytest.raises(InvalidStatus) as info:
            server.client("c")
        assert info.value.response.status_code == 429
    finally:
        a.ws.close()
        b.ws.close()


def test_health_ready_metrics_and_unknown_routes(start_server: Start) -> None:
    server = start_server()
    assert server.get("/healthz")[0] == 200
    assert server.get("/readyz")[0] == 200
    status, _, body = server.get("/metrics")
    assert status == 200 and b"chatcap_ack_latency_seconds_bucket" in body
    assert server.get("/api/v2/anything")[0] == 404
    assert server.get("/api/v1/admin/faults?store_error_rate=1")[0] == 403
    status, _, body = server.get("/api/v1/token")
    assert status == 401


def test_sigterm_drains_closes_with_1001_and_keeps_every_acked_message(
    start_server: Start, tmp_path: Path
) -> None:
    db = tmp_path / "drain.db"
    server = start_server({"server.rate_limit.algorithm": "none"}, db=db)
    acked: set[int] = set()
    with server.client("ann", "protobuf") as ann, server.client("bob") as bob:
        ann.join("r")
        bob.join("r")
        for i in range(50):
            ann.send_text("r", f"m{i}")
        server.proc.send_signal(signal.SIGTERM)
        codes = set()
        for ws_client in (ann, bob):
            try:
                while True:
                    msg = ws_client.recv(timeout_s=10)
                    if isinstance(msg, Ack):
                        acked.add(msg.seq)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                codes.add(closed.rcvd.code)
    assert codes == {1001}
    assert server.wait_exit(15) == 0
    assert "event=server.stopped" in server.log()
    with sqlite3.connect(db) as con:
        stored = {row[0] for row in con.execute("SELECT seq FROM messages WHERE room='r'")}
    assert acked <= stored and len(acked) > 0


def test_kill_9_then_restart_keeps_every_acked_message(start_server: Start, tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    server = start_server({"server.rate_limit.algorithm": "none"}, db=db)
    acked = []
    with server.client("ann") as ann:
        ann.join("r")
        for i in range(100):
            ann.send_text("r", f"m{i}", client_msg_id=f"k{i}")
        try:
            while len(acked) < 60:  # count the Acks (a sender gets no Deliver of its own)
                msg = ann.recv(timeout_s=10)
                if isinstance(msg, Ack):
                    acked.append(msg.seq)
        finally:
            server.proc.kill()
            server.proc.wait()
    assert len(acked) == 60
    again = start_server({"server.rate_limit.algorithm": "none"}, db=db)
    auth = {"Authorization": f"Bearer {again.token('reader')}"}
    status, _, body = again.get("/api/v1/rooms/r/messages?limit=500", auth)
    assert status == 200
    stored = {m["seq"]: m for m in json.loads(body)["messages"]}
    assert set(acked) <= set(stored)
    assert [stored[s]["client_msg_id"] for s in sorted(stored)] == [
        f"k{i}" for i in range(len(stored))
    ]
    with again.client("ann") as ann:  # a retry after the restart is deduplicated by the store
        ann.join("r")
        ann.send_text("r", "m0", client_msg_id="k0")
        assert ann.recv_kind(Ack).seq == 1


def test_join_replies_joined_with_last_seq(start_server: Start) -> None:
    server = start_server()
    with server.client("ann") as ann:
        ann.join("r")
        ann.send_text("r", "a")
        ann.recv_kind(Ack)
        ann.send(Join(room="r"))
        assert ann.recv_kind(Joined).last_seq == 1


def test_server_reports_a_bad_scenario_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server.pool]\nsize = 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--scenario", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {bad}: server.pool.size = 0")


def test_a_foreign_origin_is_refused_with_403(start_server: Start) -> None:
    server = start_server({"server.origins": ["https://chat.example"]})
    token = server.token("ann")
    url = f"{server.ws_url}?token={token}"
    with pytest.raises(InvalidStatus) as info:
        connect(url, subprotocols=["chat.v1.json"], origin="https://evil.example")  # type: ignore[list-item,arg-type]
    assert info.value.response.status_code == 403
    with connect(url, subprotocols=["chat.v1.json"], origin="https://chat.example") as ws:  # type: ignore[list-item,arg-type]
        assert ws.subprotocol == "chat.v1.json"


def test_handshake_rate_per_ip_answers_429_with_retry_after(start_server: Start) -> None:
    server = start_server({"server.handshake_rate_per_s": 0.5, "server.handshake_burst": 2})
    token = server.token("ann")
    url = f"{server.ws_url}?token={token}"
    for _ in range(2):
        with connect(url, subprotocols=["chat.v1.json"]):  # type: ignore[list-item]
            pass
    with pytest.raises(InvalidStatus) as info:
        connect(url, subprotocols=["chat.v1.json"])  # type: ignore[list-item]
    assert info.value.response.status_code == 429
    assert int(info.value.response.headers["Retry-After"]) >= 1


def test_invalid_utf8_in_a_text_frame_closes_with_1007(start_server: Start) -> None:
    server = start_server()
    with server.client("ann") as ann:
        ann.ws.send(b'{"type":"join","room":"\xff"}', text=True)
        with pytest.raises(ConnectionClosed) as info:
            ann.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1007
    with server.client("bob") as bob:  # the server goes on
        assert bob.join("r").last_seq == 0


def test_a_body_over_the_limit_gets_too_large(start_server: Start) -> None:
    server = start_server({"server.max_message_bytes": 4096})
    with server.client("ann") as ann:
        ann.join("r")
        ann.send_text("r", "é" * 1900)  # 3,800 bytes of body: over 4096 − 512
        assert ann.reply().code == "too_large"
        ann.send_text("r", "é" * 1000)
        assert isinstance(ann.reply(), Ack)


def test_tokens_and_passwords_never_reach_the_log(start_server: Start) -> None:
    server = start_server()
    token = server.token("ann", password="hunter2-secret")
    with server.client("ann", token=token) as ann:
        ann.join("r")
    server.get(f"/api/v1/rooms/r/messages?token={token}")
    log = server.log()
    assert "event=http.request" in log and "event=ws.open" in log
    assert token not in log
    assert "hunter2-secret" not in log
    assert token.split(".")[2] not in log


def test_users_mode_checks_passwords_made_by_adduser(start_server: Start, tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    add = subprocess.run(
        [sys.executable, "-m", "server", "adduser", "--users", str(users), "ann"],
        input="correct horse\n",
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert add.returncode == 0, add.stderr
    server = start_server({"server.auth": "users"}, users=users)
    assert server.token("ann", "correct horse")
    basic = __import__("base64").b64encode(b"ann:wrong").decode()
    status, headers, _ = server.get("/api/v1/token", {"Authorization": f"Basic {basic}"})
    assert status == 401 and "Basic" in headers["WWW-Authenticate"]


def test_admin_faults_validate_their_values(start_server: Start) -> None:
    server = start_server()
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    status, _, body = server.get("/api/v1/admin/faults?store_error_rate=2", auth)
    assert status == 400 and b"store_error_rate" in body
    snapshot = server.admin("store_latency_ms=5")
    assert "store_latency_ms" in json.dumps(snapshot)


def test_the_sending_connection_gets_the_ack_and_other_connections_the_deliver(
    start_server: Start,
) -> None:
    server = start_server()
    with server.client("ann") as phone, server.client("ann", "protobuf") as laptop:
        phone.join("r")
        laptop.join("r")
        cid = phone.send_text("r", "from my phone")
        assert phone.recv_kind(Ack).client_msg_id == cid
        assert laptop.recv_kind(Deliver).client_msg_id == cid
        phone.send_text("r", "again")
        frames = [phone.recv(), laptop.recv()]
        assert isinstance(frames[0], Ack)  # not a Deliver of its own message first
        assert isinstance(frames[1], Deliver)
