"""The connection hub: who is connected, which rooms they joined, and fan-out.

One hub per server process owns every live :class:`Client`. Rooms map to their
members grouped by codec, so a committed message is encoded **once per codec** and the
same bytes are written to every member of that codec — except the connection that sent
it: the protocol's rule is that the sender's Ack stands for its own Deliver
(PROTOCOL.md, ``deliver``).

Writes never wait. Like ``websockets.broadcast`` they push the frame into each
connection's transport buffer; unlike it, they first look at how much is already
buffered. The slow-consumer policy: a client with more than
``server.outbound_buffer_max_bytes`` unsent is closed with code 1008
("slow consumer") and dropped from every room, so server memory per client is bounded
by that figure plus one write burst (below), and nobody else waits for it.

**Write bursts.** Between :meth:`Hub.hold` and :meth:`Hub.release` (the writer brackets
the answers of one committed batch with them, in the same loop turn) frames are framed
into each connection's websockets protocol (its sans-I/O ``send_text``/``send_binary``)
but not written; ``release`` writes each touched connection's frames with **one**
``transport.write``. A batch of 20 messages to a room of 50 then costs each member one
socket write instead of 20, and a sender's 20 Acks one instead of 20. The checks are
``broadcast``'s (only OPEN connections) plus the slow-consumer check above, made as each
frame is queued; what one burst adds is at most one batch of frames per connection.

Joining is a small protocol of its own (see :meth:`Hub.join`): the member is first
subscribed in *catching-up* mode, where live deliveries are held back; the session reads
the room's last seq and replays history; then :meth:`Hub.caught_up` releases the held
deliveries that are newer than what was replayed. That keeps every member's stream in
seq order without gaps or duplicates across the join.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import broadcast as websockets_broadcast
from websockets.protocol import State

from chatcap.protocol import Codec, Deliver
from server.logs import event
from server.store import StoredMessage

Broadcast = Callable[..., None]
"""``websockets.broadcast``'s shape: ``(connections, payload, text=...)``; writes one frame
to each connection's transport buffer without waiting."""

SLOW_CONSUMER_CODE = 1008
SLOW_CONSUMER_REASON = "slow consumer"


@dataclass(eq=False, slots=True)
class Client:
    """One authenticated WebSocket connection."""

    conn: ServerConnection
    user: str
    codec: Codec
    ip: str
    rooms: set[str] = field(default_factory=set)
    # room -> deliveries held back while the member catches up after a Join
    held: dict[str, list[StoredMessage]] = field(default_factory=dict)
    dropped: bool = False

    @property
    def buffered_bytes(self) -> int:
        transport = self.conn.transport
        return int(transport.get_write_buffer_size()) if transport is not None else 0


def deliver_frame(msg: StoredMessage) -> Deliver:
    return Deliver(
        room=msg.room,
        seq=msg.seq,
        sender=msg.sender,
        body=msg.body,
        ts_us=msg.ts_us,
        client_msg_id=msg.client_msg_id,
        sent_at_us=msg.sent_at_us,
    )


class Hub:
    """Every client of this process, the rooms, and the non-blocking write path."""

    def __init__(
        self,
        outbound_max_bytes: int,
        metrics: Any = None,
        log: logging.Logger | None = None,
        *,
        broadcast: Broadcast = websockets_broadcast,
    ) -> None:
        """``broadcast`` writes the frames (tests pass one that records them)."""
        self.outbound_max_bytes = outbound_max_bytes
        self._broadcast = broadcast
        self.metrics = metrics
        self.log = log or logging.getLogger("chatcap.hub")
        self.clients: set[Client] = set()
        self._holding = False  # inside a write burst: frames wait for release()
        self._touched: dict[ServerConnection, None] = {}  # connections with framed data
        self.by_ip: dict[str, int] = defaultdict(int)
        # room -> codec name -> members
        self._rooms: dict[str, dict[str, set[Client]]] = {}
        self._codecs: dict[str, Codec] = {}

    # ---------------------------------------------------------------- membership

    def add(self, client: Client) -> None:
        self.clients.add(client)
        self.by_ip[client.ip] += 1
        self._codecs[client.codec.name] = client.codec

    def remove(self, client: Client) -> None:
        """Forget a client that disconnected (idempotent)."""
        if client not in self.clients:
            return
        self.clients.discard(client)
        self.by_ip[client.ip] -= 1
        if self.by_ip[client.ip] <= 0:
            del self.by_ip[client.ip]
        for room in list(client.rooms):
            self.leave(client, room)

    def join(self, client: Client, room: str) -> None:
        """Subscribe in catching-up mode: live deliveries are held until :meth:`caught_up`."""
        client.rooms.add(room)
        client.held.setdefault(room, [])
        by_codec = self._rooms.setdefault(room, {})
        by_codec.setdefault(client.codec.name, set()).add(client)

    def caught_up(self, client: Client, room: str, through_seq: int) -> None:
        """End catching up: send held deliveries newer than ``through_seq``, then go live."""
        held = client.held.pop(room, None)
        if not held or room not in client.rooms:
            return
        for msg in held:
            if msg.seq > through_seq:
                self.send(client, client.codec.encode(deliver_frame(msg)))

    def leave(self, client: Client, room: str) -> None:
        client.rooms.discard(room)
        client.held.pop(room, None)
        by_codec = self._rooms.get(room)
        if by_codec is None:
            return
        members = by_codec.get(client.codec.name)
        if members is not None:
            members.discard(client)
            if not members:
                del by_codec[client.codec.name]
        if not by_codec:
            del self._rooms[room]

    def members(self, room: str) -> int:
        return sum(len(m) for m in self._rooms.get(room, {}).values())

    # ---------------------------------------------------------------- writing

    def send(self, client: Client, payload: bytes) -> bool:
        """Write one frame to one client now (in a burst: at its release); False if it
        is gone or was just dropped."""
        if client.dropped or client.conn.protocol.state is not State.OPEN:
            return False
        if client.buffered_bytes > self.outbound_max_bytes:
            self.drop_slow(client)
            return False
        if self._holding:
            self._frame(client.conn, payload, client.codec.text)
        else:
            self._broadcast((client.conn,), payload, text=client.codec.text)
        return True

    # ---------------------------------------------------------------- write bursts

    def hold(self) -> None:
        """Start a write burst: frames are framed now and written at :meth:`release`."""
        self._holding = True

    def release(self) -> None:
        """End the burst: one ``transport.write`` per connection written to."""
        self._holding = False
        touched, self._touched = self._touched, {}
        for conn in touched:
            flush_framed(conn)

    def _frame(self, conn: ServerConnection, payload: bytes, text: bool) -> None:
        protocol = conn.protocol
        if text:
            protocol.send_text(payload)
        else:
            protocol.send_binary(payload)
        self._touched[conn] = None

    def fan_out(self, messages: Iterable[StoredMessage], sender: Client | None = None) -> int:
        """Deliver committed messages to their rooms; returns the number of deliveries.

        The sending connection is skipped: its Ack carries the seq and time already.
        The same user's other connections get the Deliver like everyone else.
        """
        delivered = 0
        for msg in messages:
            by_codec = self._rooms.get(msg.room)
            if not by_codec:
                continue
            frame = deliver_frame(msg)
            for codec_name, members in by_codec.items():
                if len(members) == 1 and sender in members:
                    continue  # nobody else speaks this codec: don't encode for no one
                codec = self._codecs[codec_name]
                payload = codec.encode(frame)
                delivered += self._write_many(members, msg, payload, codec.text, sender)
        return delivered

    def _write_many(
        self,
        members: set[Client],
        msg: StoredMessage,
        payload: bytes,
        text: bool,
        sender: Client | None,
    ) -> int:
        ready = []
        limit = self.outbound_max_bytes
        for client in list(members):
            if client is sender:
                continue
            held = client.held.get(msg.room)
            if held is not None:
                held.append(msg)
            elif client.buffered_bytes > limit:
                self.drop_slow(client)
            else:
                ready.append(client.conn)
        if self._holding:
            for conn in ready:
                if conn.protocol.state is State.OPEN:  # broadcast() skips the others too
                    self._frame(conn, payload, text)
        else:
            self._broadcast(ready, payload, text=text)
        return len(ready)

    def drop_slow(self, client: Client) -> None:
        """Apply the slow-consumer policy: close 1008 and stop writing to it."""
        if client.dropped:
            return
        client.dropped = True
        buffered = client.buffered_bytes
        for room in list(client.rooms):
            self.leave(client, room)
        if self.metrics is not None:
            self.metrics.slow_consumers_dropped.inc()
        event(
            self.log,
            "client.slow_consumer",
            logging.WARNING,
            user=client.user,
            buffered_bytes=buffered,
            limit_bytes=self.outbound_max_bytes,
        )
        task = asyncio.get_running_loop().create_task(_close_slow(client.conn))
        _background.add(task)
        task.add_done_callback(_background.discard)


def flush_framed(conn: ServerConnection) -> None:
    """Write what the connection's protocol has framed with one ``transport.write``
    (``Connection.send_data`` writes each frame on its own); an end-of-stream marker
    (``b""``, the protocol is closing) is handled as ``send_data`` does."""
    chunks = conn.protocol.data_to_send()
    transport = conn.transport
    if not chunks or transport is None or transport.is_closing():
        return
    if all(chunks):
        transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        return
    for chunk in chunks:  # rare: a close was framed meanwhile
        if chunk:
            transport.write(chunk)
        elif transport.can_write_eof():
            with contextlib.suppress(Exception):  # as websockets: write_eof may raise
                transport.write_eof()
        else:
            transport.close()


SLOW_CONSUMER_GRACE_S = 1.0


async def _close_slow(conn: ServerConnection) -> None:
    """Send 1008, but don't wait the full close timeout for a peer that does not read:
    after a short grace the TCP connection is aborted and its buffer freed."""
    try:
        async with asyncio.timeout(SLOW_CONSUMER_GRACE_S):
            await conn.close(SLOW_CONSUMER_CODE, SLOW_CONSUMER_REASON)
    except TimeoutError:
        if conn.transport is not None:
            conn.transport.abort()


# Strong references to fire-and-forget close tasks (asyncio keeps only weak ones).
_background: set[asyncio.Task[None]] = set()
