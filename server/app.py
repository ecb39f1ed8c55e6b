"""The reference chat server: wiring, serving, and graceful shutdown.

:class:`ChatServer` builds every part from the scenario (policies from
``chatcap.policy``, the store pool, the writer, the hub, the router) and serves HTTP
and WebSocket on one port with ``websockets``.

Shutdown (SIGTERM / SIGINT, or :meth:`ChatServer.shutdown`), within
``server.drain_timeout_s``:

1. ``/readyz`` answers 503 and the listening socket closes (no new connections);
2. the writer stops taking sends (``unavailable``) and commits what is queued — every
   queued send gets its Ack (or its error);
3. every connection is closed with 1001 (going away); sessions held back by read
   throttling (:mod:`server.session`) stop waiting first, so their peers' closing
   frames are read at once;
4. the store pool closes; the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from chatcap import wiring
from chatcap.policy import KeyedLimiter, make_limiter
from chatcap.policy.breaker import Transition
from chatcap.protocol import SUBPROTOCOLS
from chatcap.scenario import Scenario, ServerConfig, TlsConfig
from server.auth import Authenticator, TokenIssuer, UserStore, load_secret
from server.clock import now_s
from server.dedup import Deduper
from server.errors import StoreReadError
from server.faults import burn_cpu
from server.http import build_router
from server.hub import Client, Hub
from server.logs import event
from server.metrics import BREAKER_STATE_VALUES, Metrics
from server.session import SendPath, Session
from server.store import StoreConnection, StoreError
from server.storepool import PoolTimeout
from server.writer import start_write_path

GOING_AWAY = 1001


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one (each connection is a socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def websocket_options(cfg: ServerConfig) -> dict[str, Any]:
    """The ``serve(...)`` settings that shape the WebSocket protocol on the chat port:
    frame size, compression, keepalive pings, opening and closing deadlines.

    The conformance echo endpoint (:mod:`server.echo`) serves with the same dict, so an
    Autobahn run against it checks the settings the chat server really uses. Keepalive
    pings come from ``server.ping_interval_s`` and ``server.ping_timeout_s`` (0 is None
    to websockets: no pings, no pong deadline); the close deadline is the library's
    default, named here so both endpoints state it.
    """
    return {
        "compression": "deflate" if cfg.compression else None,
        "max_size": cfg.max_message_bytes,
        "open_timeout": cfg.open_timeout_s,
        "ping_interval": cfg.ping_interval_s or None,
        "ping_timeout": cfg.ping_timeout_s or None,
        "close_timeout": 10.0,
        "logger": logging.getLogger("websockets.server"),
    }


def forget_handshake_headers(conn: ServerConnection) -> None:
    """Drop the opening handshake's headers once the session starts.

    websockets keeps ``request`` and ``response`` for the connection's whole life; their
    headers (the bearer token among them) are read by nothing after the handshake and
    were about 5 KiB of the ~18 KiB an idle connection cost: 10,000 idle connections
    went over the 200 MiB budget (tests/reliability/test_floods.py).
    """
    if conn.request is not None:
        conn.request.headers.clear()
    if conn.response is not None:
        conn.response.headers.clear()


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The TLS context of ``server.tls`` (None when off); a bad file is a ValueError
    naming the key and the cause."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if not Path(path).is_file():
            raise ValueError(f"server.tls.{key} = {path!r}: no such file")
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"server.tls: cannot load cert_file {tls.cert_file!r} with key_file "
            f"{tls.key_file!r}: {exc}"
        ) from None
    return context


def close_codes(conn: ServerConnection) -> dict[str, Any]:
    """What the closing handshake said, for the ``ws.close`` line: the code the server
    sent when it closed first (1009 for an over-size frame, 1008 for a slow consumer),
    else the client's; 1006 only when no close frame went either way."""
    sent, rcvd = conn.protocol.close_sent, conn.protocol.close_rcvd
    if sent is not None and (rcvd is None or conn.protocol.close_rcvd_then_sent is False):
        return {"code": sent.code, "by": "server"}
    if rcvd is not None:
        return {"code": rcvd.code, "by": "client"}
    return {"code": 1006, "by": "none"}


class ChatServer:
    """One server process. ``await start()``, then ``await shutdown()``."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        db_path: str | None = None,
        users_file: str | None = None,
        env: Mapping[str, str] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        env = os.environ if env is None else env
        cfg = scenario.server
        self.scenario = scenario
        self.host, self.port = host, port
        self.db_path = db_path or cfg.store.path
        self.log = log or logging.getLogger("chatcap.server")
        self.metrics = Metrics(stages=cfg.stage_metrics)
        secret, self.secret_source = load_secret(env)
        self.tokens = TokenIssuer(secret, ttl_s=cfg.token_ttl_s)
        users = UserStore(users_file) if cfg.auth == "users" and users_file else None
        if cfg.auth == "users" and users is None:
            raise ValueError("server.auth = 'users' needs --users FILE (see `adduser`)")
        self.authenticator = Authenticator(cfg.auth, users)
        self.admin_token = env.get("CHATCAP_ADMIN_TOKEN", "")
        self.hub = Hub(cfg.outbound_buffer_max_bytes, self.metrics, self.log)
        self.send_limiter = wiring.keyed_limiter(cfg.rate_limit)
        self.handshake_limiter = KeyedLimiter(
            lambda: make_limiter(
                "token_bucket",
                rate_per_s=cfg.handshake_rate_per_s,
                burst=cfg.handshake_burst,
                window_s=1.0,
            )
        )
        self.deduper = Deduper()
        self.ssl_context = server_ssl_context(cfg.tls)
        self.router = build_router(self)
        self.draining = False
        # set when connections are being closed: throttled sessions stop holding frames
        self.going_away = asyncio.Event()
        self.room_last_seq: dict[str, int] = {}
        self._timeouts_seen = 0
        self.burn_cpu = burn_cpu
        # the one clock of every latency, deadline, breaker and fault timing (server.clock)
        self.clock = now_s
        self._server: Server | None = None
        self._stopped = asyncio.Event()

    # ---------------------------------------------------------------- start

    async def start(self) -> None:
        raise_nofile_limit()
        cfg = self.scenario.server
        self.loop = asyncio.get_running_loop()
        self.metrics.watch_gc()  # the collector's pauses (chatcap_gc_pause_seconds)
        Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        parts = await start_write_path(
            self.scenario,
            self._connect,
            clock=self.clock,
            log=self.log,
            breaker_listeners=(self.metrics.breaker_listener, self._log_transition),
            on_batch=self._on_batch,
            burst=self.hub,  # one socket write per connection per committed batch
        )
        self.faults, self.breaker, self.pool, self.writer = (
            parts.faults,
            parts.breaker,
            parts.pool,
            parts.writer,
        )
        self.send_path = SendPath(
            config=cfg,
            hub=self.hub,
            writer=self.writer,
            limiter=self.send_limiter,
            deduper=self.deduper,
            metrics=self.metrics,
            faults=self.faults,
            reads=self,
            going_away=self.going_away,
            log=self.log,
            room_last_seq=self.room_last_seq,
            clock=self.clock,
            burn_cpu=self.burn_cpu,
        )
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self.router.process_request,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            ssl=self.ssl_context,
            **websocket_options(cfg),  # origins: checked by the router (server.http)
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        event(
            self.log,
            "server.started",
            url=self.ws_url,
            codecs=",".join(SUBPROTOCOLS),
            store=self.db_path,
            auth=cfg.auth,
            secret=self.secret_source,
            scenario=self.scenario.name,
        )

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT/api/v1/ws`` (``wss://`` with ``server.tls``)."""
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}/api/v1/ws"

    def _connect(self) -> StoreConnection:
        return StoreConnection(self.db_path, self.scenario.server.store.synchronous)

    def _log_transition(self, t: Transition) -> None:
        event(
            self.log,
            "breaker.transition",
            logging.WARNING,
            from_state=t.from_state.value,
            to_state=t.to_state.value,
            reason=t.reason,
        )

    # ---------------------------------------------------------------- services

    def wall_time(self) -> float:
        return time.time()

    async def read_store(self, op: str, *args: Any) -> Any:
        """Run a read (``history``, ``last_seq``) on a pooled connection, with a deadline."""
        try:
            async with asyncio.timeout(self.scenario.server.store.call_timeout_s):
                async with self.pool.connection() as conn:
                    return await self.pool.run(conn, getattr(conn, op), *args)
        except PoolTimeout:
            raise StoreReadError("no store connection within the acquire timeout") from None
        except StoreError as exc:
            raise StoreReadError(f"store error: {exc}") from None
        except TimeoutError:
            raise StoreReadError("store call deadline exceeded") from None

    async def last_seq(self, room: str) -> int:
        """The room's highest seq: from memory once known (this process writes every
        message of its rooms), from the store the first time."""
        known = self.room_last_seq.get(room)
        if known is None:
            known = await self.read_store("last_seq", room)
            known = max(known, self.room_last_seq.get(room, 0))  # a commit may have landed
            self.room_last_seq[room] = known
        return known

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.store_commit_latency.observe(seconds)

    def refresh_gauges(self) -> None:
        stats = self.pool.stats()
        m = self.metrics
        m.flush_tallies()
        m.pool_in_use.set(stats.in_use)
        m.pool_idle.set(stats.idle)
        m.pool_waiting.set(stats.waiting)
        m.write_queue_depth.set(self.writer.queue_depth)
        # the pool counts timeouts itself; the Prometheus counter catches up on each scrape
        m.pool_acquire_timeouts.inc(stats.acquire_timeouts - self._timeouts_seen)
        self._timeouts_seen = stats.acquire_timeouts
        if self.breaker is not None:
            m.breaker_state.set(BREAKER_STATE_VALUES[self.breaker.state])
        for name, cm in m.by_codec.items():
            cm.connections.set(sum(1 for c in self.hub.clients if c.codec.name == name))

    # ---------------------------------------------------------------- sessions

    async def _handle(self, conn: ServerConnection) -> None:
        codec = SUBPROTOCOLS[conn.subprotocol] if conn.subprotocol else None
        if codec is None:  # the guard checked the offer; this is a client bug
            await conn.close(1002, "no subprotocol negotiated")
            return
        address = conn.remote_address
        client = Client(conn, conn.username, codec, str(address[0]) if address else "unknown")
        forget_handshake_headers(conn)
        if self.draining:
            await conn.close(GOING_AWAY, "server shutting down")
            return
        self.hub.add(client)
        self.metrics.by_codec[codec.name].connections_opened.inc()
        event(self.log, "ws.open", user=client.user, codec=codec.name, ip=client.ip)
        try:
            await Session(self.send_path, client).run()
        except ConnectionClosed:
            pass
        finally:
            self.hub.remove(client)
            event(self.log, "ws.close", user=client.user, **close_codes(conn))

    # ---------------------------------------------------------------- shutdown

    async def shutdown(self) -> None:
        """Drain and stop (idempotent); see the module docstring for the order."""
        if self.draining:
            await self._stopped.wait()
            return
        self.draining = True
        cfg = self.scenario.server
        started = self.clock()
        event(
            self.log,
            "server.draining",
            connections=len(self.hub.clients),
            queued=self.writer.queue_depth,
        )
        assert self._server is not None
        self._server.close(close_connections=False)
        await self.writer.drain(started + cfg.drain_timeout_s * 0.8)
        left = max(0.1, started + cfg.drain_timeout_s - self.clock())
        self.going_away.set()
        for client in list(self.hub.clients):
            if client.dropped and client.conn.transport is not None:
                client.conn.transport.abort()  # a slow consumer would not read our 1001
        closes = [
            c.conn.close(GOING_AWAY, "server shutting down")
            for c in list(self.hub.clients)
            if not c.dropped
        ]
        try:
            async with asyncio.timeout(left):
                await asyncio.gather(*closes, return_exceptions=True)
                await self._server.wait_closed()
        except TimeoutError:
            # A peer that never answers our close (it stopped reading) would otherwise
            # hold the process for websockets' close_timeout: the deadline is the limit.
            unclosed = [c for c in self.hub.clients if c.conn.transport is not None]
            event(self.log, "server.drain_timeout", logging.WARNING, aborted=len(unclosed))
            for client in unclosed:
                client.conn.transport.abort()
        await self.pool.close()
        self.metrics.unwatch_gc()
        event(self.log, "server.stopped", seconds=round(self.clock() - started, 3))
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
