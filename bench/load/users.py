"""The Locust chat users: open-loop WebSocket room members, one codec per connection.

Runs under gevent only (Locust patches the standard library before this is imported);
never import it into a process that runs asyncio. ``bench/locustfile.py`` is the
locustfile; this module holds the machinery so that several locustfiles (the chat
users, ``bench/locust_history.py``) share one set of command-line options and one
per-process :class:`~bench.load.runstate.RunState`.

**A chat user** (:class:`ChatUser`) is one connection speaking one codec, a member of
one room (:mod:`bench.load.plan` says which). ``on_start`` takes a token over REST
(``GET /api/v1/token``, Basic auth, password ``pw``: the load scenarios run the server
with ``auth = "open"``). Its single task then connects (:mod:`bench.load.wsclient`:
subprotocol of its codec, ``Authorization: Bearer``; ``wss://`` with the process's
default TLS context, which trusts ``SSL_CERT_FILE``), starts receiving, joins the room,
and runs the send schedule until the connection is lost; Locust's
``wait_time`` (1 s) is only the pause before it reconnects, joining with ``since_seq`` so
the missed messages replay. Over plain TCP a callback in gevent's hub reads the socket
whenever it is readable (:meth:`~bench.load.wsclient.WebSocket.read_ready`: no greenlet
switch per read); over TLS a receiver greenlet does (``recv_batch``). Either way every
message one socket read brought is handled at once, stamped with one receipt time.

**Open loop.** Sends follow a schedule of *intended* times (``poisson`` or
``constant`` at ``send_rate_per_user_per_s``) drawn from the user's seeded RNG. A send
never waits for an earlier Ack; a sender that falls behind sends at once and its ack
latency still counts from the intended time (no coordinated omission). How late each
send went out is recorded (``schedule_lag`` histogram, ``max_schedule_lag_ms``).
``arrival = "closed"`` is the classic closed loop instead — send, wait for the answer,
think ``think_time_s``, send — kept to show what coordinated omission hides.

**Latencies** (µs) are counted in the process's tallies
(:meth:`bench.load.report.ProcessStats.tally`, folded exactly into its
:class:`bench._support.histo.HistogramSet`). Locust's statistics and charts show them
too, as rows of type ``ws`` whose names keep sends apart from deliveries:

* ``send→ack {codec}`` — one per send answered: its Ack (success; Ack receipt − intended
  send time, ``time.perf_counter_ns``) or its failure (an Error frame for it, or no answer
  within ``client.ack_timeout_ms``: failure ``ChatError(code)`` / ``timeout``). Its req/s
  is the send rate the server answered;
* ``deliver {codec}`` — one per Deliver received: receipt − the sender's ``sent_at_us``
  (both ``time.time_ns() // 1000``: same host). With rooms of n, about n − 1 per send;
* ``error {code}`` — failures not tied to a send: ``connect``, ``join``, ``closed`` (the
  connection was lost), ``undecodable``, and Error frames for sends already given up on.

Successes of ``send→ack`` and ``deliver`` reach Locust in bulk, once a second (see
:mod:`bench.load.runstate`): the rows count every ack and delivery as before, their
response times are those of the histograms' buckets (within 0.1 %), and a second's
requests show up in the charts when that second ends; failures and ``error`` rows are
one ``request`` event each, at once. A listener on Locust's ``request`` event sees
failures only.

Locust's total req/s adds every row up (sends, deliveries, REST); the chatcap ledger tab
(:mod:`bench.load.webui`) shows sends/s and deliveries/s apart. A user records its loss
figures in its own codec's ledger (``ProcessStats.ledger``). The histograms
also keep ``ack_from_send`` (from the actual send): gevent's timers fire ~0.5–1 ms late
(libev's millisecond resolution), so an idle generator's sends leave that much after
their intended time — visible in ``schedule_lag`` and included in ``ack``, as open-loop
measurement demands; ``ack_from_send`` shows the latency without it. The server does
not deliver a message back to its sender; the sender's Ack stands for it in the loss
ledger.

**Retries**: an attempt unanswered after ``client.ack_timeout_ms`` is a ``timeout``;
after a timeout or a retryable error the scenario's ``RetryPolicy`` (backoff, jitter,
retry budget; :mod:`chatcap.wiring`) decides, and a retry re-sends the same frame (same
``client_msg_id``, deduplicated by the server). The users of one Locust process share one
policy, so one retry budget, as the model's simulated users do (with N processes the
fleet has N budgets).

**Over time**: every first send, attempt, in-time ack (goodput), ack while backing off,
timeout, late answer and Error frame is also counted in the second it happened
(``ProcessStats.series``, :mod:`bench.load.series`): one list addition each, so a fault
episode's goodput can be read second by second as the client saw it.

**At test stop** each process's figures become a *part*, merged into ``--chat-out``:
see :mod:`bench.load.runstate`.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import ssl
import time
from dataclasses import dataclass

import gevent
from gevent.event import Event
from gevent.hub import get_hub
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

from bench.load.plan import (
    backlog_until,
    body_text,
    count_backlog,
    send_gaps,
    user_name,
    user_rng,
)
from bench.load.runstate import PASSWORD, RUN, locust_row
from bench.load.wsclient import ConnectionClosed, HandshakeError, WebSocket, connect
from chatcap.policy.retry import RetryPolicy
from chatcap.protocol import (
    ERROR_CODES,
    Ack,
    Codec,
    DecodeError,
    Deliver,
    Error,
    HistoryPage,
    Join,
    Joined,
    Send,
    get_codec,
)
from chatcap.protocol.messages import INTERNAL
from chatcap.wiring import retry_policy

__all__ = ["ChatError", "ChatUser", "ScenarioUser"]


_CATCH_UP_BATCH = 32  # sends in a row before the sender yields to other greenlets
_TLS: list[ssl.SSLContext] = []  # one client context per process, made on first wss://


def _tls_context() -> ssl.SSLContext:
    """The process's TLS client context: the default one, which trusts ``SSL_CERT_FILE``
    (the CA a benchmark's Locust process is given) — built once, not per connection."""
    if not _TLS:
        _TLS.append(ssl.create_default_context())
    return _TLS[0]


class ChatError(Exception):
    """A failed chat request, reported to Locust's statistics as its ``exception``."""


# ---------------------------------------------------------------------------- the user


@dataclass(slots=True)
class _Pending:
    """A message not yet acked or given up on."""

    cid: str
    frame: bytes
    intended_ns: int
    sent_ns: int  # when the first attempt actually went out
    attempt: int = 1
    waiting: bool = True  # an attempt is out and unanswered
    previous_delay_s: float | None = None


class ChatUser(FastHttpUser):
    """One WebSocket chat member; subclasses may fix ``codec_name`` (see module docs)."""

    abstract = True
    wait_time = constant(1.0)  # only the pause before reconnecting
    codec_name: str | None = None
    """``"json"`` / ``"protobuf"``; None = ``--chat-codec`` (and the mix) decides."""

    # -- lifecycle ---------------------------------------------------------------------

    def on_start(self) -> None:
        if RUN.plan is None or RUN.stats is None or RUN.rooms is None:
            raise RUN.no_plan()
        plan, self.stats = RUN.plan, RUN.stats
        self.n = RUN.next_user()
        self.login = user_name(RUN.worker, self.n)
        self.codec: Codec = get_codec(self.codec_name or RUN.codecs.codec_of(self.n))
        self.room = RUN.rooms.room_of(self.n)
        if self.room not in RUN.rooms_joined:
            RUN.rooms_joined.append(self.room)
        self.rng = user_rng(plan.seed, RUN.worker, self.n, "retry")
        # the process's one policy: the retry budget is shared by its users (RunState)
        self.policy: RetryPolicy = RUN.retry_policy or retry_policy(plan.client)
        self.think_ns = int(plan.think_time_s * 1e9)
        self.ack_timeout_ns = int(plan.ack_timeout_s * 1e9)
        self.gaps = (
            None
            if plan.closed_loop
            else send_gaps(
                plan.arrival,
                plan.send_rate_per_user_per_s,
                user_rng(plan.seed, RUN.worker, self.n, "schedule"),
            )
        )
        self.body = body_text(plan.body_bytes)
        self.pending: dict[str, _Pending] = {}
        self.timers: list[tuple[int, int, str, str, int]] = []
        self.order = itertools.count()
        self.msg_ids = itertools.count(1)
        self.next_send_ns: float | None = None
        self.ws: WebSocket | None = None
        self.receiver: gevent.Greenlet | None = None
        self.joined = Event()
        self.wake = Event()
        self.stopping = False
        self.loss = self.stats.ledger(self.codec.name)
        self.series = self.stats.series
        self.ack_name = locust_row("ack", self.codec.name)  # the Locust request name
        codec = self.codec.name
        self.ack_tally = self.stats.tally("ack", codec)
        self.ack_from_send_tally = self.stats.tally("ack_from_send", codec)
        self.deliver_tally = self.stats.tally("deliver", codec)
        self.stats.counts["users"] += 1

    def on_stop(self) -> None:
        self.stopping = True
        self._count_backlog(backlog_until(time.perf_counter_ns(), RUN.stopping_ns))
        ws, receiver = self.ws, self.receiver
        self.ws = None
        if ws is not None:
            ws.close(timeout_s=1.0)
        if receiver is not None:
            receiver.kill(block=True, timeout=2.0)

    @task
    def chat(self) -> None:
        """Connect, join, and send on schedule until the connection is lost."""
        if self._connect():
            self._run_schedule()

    # -- connection --------------------------------------------------------------------

    def _ws_url(self) -> str:
        base = (self.host or "").rstrip("/")
        return "ws" + base.removeprefix("http") + "/api/v1/ws"

    def _token(self) -> str | None:
        basic = base64.b64encode(f"{self.login}:{PASSWORD}".encode()).decode()
        resp = self.client.get(
            "/api/v1/token", headers={"Authorization": f"Basic {basic}"}, name="/api/v1/token"
        )
        if resp.status_code != 200:
            return None
        return str(resp.json()["token"])

    def _connect(self) -> bool:
        token = self._token()
        if token is None:
            self._count_error("connect", 0.0)
            return False
        url = self._ws_url()
        try:
            ws = connect(
                url,
                subprotocols=[self.codec.subprotocol],
                headers={"Authorization": f"Bearer {token}"},
                timeout_s=10.0,
                ssl_context=_tls_context() if url.startswith("wss://") else None,
            )
        except (OSError, HandshakeError, ValueError):
            self._count_error("connect", 0.0)
            return False
        self.ws = ws
        self.stats.counts["connects"] += 1
        self.joined.clear()
        self._start_receiving(ws, url)
        since = self.loss.last_seq(self.login, self.room) or None
        self._transmit_frame(self.codec.encode(Join(room=self.room, since_seq=since)))
        if not self.joined.wait(timeout=10.0) or self.ws is None:
            self._count_error("join", 0.0)
            self._drop(ws)
            return False
        return True

    def _drop(self, ws: WebSocket) -> None:
        """The connection ``ws`` is gone (or given up): wake the sender to reconnect."""
        if self.ws is ws:
            self.ws = None
            self.stats.counts["disconnects"] += 1
            if not self.stopping:
                self._count_error("closed", 0.0)
            self.wake.set()
        gevent.spawn(ws.close)

    def _transmit_frame(self, frame: bytes) -> None:
        ws = self.ws
        if ws is None:
            return
        try:
            ws.send(frame, self.codec.text)
        except ConnectionClosed:
            self._drop(ws)

    # -- sending -----------------------------------------------------------------------

    def _run_schedule(self) -> None:
        """The sender: new sends at their intended times, retries and ack timeouts."""
        now = time.perf_counter_ns()
        if self.next_send_ns is None:
            self.next_send_ns = now if self.gaps is None else now + self._gap_ns()
        while self.ws is not None:
            now = time.perf_counter_ns()
            self._fire_timers(now)
            sent = 0
            while self.next_send_ns <= now and self.ws is not None and sent < _CATCH_UP_BATCH:
                self._send_new(now)
                sent += 1
            if sent == _CATCH_UP_BATCH:  # still behind: let the other greenlets run first
                gevent.sleep(0)
                continue
            due = self.next_send_ns
            if self.timers:
                due = min(due, self.timers[0][0])
            self._wait(max(due - now, 0) / 1e9 if due != float("inf") else None)

    def _wait(self, delay_s: float | None) -> None:
        """Until ``delay_s`` has passed or ``wake`` is set. A bare libev timer sets the
        event: cheaper than ``Event.wait(timeout)``, which makes a ``Timeout`` each time."""
        if delay_s is None:
            self.wake.wait()
        else:
            timer = get_hub().loop.timer(delay_s)
            timer.start(self.wake.set)
            try:
                self.wake.wait()
            finally:
                timer.stop()
        self.wake.clear()

    def _gap_ns(self) -> int:
        assert self.gaps is not None
        return int(next(self.gaps) * 1e9)

    def _send_new(self, now: int) -> None:
        assert self.next_send_ns is not None
        intended = int(self.next_send_ns)
        self.stats.record_lag(self.codec.name, (now - intended) // 1000)
        self.stats.counts["sends_intended"] += 1
        self.stats.counts["sends_sent"] += 1
        cid = f"{RUN.tag}.{self.n}.{next(self.msg_ids)}"
        msg = Send(
            client_msg_id=cid, room=self.room, body=self.body, sent_at_us=time.time_ns() // 1000
        )
        pending = self.pending[cid] = _Pending(cid, self.codec.encode(msg), intended, now)
        self.series.add("sent", now)
        self.policy.on_send(1, now / 1e9)
        self.loss.record_sent(cid)
        if self.gaps is None:
            self.next_send_ns = float("inf")  # closed loop: the answer schedules the next
        else:
            self.next_send_ns = intended + self._gap_ns()
        self._attempt(pending, now)

    def _attempt(self, pending: _Pending, now: int) -> None:
        pending.waiting = True
        self.series.add("attempts", now)
        deadline = now + self.ack_timeout_ns
        heapq.heappush(
            self.timers, (deadline, next(self.order), "timeout", pending.cid, pending.attempt)
        )
        self._transmit_frame(pending.frame)

    def _fire_timers(self, now: int) -> None:
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, kind, cid, attempt = heapq.heappop(timers)
            pending = self.pending.get(cid)
            if pending is None or pending.attempt != attempt:
                continue
            if kind == "timeout" and pending.waiting:
                self.series.add("timeouts", now)
                self._send_failed("timeout", (now - pending.intended_ns) / 1e6)
                self._attempt_failed(pending, "timeout", 0.0, now)
            elif kind == "retry" and not pending.waiting:
                pending.attempt += 1
                self.policy.on_send(pending.attempt, now / 1e9)
                self.loss.record_sent(cid)
                self._attempt(pending, now)

    def _attempt_failed(
        self, pending: _Pending, outcome: str, retry_after_s: float, now: int
    ) -> None:
        pending.waiting = False
        decision = self.policy.decide(
            outcome, pending.attempt, now / 1e9, self.rng, retry_after_s, pending.previous_delay_s
        )
        if decision.retry:
            pending.previous_delay_s = decision.delay_s
            when = now + int(decision.delay_s * 1e9)
            heapq.heappush(
                self.timers, (when, next(self.order), "retry", pending.cid, pending.attempt)
            )
            self.wake.set()
            return
        del self.pending[pending.cid]
        self.loss.record_failed(pending.cid)
        self.stats.outcomes[outcome] += 1
        self._resolved(now)

    def _resolved(self, now: int) -> None:
        """A message is done (acked or given up): a closed loop schedules the next."""
        if self.gaps is None and not self.pending:
            self.next_send_ns = now + self.think_ns
            self.wake.set()

    def _count_backlog(self, until_ns: int) -> None:
        """Sends whose intended time came before ``until_ns`` (when the stop began) but
        that never went out: a lagging sender."""
        if self.gaps is None or self.next_send_ns is None:
            return
        self.stats.counts["sends_intended"] += count_backlog(self.next_send_ns, until_ns, self.gaps)

    # -- receiving ---------------------------------------------------------------------

    def _start_receiving(self, ws: WebSocket, url: str) -> None:
        """Plain TCP: a hub callback reads whenever the socket is readable (no greenlet
        switch per read). TLS: a receiver greenlet (a TLS record may need more reads)."""
        if url.startswith("wss://"):
            self.receiver = gevent.spawn(self._receive, ws)
            return
        watcher = get_hub().loop.io(ws.sock.fileno(), 1)  # 1: readable
        ws.read_elsewhere, ws.defer, ws.on_shutdown = True, gevent.spawn, watcher.stop
        watcher.start(self._on_readable, ws)

    def _on_readable(self, ws: WebSocket) -> None:
        """In the hub, the socket readable: dispatch what one read brought. Nothing here
        blocks (handlers only count, set events and spawn)."""
        try:
            batch = ws.read_ready()
        except ConnectionClosed:
            self._drop(ws)
            return
        now_us = time.time_ns() // 1000  # their receipt time
        for frame in batch:
            self._dispatch(frame, now_us)
        if ws.closed is not None:
            self._drop(ws)

    def _receive(self, ws: WebSocket) -> None:
        """The receiver greenlet: read batches of messages until the connection closes."""
        try:
            while True:
                batch = ws.recv_batch()  # every message one read brought, text or binary
                now_us = time.time_ns() // 1000  # their receipt time
                for frame in batch:
                    self._dispatch(frame, now_us)
        except ConnectionClosed:
            pass
        finally:
            self._drop(ws)

    def _dispatch(self, frame: bytes, now_us: int) -> None:
        """Decode one message and hand it to its handler."""
        try:
            msg = self.codec.decode(frame)
        except DecodeError:
            self._count_error("undecodable", 0.0)
            return
        if type(msg) is Deliver:  # nine in ten of what arrives, in rooms of ten
            self.deliver_tally.add(now_us - msg.sent_at_us, len(frame))
            self.loss.record_delivered(self.login, msg.room, msg.seq)
        elif isinstance(msg, Ack):
            self._on_ack(msg, len(frame))
        elif isinstance(msg, Error):
            self._on_error(msg)
        elif isinstance(msg, HistoryPage):
            for item in msg.messages:
                self.loss.record_delivered(self.login, item.room, item.seq)
        elif isinstance(msg, Joined):
            self.joined.set()

    def _on_ack(self, msg: Ack, size: int) -> None:
        # The server skips the sender when it fans a message out: the Ack is our copy.
        self.loss.record_own(self.login, msg.room, msg.seq)
        now = time.perf_counter_ns()
        pending = self.pending.pop(msg.client_msg_id, None)
        if pending is None:
            self.stats.counts["late_answers"] += 1
            self.series.add("late_answers", now)
            return
        # in time while an attempt waits; while backing off its last attempt timed out
        self.series.add("goodput" if pending.waiting else "acked_after_timeout", now)
        self.ack_tally.add((now - pending.intended_ns) // 1000, size)
        self.ack_from_send_tally.add((now - pending.sent_ns) // 1000)
        self.loss.record_acked(msg.room, msg.seq, msg.client_msg_id)
        self.stats.outcomes["acked"] += 1
        self.policy.decide("acked", pending.attempt, now / 1e9, self.rng)
        self._resolved(now)

    def _on_error(self, msg: Error) -> None:
        now = time.perf_counter_ns()
        pending = self.pending.get(msg.client_msg_id) if msg.client_msg_id else None
        if pending is None or not pending.waiting:
            self._count_error(msg.code, 0.0)
            if msg.client_msg_id:
                self.stats.counts["late_answers"] += 1
                self.series.add("late_answers", now)
            return
        self.series.add_error(msg.code, now)
        self._send_failed(msg.code, (now - pending.intended_ns) / 1e6)
        outcome = msg.code if msg.code in ERROR_CODES else INTERNAL
        self._attempt_failed(pending, outcome, msg.retry_after_ms / 1000.0, now)

    # -- reporting ---------------------------------------------------------------------

    def _count_error(self, code: str, response_time_ms: float) -> None:
        """A failure not tied to a send attempt: Locust's ``error {code}``."""
        self.stats.errors[code] += 1
        self._event(f"error {code}", response_time_ms, 0, ChatError(code))

    def _send_failed(self, code: str, since_intended_ms: float) -> None:
        """A send attempt answered by an Error frame, or timed out: a ``send→ack`` failure."""
        self.stats.errors[code] += 1
        self._event(self.ack_name, since_intended_ms, 0, ChatError(code))

    def _event(
        self, name: str, response_time_ms: float, size: int, exc: Exception | None = None
    ) -> None:
        self.environment.events.request.fire(
            request_type="ws",
            name=name,
            response_time=response_time_ms,
            response_length=size,
            exception=exc,
            context={},
        )


class ScenarioUser(ChatUser):
    """The chat user of ``bench/locustfile.py``: codec from ``--chat-codec``.

    ``weight = 9``: beside ``bench/locust_history.py``'s readers (weight 1), nine users
    in ten are chat users.
    """

    weight = 9
