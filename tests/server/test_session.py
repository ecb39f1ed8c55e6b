"""The session's Send path in-process: a real Session, Hub, Deduper and limiter, a writer
whose futures the test settles, and a hub whose writes are recorded in order."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, cast

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.protocol import Protocol, Side, State

from chatcap import wiring
from chatcap.protocol import CODECS, Ack, Deliver, Error, Join, Leave, Left, Send
from chatcap.protocol import chat_pb2 as pb
from chatcap.scenario import FaultsConfig, ServerConfig
from server.app import close_codes
from server.dedup import Deduper
from server.faults import FaultInjector
from server.hub import Client, Hub
from server.metrics import Metrics
from server.session import SendPath, Session
from server.store import PendingSend, StoredMessage
from tests.server.support_chat import ServerProcess
from tests.server.support_writepath import FakeClock, run

JSON = CODECS["json"]


@dataclass
class Wire:
    """Every frame the hub wrote, in order: ``(user, decoded frame)``."""

    frames: list[tuple[str, Any]] = field(default_factory=list)
    users: dict[int, str] = field(default_factory=dict)

    def broadcast(self, conns: Iterable[Any], payload: bytes | str, text: bool = False) -> None:
        for conn in conns:
            self.frames.append((self.users[id(conn)], JSON.decode(payload)))


class HeldWriter:
    """A writer whose futures stay pending until the test settles them."""

    def __init__(self) -> None:
        self.pending: list[tuple[PendingSend, asyncio.Future[StoredMessage]]] = []

    def submit(self, send: PendingSend) -> asyncio.Future[StoredMessage]:
        fut: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self.pending.append((send, fut))
        return fut


def connection() -> Any:
    return SimpleNamespace(
        protocol=SimpleNamespace(state=State.OPEN),
        transport=SimpleNamespace(get_write_buffer_size=lambda: 0),
    )


def send_path(wire: Wire, writer: HeldWriter, clock: FakeClock) -> SendPath:
    config = ServerConfig()
    metrics = Metrics()
    return SendPath(
        config=config,
        hub=Hub(config.outbound_buffer_max_bytes, metrics, broadcast=wire.broadcast),
        writer=writer,
        limiter=wiring.keyed_limiter(config.rate_limit),
        deduper=Deduper(),
        metrics=metrics,
        faults=FaultInjector(FaultsConfig(), started_at=0.0, seed=1),
        reads=cast(Any, None),  # no Join in these tests
        going_away=asyncio.Event(),
        log=logging.getLogger("test_session"),
        clock=clock,
    )


def member(path: SendPath, wire: Wire, user: str, room: str) -> Client:
    client = Client(connection(), user, JSON, "127.0.0.1")
    wire.users[id(client.conn)] = user
    path.hub.add(client)
    path.hub.join(client, room)
    path.hub.caught_up(client, room, 0)
    return client


def stored(send: PendingSend, seq: int, *, duplicate: bool = False) -> StoredMessage:
    return StoredMessage(
        send.room, seq, send.sender, send.client_msg_id, send.body, 5, send.sent_at_us, duplicate
    )


def test_after_a_commit_every_deliver_is_written_before_the_senders_ack() -> None:
    async def main() -> list[tuple[str, type]]:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        member(path, wire, "bob", "r")
        member(path, wire, "carol", "r")
        session = Session(path, alice)
        session.handle(Send(room="r", client_msg_id="c1", body="hi", sent_at_us=1), clock())
        assert wire.frames == []  # nothing before the commit
        sent, fut = writer.pending[0]
        fut.set_result(stored(sent, 1))
        await asyncio.sleep(0)  # future callbacks run on the next loop turn
        assert path.room_last_seq == {"r": 1}
        return [(user, type(frame)) for user, frame in wire.frames]

    order = run(main())
    assert sorted(order[:2]) == [("bob", Deliver), ("carol", Deliver)]
    assert order[2:] == [("alice", Ack)]


def test_a_retry_joining_an_in_flight_send_is_answered_after_the_fan_out() -> None:
    async def main() -> list[tuple[str, type]]:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        member(path, wire, "bob", "r")
        session = Session(path, alice)
        for _ in range(2):  # the second is a retry while the first is in flight
            session.handle(Send(room="r", client_msg_id="c1", body="hi", sent_at_us=1), clock())
        assert len(writer.pending) == 1 and path.deduper.hits == 1
        sent, fut = writer.pending[0]
        fut.set_result(stored(sent, 7))
        await asyncio.sleep(0)
        return [(user, type(frame)) for user, frame in wire.frames]

    assert run(main()) == [("bob", Deliver), ("alice", Ack), ("alice", Ack)]


def test_a_store_duplicate_is_acked_without_a_second_deliver() -> None:
    async def main() -> list[tuple[str, Any]]:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        member(path, wire, "bob", "r")
        Session(path, alice).handle(Send(room="r", client_msg_id="c1", body="hi"), clock())
        sent, fut = writer.pending[0]
        fut.set_result(stored(sent, 3, duplicate=True))
        await asyncio.sleep(0)
        return wire.frames

    frames = run(main())
    assert [(user, type(frame)) for user, frame in frames] == [("alice", Ack)]
    assert frames[0][1].seq == 3


def test_ack_latency_is_measured_on_the_session_clock() -> None:
    async def main() -> float:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock(50.0)
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        Session(path, alice).handle(Send(room="r", client_msg_id="c1", body="hi"), clock())
        clock.advance(0.000_250)  # 250 µs: finer than uvloop's ms-resolution loop clock
        sent, fut = writer.pending[0]
        fut.set_result(stored(sent, 1))
        await asyncio.sleep(0)
        registry = path.metrics.registry
        total_s = registry.get_sample_value("chatcap_ack_latency_seconds_sum")
        assert registry.get_sample_value("chatcap_ack_latency_seconds_count") == 1
        assert total_s is not None
        return total_s

    assert abs(run(main()) - 0.000_250) < 1e-9


def test_the_ack_stands_for_the_senders_own_deliver_while_other_members_get_the_deliver() -> None:
    async def main() -> list[tuple[str, Any]]:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        member(path, wire, "bob", "r")
        Session(path, alice).handle(
            Send(room="r", client_msg_id="c1", body="hi", sent_at_us=7), clock()
        )
        sent, fut = writer.pending[0]
        fut.set_result(stored(sent, 1))
        await asyncio.sleep(0)
        return wire.frames

    frames = run(main())
    assert [(user, type(frame)) for user, frame in frames] == [("bob", Deliver), ("alice", Ack)]
    deliver, ack = frames[0][1], frames[1][1]
    assert (ack.client_msg_id, ack.room, ack.seq, ack.ts_us) == ("c1", "r", 1, deliver.ts_us)
    assert (deliver.client_msg_id, deliver.sender, deliver.body) == ("c1", "alice", "hi")


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_a_real_sender_gets_its_ack_and_never_its_own_deliver(
    start_server: Callable[..., ServerProcess], codec: str
) -> None:
    server = start_server()
    with (
        server.client("ann", codec) as ann,
        server.client("ann", codec) as ann_phone,
        server.client("bob", codec) as bob,
    ):
        for client in (ann, ann_phone, bob):
            client.join("lobby")
        cid = ann.send_text("lobby", "mine")
        ack = ann.recv()
        assert isinstance(ack, Ack) and (ack.client_msg_id, ack.seq) == (cid, 1)
        for other in (ann_phone, bob):  # the same user's other connection too
            got = other.recv()
            assert isinstance(got, Deliver) and (got.seq, got.client_msg_id) == (1, cid)
        # bob's message is the sentinel: had ann's own Deliver been sent, it would be
        # ann's next frame (it was written before her Ack)
        bob.send_text("lobby", "yours")
        assert isinstance(bob.recv(), Ack)
        nxt = ann.recv()
        assert isinstance(nxt, Deliver) and (nxt.seq, nxt.sender) == (2, "bob")


def test_a_send_to_a_room_this_connection_has_not_joined_is_not_member() -> None:
    async def main() -> tuple[list[tuple[str, Any]], int]:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        member(path, wire, "alice", "elsewhere")  # the same user on another connection
        Session(path, alice).handle(Send(room="elsewhere", client_msg_id="c9", body="x"), clock())
        return wire.frames, len(writer.pending)

    frames, submitted = run(main())
    assert submitted == 0  # nothing goes to the store
    [(user, err)] = frames
    assert user == "alice" and isinstance(err, Error)
    assert (err.code, err.client_msg_id) == ("not_member", "c9")
    assert "'elsewhere'" in err.message


def test_a_bad_frame_answer_echoes_the_client_msg_id_when_it_can_be_read(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    long_room = "r" * 129
    with server.client("ann", "json") as ann, server.client("bob", "protobuf") as bob:
        ann.ws.send('{"type":"send","client_msg_id":"j1","room":"lobby","body":5}')
        ann.ws.send(f'{{"type":"send","client_msg_id":"j2","room":"{long_room}"}}')
        ann.ws.send(b'{"type":"send","client_msg_id":"j3","room":"lobby"}')  # binary frame
        ann.ws.send('{"type":"send","client_msg_id":"j4","room":"lobby"')  # unreadable
        answers: list[Any] = [ann.recv() for _ in range(4)]
        bob.ws.send(
            pb.Envelope(send=pb.Send(client_msg_id="p1", room=long_room)).SerializeToString()
        )
        bob.ws.send(
            pb.Envelope(
                send=pb.Send(client_msg_id="p2", room="lobby", sent_at_us=-1)
            ).SerializeToString()
        )
        answers += [bob.recv() for _ in range(2)]
    assert all(isinstance(a, Error) and a.code == "bad_frame" for a in answers), answers
    assert [a.client_msg_id for a in answers] == ["j1", "j2", "j3", "", "p1", "p2"]
    assert "binary frame" in answers[2].message


def test_a_server_kind_from_a_client_is_bad_request_naming_what_a_client_may_send() -> None:
    async def main() -> list[tuple[str, Any]]:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        Session(path, alice).handle(Ack(client_msg_id="c1", room="r", seq=1), clock())
        return wire.frames

    [(_, err)] = run(main())
    assert (err.code, err.message) == (
        "bad_request",
        "'ack' is sent by the server, not by clients; a client sends one of: join, leave, send",
    )


def test_an_unknown_type_is_answered_with_the_kinds_a_client_may_send(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    with server.client("ann") as ann:
        ann.ws.send('{"type":"post","client_msg_id":"c1","room":"lobby"}')
        err = ann.recv()
    assert isinstance(err, Error) and err.code == "bad_frame"
    assert err.message == "unknown type 'post'; a client sends one of: join, leave, send"


class ZeroReads:
    """A store that holds no message: every room's last seq is 0."""

    async def last_seq(self, room: str) -> int:
        return 0

    async def read_store(self, op: str, *args: Any) -> Any:
        return []


def test_a_leave_takes_effect_then_is_answered_with_left_and_no_deliver_follows() -> None:
    async def main() -> tuple[list[tuple[str, Any]], int]:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = send_path(wire, writer, clock)
        alice = member(path, wire, "alice", "r")
        bob = member(path, wire, "bob", "r")
        session = Session(path, alice)
        session.handle(Leave(room="r"), clock())
        session.handle(Send(room="r", client_msg_id="a1", body="x"), clock())  # left: refused
        Session(path, bob).handle(Send(room="r", client_msg_id="b1", body="hi"), clock())
        sent, fut = writer.pending[0]
        fut.set_result(stored(sent, 1))
        await asyncio.sleep(0)
        return wire.frames, path.hub.members("r")

    frames, members = run(main())
    assert [(user, type(frame)) for user, frame in frames] == [
        ("alice", Left),
        ("alice", Error),
        ("bob", Ack),  # bob alone in the room: nobody to deliver to
    ]
    assert frames[0][1] == Left(room="r")
    assert frames[1][1].code == "not_member"
    assert members == 1


def test_leaving_a_room_not_joined_is_answered_with_left_too() -> None:
    async def main() -> list[tuple[str, Any]]:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = send_path(wire, writer, clock)
        session = Session(path, member(path, wire, "alice", "r"))
        session.handle(Leave(room="never"), clock())
        session.handle(Leave(room="r"), clock())
        session.handle(Leave(room="r"), clock())  # twice: idempotent
        return wire.frames

    assert run(main()) == [
        ("alice", Left(room="never")),
        ("alice", Left(room="r")),
        ("alice", Left(room="r")),
    ]


def test_a_leave_right_behind_its_join_wins_and_the_joined_is_not_sent() -> None:
    async def main() -> tuple[list[tuple[str, Any]], set[str], int]:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = replace(send_path(wire, writer, clock), reads=ZeroReads())
        alice = member(path, wire, "alice", "home")
        session = Session(path, alice)
        session.handle(Join(room="r"), clock())  # both read in one go: the Join's task
        session.handle(Leave(room="r"), clock())  # has not run yet
        await asyncio.gather(*session.tasks)
        return wire.frames, alice.rooms, path.hub.members("r")

    frames, rooms, members = run(main())
    assert frames == [("alice", Left(room="r"))]
    assert (rooms, members) == ({"home"}, 0)


def test_a_send_right_behind_its_join_is_accepted() -> None:
    async def main() -> int:
        wire, writer, clock = Wire(), HeldWriter(), FakeClock()
        path = replace(send_path(wire, writer, clock), reads=ZeroReads())
        session = Session(path, member(path, wire, "alice", "home"))
        session.handle(Join(room="r"), clock())
        session.handle(Send(room="r", client_msg_id="c1", body="x"), clock())
        await asyncio.gather(*session.tasks)
        return len(writer.pending)

    assert run(main()) == 1  # membership starts at the Join frame, not at its Joined


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_a_real_leave_is_answered_with_left(
    start_server: Callable[..., ServerProcess], codec: str
) -> None:
    server = start_server()
    with server.client("ann", codec) as ann:
        ann.join("lobby")
        assert ann.leave("lobby") == Left(room="lobby")
        assert ann.leave("lobby") == Left(room="lobby")  # not a member any more: still Left
        ann.send_text("lobby", "x")
        err = ann.recv()
        assert isinstance(err, Error) and err.code == "not_member"


def _ended(*steps: str, max_size: int = 64) -> dict[str, Any]:
    """Play a close on websockets' sans-I/O protocols (no socket, no clock) and return
    the fields the server's ``ws.close`` line gets (``server.app.close_codes``).

    Steps: ``client_close``, ``server_close``, ``oversize`` (a client frame over
    ``max_size``), ``echo`` (the client answers the server's close), ``lost`` (the TCP
    connection ends)."""
    server = Protocol(Side.SERVER, max_size=max_size)
    client = Protocol(Side.CLIENT)
    for step in steps:
        if step == "lost":
            server.receive_eof()
            continue
        if step == "client_close":
            client.send_close(1000)
        elif step == "server_close":
            server.send_close(1001, "server shutting down")
        elif step == "oversize":
            client.send_text(b"x" * (max_size + 1))
        elif step == "echo":
            client.receive_data(b"".join(server.data_to_send()))
        server.receive_data(b"".join(client.data_to_send()))
    return close_codes(cast(Any, SimpleNamespace(protocol=server)))


def test_close_fields_name_the_code_of_the_side_that_closed_first() -> None:
    assert _ended("client_close") == {"code": 1000, "by": "client"}
    assert _ended("server_close", "echo") == {"code": 1001, "by": "server"}
    assert _ended("server_close") == {"code": 1001, "by": "server"}  # no echo came back
    assert _ended("lost") == {"code": 1006, "by": "none"}


def test_an_over_size_frame_is_logged_as_the_1009_the_server_sent() -> None:
    assert _ended("oversize", "echo", "lost") == {"code": 1009, "by": "server"}
    # why conn.close_code (what the log said before) cannot be used: it is the code
    # *received*, and a server that fails a connection reads no echo
    server = Protocol(Side.SERVER, max_size=64)
    client = Protocol(Side.CLIENT)
    client.send_text(b"x" * 65)
    server.receive_data(b"".join(client.data_to_send()))
    client.receive_data(b"".join(server.data_to_send()))
    server.receive_data(b"".join(client.data_to_send()))  # the client's 1009 echo
    server.receive_eof()
    assert (server.close_sent and server.close_sent.code, server.close_code) == (1009, 1006)


def test_a_real_server_logs_an_over_size_frame_as_closed_1009_by_the_server(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server({"server.max_message_bytes": 4096})
    with server.client("oversized") as ann:
        ann.ws.send("x" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            ann.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    deadline = time.monotonic() + 10 * server.factor  # the log line follows the close
    line = ""
    while not line and time.monotonic() < deadline:
        line = next(
            (x for x in server.log().splitlines() if "event=ws.close user=oversized" in x), ""
        )
    assert line.endswith("event=ws.close user=oversized code=1009 by=server"), line
