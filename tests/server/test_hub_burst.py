"""The hub's write bursts: frames framed between hold() and release() leave with one
socket write per connection, in order, and the slow-consumer rule still applies."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.protocol import State
from websockets.server import ServerProtocol

from chatcap.protocol import CODECS
from server.hub import Client, Hub
from server.store import StoredMessage

JSON = CODECS["json"]


class FakeTransport:
    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        pass


class FakeConn:
    """Enough of a websockets ServerConnection: a real sans-I/O protocol, OPEN."""

    def __init__(self, buffered: int = 0) -> None:
        self.protocol = ServerProtocol()
        self.protocol.state = State.OPEN
        self.transport = FakeTransport(buffered)

    async def close(self, *args: Any) -> None:
        pass


def client(user: str, buffered: int = 0) -> Client:
    return Client(FakeConn(buffered), user, JSON, "127.0.0.1")  # type: ignore[arg-type]


def stored(seq: int) -> StoredMessage:
    return StoredMessage("r", seq, "ann", f"c{seq}", f"body {seq}", 1, 1)


def written(c: Client) -> list[bytes]:
    return c.conn.transport.writes  # type: ignore[attr-defined, no-any-return]


def test_a_burst_writes_each_connection_once_with_every_frame_in_order() -> None:
    async def main() -> None:
        direct: list[Any] = []
        hub = Hub(1 << 20, broadcast=lambda conns, payload, text: direct.append(payload))
        ann, bob, cy = client("ann"), client("bob"), client("cy")
        for member in (ann, bob, cy):
            hub.add(member)
            hub.join(member, "r")
            hub.caught_up(member, "r", 0)
        hub.hold()
        for seq in (1, 2, 3):
            hub.fan_out([stored(seq)], ann)
            hub.send(ann, f"ack {seq}".encode())
        assert direct == [] and written(bob) == []  # framed, not written yet
        hub.release()
        assert len(written(ann)) == 1 and len(written(bob)) == 1 and len(written(cy)) == 1
        for member, needles in (
            (ann, [b"ack 1", b"ack 2", b"ack 3"]),
            (bob, [b"body 1", b"body 2", b"body 3"]),
        ):
            data = written(member)[0]
            positions = [data.index(n) for n in needles]
            assert positions == sorted(positions)
        hub.send(ann, b"after")  # outside a burst: written at once, as before
        assert direct == [b"after"]

    asyncio.run(main())


def test_a_slow_consumer_is_dropped_inside_a_burst_and_gets_nothing_framed() -> None:
    async def main() -> None:
        hub = Hub(1024, broadcast=lambda *args, **kwargs: None)
        ann, slow = client("ann"), client("slow", buffered=4096)
        for member in (ann, slow):
            hub.add(member)
            hub.join(member, "r")
            hub.caught_up(member, "r", 0)
        hub.hold()
        delivered = hub.fan_out([stored(1)], ann)
        hub.release()
        assert delivered == 0 and slow.dropped and written(slow) == []
        assert "r" not in slow.rooms
        await asyncio.sleep(0)  # the 1008 close task runs

    asyncio.run(main())
