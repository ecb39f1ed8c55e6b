"""One WebSocket session: frames in, the pipeline, frames out.

A frame travels the pipeline of docs/design.md:

1. decode with the connection's codec (a text frame on ``chat.v1.protobuf`` or a
   binary frame on ``chat.v1.json`` is ``bad_frame``), then the frame middleware chain
   (:func:`frame_chain`: metrics → send rate limit → dispatch);
2. ``Send`` → membership, body size, per-user rate limiter (``rate_limited`` with
   ``retry_after_ms``), idempotency (a retry of an in-flight or stored message gets the
   same Ack, never a second message), the bounded write queue (``overloaded``);
3. the writer batches, asks the breaker, takes a pool connection and commits;
4. **after the commit** (:meth:`Session.after_commit`, the one place that says the
   order) the Deliver goes to every other member of the room, then the Ack to the sender.

Sends are pipelined: the session never waits for one ack before reading the next
frame; the Ack is written from a future callback. Join (store reads, replay) runs as a
task owned by the session and cancelled when the client goes away. What a session uses
of the server is one typed bundle, :class:`SendPath`, built once by the app.

Membership changes in frame order: a Join subscribes the connection the moment its
frame is dispatched (the store reads and the Joined follow in the task), a Leave
unsubscribes it at once and is answered by ``Left`` — also for a room not joined
(idempotent). A Joined not yet sent when a Leave of its room arrives is not sent at
all (and a replay under way stops): the Left is the last word on that room.

Read throttling: once a Send is refused with ``rate_limited``, the session processes no
further frame of that connection (of any kind) until the ``retry_after`` it just sent
has passed (at most :data:`THROTTLE_MAX_S`; the rule is
:func:`chatcap.pipeline.answers.throttle_until`, shared with the model). A client that
honours ``retry_after`` never notices; one that floods stops being read: websockets'
receive queue fills, it pauses the socket, and TCP backpressure slows the sender
instead of the server's event loop.
The wait ends early when the connection stops being open or the server goes away
(shutdown), so it never holds up a 1001 drain; the frames still held back then are
dropped unprocessed (no answer could reach the client any more), which lets websockets
read on to the peer's closing frame at once.

Stage times: a fresh Send's ``ingress`` (frame read → ``writer.submit``), ``fanout``
(:meth:`Hub.fan_out`) and ``ack`` (encoding and writing the Ack) are observed here, its
``queue`` and ``commit`` by the writer, all in ``chatcap_send_stage_seconds``
(:mod:`server.metrics`; :class:`SendPath` hands the writer its two children).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from chatcap.pipeline.answers import (
    DRAIN_RETRY_AFTER_MS,
    THROTTLE_MAX_S,
    protocol_ms,
    throttle_until,
)
from chatcap.policy import KeyedLimiter
from chatcap.protocol import DecodeError, Envelope, Join, Joined, Leave, Left, Send
from chatcap.protocol.errors import CLIENT_KINDS_HINT
from chatcap.protocol.messages import (
    BAD_FRAME,
    BAD_REQUEST,
    INTERNAL,
    NOT_MEMBER,
    RATE_LIMITED,
    TOO_LARGE,
    UNAVAILABLE,
    Ack,
    Error,
)
from chatcap.scenario import ServerConfig
from server.clock import Clock, now_s
from server.dedup import Deduper
from server.errors import StoreReadError
from server.faults import FaultInjector, burn_cpu
from server.hub import Client, Hub, deliver_frame
from server.logs import event
from server.metrics import Metrics
from server.store import PendingSend, StoredMessage
from server.writer import WriteRejected

FrameHandler = Callable[[Envelope, float], None]
FrameMiddleware = Callable[["Session", FrameHandler], FrameHandler]

# Frames one session handles before it yields to the event loop. Frames already read
# are handed out without a suspension, and one socket read holds thousands of small
# frames: without a yield a client that floods (even with frames the rate limiter
# refuses) held the loop for ~100 ms per read, stalling every other connection.
FAIR_SHARE_FRAMES = 16

__all__ = ["FAIR_SHARE_FRAMES", "THROTTLE_MAX_S", "RoomReads", "SendPath", "Session", "WriteQueue"]


class WriteQueue(Protocol):
    """The writer's side a session uses (:class:`server.writer.Writer`).

    A writer that also has ``time_stages(queue, commit)`` (the real one does) is handed
    the ``queue`` and ``commit`` children of ``chatcap_send_stage_seconds`` by
    :class:`SendPath`; a stand-in without it times no stage.
    """

    def submit(self, send: PendingSend) -> asyncio.Future[StoredMessage]: ...


class RoomReads(Protocol):
    """The store reads a Join needs (the app runs them on the pool, with a deadline)."""

    async def last_seq(self, room: str) -> int: ...

    async def read_store(self, op: str, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class SendPath:
    """Everything a :class:`Session` uses of its server, built once by the app.

    ``room_last_seq`` is the app's own map (room -> highest seq committed or read), moved
    up by :meth:`Session.after_commit`; ``going_away`` is set when the server closes its
    connections (read-throttled sessions stop holding frames).

    Built once per server, it binds the writer's stage times to ``metrics`` (the
    ``queue`` and ``commit`` children of ``chatcap_send_stage_seconds``).
    """

    config: ServerConfig
    hub: Hub
    writer: WriteQueue
    limiter: KeyedLimiter
    deduper: Deduper
    metrics: Metrics
    faults: FaultInjector
    reads: RoomReads
    going_away: asyncio.Event
    log: logging.Logger
    room_last_seq: dict[str, int] = field(default_factory=dict)
    clock: Clock = now_s
    burn_cpu: Callable[[float], None] = burn_cpu

    def __post_init__(self) -> None:
        time_stages = getattr(self.writer, "time_stages", None)
        if time_stages is not None:
            stages = self.metrics.send_stages
            time_stages(stages.queue, stages.commit)


def count_frames(session: Session, inner: FrameHandler) -> FrameHandler:
    """Metrics middleware: frames in by codec."""
    tally = session.tally

    def handle(msg: Envelope, t_in: float) -> None:
        tally[0] += 1
        inner(msg, t_in)

    return handle


def limit_sends(session: Session, inner: FrameHandler) -> FrameHandler:
    """Rate-limit middleware: a Send over the user's rate gets ``rate_limited``."""
    limiter = session.path.limiter
    user = session.client.user
    rate_limited = session.path.metrics.rate_limited

    def handle(msg: Envelope, t_in: float) -> None:
        if type(msg) is Send:
            decision = limiter.try_acquire(user, t_in)
            if not decision.allowed:
                rate_limited.inc()
                session.resume_at = throttle_until(t_in, decision.retry_after_s)
                session.error(
                    RATE_LIMITED,
                    "send rate limit exceeded",
                    msg.client_msg_id,
                    protocol_ms(decision.retry_after_s),
                )
                return
        inner(msg, t_in)

    return handle


FRAME_MIDDLEWARE: tuple[FrameMiddleware, ...] = (count_frames, limit_sends)


def frame_chain(session: Session, dispatch: FrameHandler) -> FrameHandler:
    """Compose the frame middleware once per session (outermost first)."""
    handler = dispatch
    for middleware in reversed(FRAME_MIDDLEWARE):
        handler = middleware(session, handler)
    return handler


class Session:
    """Reads one connection's frames until it closes; owns its Join tasks."""

    def __init__(self, path: SendPath, client: Client) -> None:
        self.path = path
        self.client = client
        self.clock = path.clock
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        self.tally = path.metrics.tally(client.codec.name)
        self.stages = path.metrics.send_stages  # bound children: one observe per stage
        self.handle = frame_chain(self, self.dispatch)
        self.max_body_bytes = path.config.max_message_bytes - 512
        self.log = path.log
        # the time on self.clock before which no frame is processed (set by a
        # rate_limited refusal)
        self.resume_at = 0.0

    async def run(self) -> None:
        conn = self.client.conn
        text_codec = self.client.codec.text
        tally, clock = self.tally, self.clock
        since_yield = 0
        dropping = False  # a hold was cut short by the close: the rest goes unread
        try:
            async for frame in conn:
                since_yield += 1
                if since_yield >= FAIR_SHARE_FRAMES:
                    since_yield = 0
                    await asyncio.sleep(0)  # let other connections and the writer run
                if dropping:
                    continue
                t_in = clock()
                tally[1] += len(frame)
                if isinstance(frame, str) != text_codec:
                    kind = "text" if isinstance(frame, str) else "binary"
                    self.bad_frame(
                        f"{kind} frame on the {self.client.codec.subprotocol} subprotocol",
                        "frame_type",
                        self.client.codec.client_msg_id_of(frame),
                    )
                    continue
                try:
                    msg = self.client.codec.decode(frame)
                except DecodeError as exc:
                    self.bad_frame(exc.reason, "decode", exc.client_msg_id)
                    continue
                self.handle(msg, t_in)
                if self.resume_at > t_in:  # refused as rate_limited: read throttling
                    dropping = not await self.hold_back()
        except ConnectionClosed:
            pass
        finally:
            for task in self.tasks:
                task.cancel()

    async def hold_back(self) -> bool:
        """Process nothing more until ``resume_at``, the moment the limiter admits a send
        again (True); False as soon as the connection leaves OPEN or the server goes away.
        """
        conn, going_away = self.client.conn, self.path.going_away
        wakers: tuple[asyncio.Task[Any], ...] = ()
        try:
            while conn.state is State.OPEN and not going_away.is_set():
                wait_s = self.resume_at - self.clock()
                if wait_s <= 0:  # timers may fire a little early: re-check on our clock
                    return True
                if not wakers:
                    wakers = (
                        self.loop.create_task(conn.wait_closed()),
                        self.loop.create_task(going_away.wait()),
                    )
                await asyncio.wait(wakers, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in wakers:
                task.cancel()
        return False

    # ---------------------------------------------------------------- dispatch

    def dispatch(self, msg: Envelope, t_in: float) -> None:
        kind = type(msg)
        if kind is Send:
            self.on_send(msg, t_in)  # type: ignore[arg-type]
        elif kind is Join:
            self.path.hub.join(self.client, msg.room)  # type: ignore[union-attr]
            self.spawn(self.on_join(msg))  # type: ignore[arg-type]
        elif kind is Leave:
            self.on_leave(msg)  # type: ignore[arg-type]
        else:
            tag = kind.__struct_config__.tag
            self.error(
                BAD_REQUEST, f"{tag!r} is sent by the server, not by clients; {CLIENT_KINDS_HINT}"
            )

    def on_send(self, msg: Send, t_in: float) -> None:
        path, client = self.path, self.client
        if msg.room not in client.rooms:
            self.error(
                NOT_MEMBER, f"join room {msg.room!r} before sending to it", msg.client_msg_id
            )
            return
        if len(msg.body) > self.max_body_bytes // 4 and (
            len(msg.body.encode()) > self.max_body_bytes
        ):
            self.error(TOO_LARGE, f"body over {self.max_body_bytes} bytes", msg.client_msg_id)
            return
        if path.faults.cpu_burn_us:
            path.burn_cpu(path.faults.cpu_burn_us)
        seen = path.deduper.lookup(client.user, msg.client_msg_id)
        if seen is not None:
            path.metrics.dedup_hits.inc()
            if isinstance(seen, StoredMessage):
                self.ack(seen, t_in)
            else:
                # the first attempt's after_commit was registered first: its fan-out
                # still comes before this answer
                seen.add_done_callback(partial(self.answer, msg, t_in))
            return
        pending = PendingSend(msg.room, client.user, msg.client_msg_id, msg.body, msg.sent_at_us)
        submitted_at = self.clock()
        try:
            fut = path.writer.submit(pending)
        except WriteRejected as exc:
            self.reject(exc, msg.client_msg_id)
            return
        self.stages.ingress.observe(submitted_at - t_in)  # accepted sends only
        path.deduper.remember(client.user, msg.client_msg_id, fut)
        fut.add_done_callback(partial(self.after_commit, msg, t_in))

    def after_commit(self, msg: Send, t_in: float, fut: asyncio.Future[StoredMessage]) -> None:
        """The one step after a fresh Send's write settles, in this order:

        1. committed: the room's last seq moves up (a Join reads it from memory);
        2. committed and new: **fan-out** — the Deliver goes to every other member of the
           room, encoded once per codec (:meth:`Hub.fan_out`); a duplicate the store
           recognised was delivered when it was first stored, and is not again;
        3. **the answer** to the sender (:meth:`answer`): the Ack, or the error.

        Fan-out comes before the Ack, so by the time a sender holds its Ack every other
        member's Deliver is already written; the model (``sim/``) relies on this order,
        and ``tests/server/test_session.py`` checks it. The fan-out's duration is the
        Send's ``fanout`` stage.
        """
        if not fut.cancelled() and fut.exception() is None:
            stored = fut.result()
            last_seq = self.path.room_last_seq
            if stored.seq > last_seq.get(stored.room, 0):
                last_seq[stored.room] = stored.seq
            if not stored.duplicate:
                clock = self.clock
                started = clock()
                self.path.hub.fan_out((stored,), self.client)
                self.stages.fanout.observe(clock() - started)
        self.answer(msg, t_in, fut)

    def answer(self, msg: Send, t_in: float, fut: asyncio.Future[StoredMessage]) -> None:
        """The sender's answer once the write settled: Ack, its rejection, or internal."""
        if fut.cancelled():
            self.error(
                UNAVAILABLE, "server is shutting down", msg.client_msg_id, DRAIN_RETRY_AFTER_MS
            )
            return
        exc = fut.exception()
        if exc is None:
            self.ack(fut.result(), t_in)
        elif isinstance(exc, WriteRejected):
            self.reject(exc, msg.client_msg_id)
        else:  # a bug: say so in the log once, answer internal, keep serving
            event(
                self.log,
                "send.failed",
                logging.ERROR,
                user=self.client.user,
                error=type(exc).__name__,
            )
            self.error(INTERNAL, "internal error", msg.client_msg_id)

    def ack(self, stored: StoredMessage, t_in: float) -> None:
        """Encode and write the Ack; once written, its ``ack`` stage (this method's span)
        and its ack latency (frame read → now) are observed from one clock reading."""
        started = self.clock()
        frame = Ack(
            client_msg_id=stored.client_msg_id, room=stored.room, seq=stored.seq, ts_us=stored.ts_us
        )
        payload = self.client.codec.encode(frame)
        if self.path.hub.send(self.client, payload):
            now = self.clock()
            self.stages.ack.observe(now - started)
            self.path.metrics.ack_latency.observe(now - t_in)
            self.tally[2] += 1
            self.tally[3] += len(payload)

    def reject(self, exc: Exception, client_msg_id: str) -> None:
        code = getattr(exc, "code", INTERNAL)
        retry_after = int(getattr(exc, "retry_after_ms", 0) or 0)
        self.error(code, str(exc) or code, client_msg_id, retry_after)

    # ---------------------------------------------------------------- join / leave

    def on_leave(self, msg: Leave) -> None:
        """Unsubscribe now, then say so: after this Left no Deliver of the room follows."""
        self.path.hub.leave(self.client, msg.room)
        self.send(Left(room=msg.room))

    async def on_join(self, msg: Join) -> None:
        """The rest of a Join that :meth:`dispatch` subscribed: Joined, replay, go live."""
        path, client, room = self.path, self.client, msg.room
        try:
            async with asyncio.timeout(path.config.request_timeout_s):
                last_seq = await path.reads.last_seq(room)
                if room not in client.rooms:  # a Leave came first: its Left answered
                    return
                self.send(Joined(room=room, last_seq=last_seq))
                through = last_seq
                if msg.since_seq is not None:
                    through = await self.replay(room, msg.since_seq, last_seq)
        except (TimeoutError, StoreReadError) as exc:
            path.hub.leave(client, room)
            self.error(UNAVAILABLE, f"could not join {room!r}: {exc or 'timeout'}", "", 1000)
            return
        except Exception as exc:  # a bug: the client still gets an answer, the log one line
            path.hub.leave(client, room)
            event(
                self.log,
                "join.failed",
                logging.ERROR,
                user=client.user,
                room=room,
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )
            self.error(INTERNAL, f"could not join {room!r}: internal error")
            return
        path.hub.caught_up(client, room, through)

    async def replay(self, room: str, since_seq: int, last_seq: int) -> int:
        """Send messages ``since_seq < seq <= last_seq`` page by page; returns the last sent."""
        page = self.path.config.history_page_max
        after = since_seq
        for _ in range(self.path.config.replay_max_pages):
            if after >= last_seq:
                break
            rows = await self.path.reads.read_store("history", room, after, page)
            rows = [r for r in rows if r.seq <= last_seq]
            if not rows:
                break
            codec, conn, rooms = self.client.codec, self.client.conn, self.client.rooms
            for row in rows:
                if room not in rooms:  # left during the replay: nothing more of it
                    return after
                # awaiting send() here gives replay backpressure: a slow reader slows
                # its own replay instead of filling server memory.
                await conn.send(codec.encode(deliver_frame(row)), text=codec.text)
                after = row.seq
        return after

    # ---------------------------------------------------------------- helpers

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug: one log line, the connection goes on
            event(
                self.log,
                "session.task_failed",
                logging.ERROR,
                user=self.client.user,
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )

    def send(self, frame: Envelope) -> None:
        self.path.hub.send(self.client, self.client.codec.encode(frame))

    def error(
        self, code: str, message: str, client_msg_id: str = "", retry_after_ms: int = 0
    ) -> None:
        self.path.metrics.errors_sent.labels(code=code).inc()
        self.send(
            Error(
                code=code,
                message=message,
                client_msg_id=client_msg_id,
                retry_after_ms=retry_after_ms,
            )
        )

    def bad_frame(self, reason: str, kind: str, client_msg_id: str = "") -> None:
        """Answer a frame that did not decode; ``client_msg_id`` is its Send's id when
        the codec could still read it (``Codec.client_msg_id_of``), else ``""``."""
        self.path.metrics.bad_frames.labels(reason=kind).inc()  # bounded label values
        self.error(BAD_FRAME, reason, client_msg_id)
